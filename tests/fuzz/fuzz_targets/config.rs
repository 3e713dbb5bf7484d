//! The config file parser (`Config::parse`) on fuzzer text. Never a panic; a config it accepts
//! has storage options the log accepts, and `edgecap config check` prints it (`to_toml`) as a
//! config that parses back to the same text.
#![no_main]

use edgecap::config::Config;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    if !reads_only_harmless_files(text) {
        return Corpus::Reject;
    }
    match Config::parse(text) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(config) => check(&config),
    }
    Corpus::Keep
});

fn check(config: &Config) {
    let options = config.storage.log_options(config.ingest.max_event_bytes);
    if let Err(e) = options.validate() {
        panic!("Config::parse accepted storage options the log refuses: {e}");
    }
    let rendered = config.to_toml();
    let again = Config::parse(&rendered).unwrap_or_else(|e| {
        panic!("`config check` printed a config that does not parse: {e}\n{rendered}")
    });
    assert_eq!(
        again.to_toml(),
        rendered,
        "`config check` output is not stable"
    );
}

/// `Config::parse` reads `upstream.password_file` and the `upstream.tls` files. A path the
/// fuzzer made up could name a FIFO or a terminal (a hang) or a device without end; only paths
/// that cannot exist (`/nonexistent/...`) or read as empty (`/dev/null`) are let through, so the
/// reads and their errors are still fuzzed. (A `tls` table without `ca` reads the system CA
/// bundle, which is bounded.)
fn reads_only_harmless_files(text: &str) -> bool {
    // Text that is not TOML fails Config::parse before any file is read.
    let Ok(doc) = text.parse::<toml::Table>() else {
        return true;
    };
    let Some(upstream) = doc.get("upstream").and_then(toml::Value::as_table) else {
        return true;
    };
    // A value that is not a string is a type error: never read either.
    let harmless = |value: Option<&toml::Value>| match value {
        Some(toml::Value::String(path)) => path == "/dev/null" || path.starts_with("/nonexistent/"),
        _ => true,
    };
    let tls_harmless = match upstream.get("tls") {
        Some(toml::Value::Table(tls)) => {
            ["ca", "cert", "key"].iter().all(|k| harmless(tls.get(*k)))
        }
        _ => true,
    };
    harmless(upstream.get("password_file")) && tls_harmless
}
