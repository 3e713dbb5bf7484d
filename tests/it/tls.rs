//! MQTT over TLS: the real binary against a real mosquitto with a TLS listener that requires a
//! client certificate, on free loopback ports. The certificates (a CA, the broker's for
//! 127.0.0.1, a client's, and an unrelated CA) are made fresh by each test with rcgen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use serde_json::Value as Json;

/// PEM files of a small PKI, written under `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed neither certificate.
    other_ca: PathBuf,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn new_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

fn new_leaf(
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
    ca: &(rcgen::Certificate, rcgen::KeyPair),
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = new_ca("edgecap test CA");
        let (server_cert, server_key) = new_leaf(
            &["127.0.0.1", "localhost"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
        );
        let (client_cert, client_key) =
            new_leaf(&["dev1"], rcgen::ExtendedKeyUsagePurpose::ClientAuth, &ca);
        let other = new_ca("some other CA");
        Pki {
            ca: write(&dir, "ca.pem", &ca.0.pem()),
            server_cert: write(&dir, "server.pem", &server_cert),
            server_key: write(&dir, "server.key", &server_key),
            client_cert: write(&dir, "client.pem", &client_cert),
            client_key: write(&dir, "client.key", &client_key),
            other_ca: write(&dir, "other-ca.pem", &other.0.pem()),
        }
    }

    /// A broker with a plain listener (for the test's subscriber) and a TLS one that requires
    /// a client certificate from our CA; returns it with the TLS port.
    fn broker(&self, root: &Path) -> (Broker, u16) {
        let tls_port = free_port();
        let extra = format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            self.ca.display(),
            self.server_cert.display(),
            self.server_key.display()
        );
        (Broker::start_with(root, &extra, &[tls_port]), tls_port)
    }

    fn upstream(&self, port: u16, ca: &Path) -> String {
        upstream_config(port).replace(
            "[retry]",
            &format!(
                "tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}\n[retry]",
                ca.display(),
                self.client_cert.display(),
                self.client_key.display()
            ),
        )
    }
}

#[test]
fn events_reach_a_tls_broker_that_requires_a_client_certificate() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path());
    let (broker, tls_port) = pki.broker(root.path());
    let sub = Subscriber::start(broker.port, "edgecap/dev1/events/#");
    let daemon = Daemon::start(root.path(), &pki.upstream(tls_port, &pki.ca));
    let lines: Vec<String> = (0..2000).map(|i| event_line("temp0", i)).collect();
    let acked = acked_seqs(&request(&daemon.socket, &lines));
    wait_until("2000 events over TLS", Duration::from_secs(30), || {
        let seqs = sub.seqs();
        acked.iter().all(|s| seqs.contains(s))
    });
    let status = daemon.status();
    assert_eq!(status["connected"], Json::Bool(true), "{status}");
    assert_eq!(status["breaker"], "closed", "{status}");
    // In order, as over plain TCP.
    let seqs: Vec<u64> = sub
        .seqs()
        .into_iter()
        .filter(|s| acked.contains(s))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order");
}

#[test]
fn a_broker_certificate_from_another_ca_is_refused_and_capture_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path());
    let (_broker, tls_port) = pki.broker(root.path());
    let daemon = Daemon::start(root.path(), &pki.upstream(tls_port, &pki.other_ca));
    let acked = acked_seqs(&request(&daemon.socket, &[event_line("temp0", 1.5)]));
    assert_eq!(acked.len(), 1);
    wait_until("the breaker opens", Duration::from_secs(20), || {
        daemon.status()["breaker"] == "open"
    });
    let status = daemon.status();
    assert_eq!(status["connected"], Json::Bool(false), "{status}");
    assert_eq!(status["forwarded_seq"].as_u64(), Some(0), "{status}");
    let error = status["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(error.contains("certificate"), "last_error: {status}");
    // Stored all the same.
    assert!(daemon.dump().iter().any(|e| e["source"] == "temp0"));
}

#[test]
fn config_check_names_the_tls_key_that_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path());
    let config = |tls: &str| {
        let path = root.path().join("edgecap.toml");
        std::fs::write(
            &path,
            format!(
                "device_id = \"dev1\"\n[storage]\ndir = \"{}\"\n[upstream]\nhost = \"127.0.0.1\"\ntls = {tls}\n",
                root.path().join("data").display()
            ),
        )
        .unwrap();
        let out = edgecap()
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let ca = pki.ca.display();
    let cert = pki.client_cert.display();
    let key = pki.client_key.display();
    let missing = root.path().join("missing.pem");
    let missing = missing.display();

    // Valid, and the port defaults to MQTT-over-TLS's 8883.
    let (code, out) = config(&format!(
        "{{ ca = \"{ca}\", cert = \"{cert}\", key = \"{key}\" }}"
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("8883"), "{out}");

    let cases = [
        (format!("{{ ca = \"{missing}\" }}"), "upstream.tls.ca"),
        (format!("{{ ca = \"{key}\" }}"), "upstream.tls.ca"),
        (
            format!("{{ ca = \"{ca}\", cert = \"{cert}\" }}"),
            "upstream.tls.key",
        ),
        (
            format!("{{ ca = \"{ca}\", key = \"{key}\" }}"),
            "upstream.tls.cert",
        ),
        (
            format!("{{ ca = \"{ca}\", cert = \"{ca}\", key = \"{key}\" }}"),
            "upstream.tls.key",
        ),
        (
            format!("{{ ca = \"{ca}\", cert = \"{cert}\", key = \"{cert}\" }}"),
            "upstream.tls.key",
        ),
        (
            format!("{{ ca = \"{ca}\", cipher = \"x\" }}"),
            "upstream.tls.cipher",
        ),
    ];
    for (tls, key_named) in cases {
        let (code, out) = config(&tls);
        assert_eq!(code, Some(2), "tls = {tls}: {out}");
        assert!(out.contains(key_named), "tls = {tls}: {out}");
    }
}
