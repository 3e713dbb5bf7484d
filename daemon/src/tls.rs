//! TLS to the upstream broker (`[upstream] tls = { ca, cert, key }`).
//!
//! rustls with the *ring* provider, handed to rumqttc as a ready `ClientConfig`
//! (`TlsConfiguration::Rustls`), so rumqttc's own PEM handling and its process-wide provider
//! lookup are never used. Why ring and not aws-lc-rs (rustls' default): aws-lc needs cmake and
//! a C toolchain per target and builds slowly; ring cross-builds with the same gcc/zig that
//! already link the Pi binaries, and its ARM assembly picks NEON paths at run time, so the
//! ARMv6 binary stays correct on a Pi Zero (cross/build.sh runs a TLS session under
//! `qemu-arm -cpu arm1176`).
//!
//! Everything is read and checked when the configuration is validated, so `edgecap config
//! check` and `edgecap run` both refuse a missing file, a file without a certificate, a key
//! that does not fit its certificate, or `cert` without `key`, naming the key in the message.
//! The files are read once at start: rotate certificates by restarting the service.
//!
//! The broker's name is checked against `upstream.host` (a DNS name or an IP address in the
//! certificate's subjectAltName). `ca` defaults to Debian's bundle of public roots, so a
//! broker with a public certificate needs only `tls = {}`.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;
use crate::limits::PEM_FILE_BYTES_MAX;

/// Debian's (and Raspberry Pi OS's) bundle of public CA certificates, from `ca-certificates`
/// (which the Debian package recommends).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Reads a PEM file whole, bounded by [`PEM_FILE_BYTES_MAX`].
fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let file =
        std::fs::File::open(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(invalid(
            key,
            format!(
                "{} is larger than {PEM_FILE_BYTES_MAX} bytes",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_pem(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, format!("{}: not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

/// A private key that any local user can read is worth a warning (not an error: the file
/// is the operator's, and a read-only image may have it so on purpose).
fn warn_if_readable_by_others(key: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(key) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(file = %key.display(), "upstream.tls.key is readable by every user; chmod 0640 and chgrp edgecap");
        }
    }
}

/// Builds the client configuration from the CA file and, for mutual TLS, the client's
/// certificate chain and private key (PEM: PKCS#8, PKCS#1 or SEC1).
pub fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certificates("upstream.tls.ca", ca)?);
    if added == 0 {
        return Err(invalid(
            "upstream.tls.ca",
            format!("{}: no usable CA certificate in it", ca.display()),
        ));
    }
    if ignored > 0 {
        tracing::warn!(file = %ca.display(), ignored, added, "upstream.tls.ca: certificates that cannot be parsed are ignored");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid("upstream.tls", e.to_string()))?
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates("upstream.tls.cert", cert)?;
            let pem = read_pem("upstream.tls.key", key)?;
            warn_if_readable_by_others(key);
            let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                invalid(
                    "upstream.tls.key",
                    format!("{}: no PEM private key in it ({e})", key.display()),
                )
            })?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                invalid(
                    "upstream.tls.key",
                    format!("{} does not fit upstream.tls.cert: {e}", key.display()),
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    //! A real TLS 1.3 handshake between our client configuration and a rustls server, in
    //! memory: these also run under qemu-user for aarch64 and armv7 (cross/test-qemu.sh); the
    //! ARMv6 binary does real TLS in cross/build.sh's smoke.

    use std::io::{Read as _, Write as _};
    use std::path::PathBuf;

    use rustls::pki_types::ServerName;

    use super::*;

    struct Pki {
        dir: tempfile::TempDir,
        ca: rcgen::Certificate,
        ca_key: rcgen::KeyPair,
    }

    impl Pki {
        fn new() -> Pki {
            // Each CA its own name: two CAs with one name would fail as a bad signature, not
            // as an unknown issuer.
            static CAS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = CAS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("test CA {n}"));
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let ca = params.self_signed(&ca_key).unwrap();
            Pki {
                dir: tempfile::tempdir().unwrap(),
                ca,
                ca_key,
            }
        }

        /// A leaf certificate and key signed by this CA, as PEM text.
        fn leaf(&self, names: &[&str]) -> (String, String) {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let params = rcgen::CertificateParams::new(names).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        fn ca_file(&self) -> PathBuf {
            self.file("ca.pem", &self.ca.pem())
        }

        /// A server for `names`, requiring a client certificate from this CA.
        fn server(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
            self.server_with(names, true)
        }

        /// A server for `names`; `client_auth`: it requires a client certificate from this CA.
        fn server_with(&self, names: &[&str], client_auth: bool) -> Arc<rustls::ServerConfig> {
            let (cert, key) = self.leaf(names);
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap();
            let builder = if client_auth {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(self.ca.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_no_client_auth()
            };
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            Arc::new(builder.with_single_cert(chain, key).unwrap())
        }
    }

    /// Moves TLS records between the two ends until both finish the handshake, or one fails.
    fn handshake(
        client: &mut rustls::Connection,
        server: &mut rustls::Connection,
    ) -> Result<(), rustls::Error> {
        fn transfer(
            from: &mut rustls::Connection,
            to: &mut rustls::Connection,
        ) -> Result<(), rustls::Error> {
            let mut bytes = Vec::new();
            while from.wants_write() {
                from.write_tls(&mut bytes).unwrap();
            }
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                to.read_tls(&mut rest).unwrap();
                to.process_new_packets()?;
            }
            Ok(())
        }
        for _ in 0..8 {
            transfer(client, server)?;
            transfer(server, client)?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish in 8 round trips");
    }

    fn connect(
        config: Arc<rustls::ClientConfig>,
        server: Arc<rustls::ServerConfig>,
        name: &str,
    ) -> (
        Result<(), rustls::Error>,
        rustls::Connection,
        rustls::Connection,
    ) {
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(config, name).unwrap().into();
        let mut server = rustls::ServerConnection::new(server).unwrap().into();
        let result = handshake(&mut client, &mut server);
        (result, client, server)
    }

    #[test]
    fn mutual_tls_handshake_with_an_ip_address_name_carries_data() {
        let pki = Pki::new();
        let (cert, key) = pki.leaf(&["dev1"]);
        let config = client_config(
            &pki.ca_file(),
            Some((&pki.file("c.pem", &cert), &pki.file("c.key", &key))),
        )
        .unwrap();
        let (result, client, server) = connect(
            config,
            pki.server(&["127.0.0.1", "broker.local"]),
            "127.0.0.1",
        );
        result.unwrap();
        assert!(server.peer_certificates().is_some_and(|c| !c.is_empty()));
        let (rustls::Connection::Client(mut client), rustls::Connection::Server(mut server)) =
            (client, server)
        else {
            unreachable!()
        };
        client.writer().write_all(b"CONNECT").unwrap();
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).unwrap();
        }
        server.read_tls(&mut &bytes[..]).unwrap();
        server.process_new_packets().unwrap();
        let mut got = [0u8; 7];
        server.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"CONNECT");
    }

    #[test]
    fn a_broker_signed_by_another_ca_or_for_another_name_is_refused() {
        let ours = Pki::new();
        let theirs = Pki::new();
        let (cert, key) = ours.leaf(&["dev1"]);
        let client = (ours.file("c.pem", &cert), ours.file("c.key", &key));
        let config = client_config(&ours.ca_file(), Some((&client.0, &client.1))).unwrap();

        // The servers ask for no client certificate, so any failure is our client refusing
        // theirs.
        let refused = |server, name| match connect(config.clone(), server, name).0 {
            Err(rustls::Error::InvalidCertificate(why)) => why,
            other => panic!("expected our client to refuse the broker, got {other:?}"),
        };
        assert_eq!(
            refused(theirs.server_with(&["127.0.0.1"], false), "127.0.0.1"),
            rustls::CertificateError::UnknownIssuer
        );
        assert!(matches!(
            refused(ours.server_with(&["broker.local"], false), "10.0.0.1"),
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        ));
        // And a broker we trust is accepted by the same client.
        connect(
            config.clone(),
            ours.server_with(&["10.0.0.1"], false),
            "10.0.0.1",
        )
        .0
        .unwrap();
    }

    #[test]
    fn without_a_client_certificate_the_broker_refuses_us() {
        let pki = Pki::new();
        let config = client_config(&pki.ca_file(), None).unwrap();
        let (result, _, _) = connect(config, pki.server(&["127.0.0.1"]), "127.0.0.1");
        assert!(result.is_err());
    }

    #[test]
    fn bad_files_name_their_key() {
        let pki = Pki::new();
        let (cert, key) = pki.leaf(&["dev1"]);
        let ca = pki.ca_file();
        let cert = pki.file("c.pem", &cert);
        let key = pki.file("c.key", &key);
        let empty = pki.file("empty.pem", "");
        let missing = pki.dir.path().join("missing.pem");
        type Case<'a> = (&'a Path, Option<(&'a Path, &'a Path)>, &'a str);
        let cases: [Case; 5] = [
            (&missing, None, "upstream.tls.ca"),
            (&empty, None, "upstream.tls.ca"),
            (&key, None, "upstream.tls.ca"),
            (&ca, Some((&empty, &key)), "upstream.tls.cert"),
            (&ca, Some((&cert, &cert)), "upstream.tls.key"),
        ];
        for (ca, client, key_named) in cases {
            let error = client_config(ca, client).unwrap_err().to_string();
            assert!(error.contains(key_named), "{key_named}: {error}");
        }
    }
}
