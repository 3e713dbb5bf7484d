//! Disk full (issue 10, item 4): the data directory on a small loop-mounted ext4 whose size is
//! below `max_disk`. Under `drop_oldest` the daemon keeps capturing by dropping the oldest
//! segment when the file system (not the budget) is full; under `reject` it refuses with a
//! clear error, loses nothing acked, and resumes once space returns. Needs root and loop
//! devices; skipped with a printed reason otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// A small ext4 image mounted on a loop device; unmounted (and the loop device freed) on drop,
/// also when the test fails.
struct LoopExt4 {
    mount: PathBuf,
}

impl LoopExt4 {
    fn new(root: &Path, mib: u64) -> Option<LoopExt4> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: disk-full tests need root (loop mounts)");
            return None;
        }
        let image = root.join("fs.img");
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(mib << 20).unwrap();
        let mkfs = output_within(
            Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image),
            Duration::from_secs(60),
        );
        if !mkfs.status.success() {
            eprintln!(
                "SKIPPED: mkfs.ext4 failed: {}",
                String::from_utf8_lossy(&mkfs.stderr)
            );
            return None;
        }
        let mount = root.join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        let mounted = output_within(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mount),
            Duration::from_secs(60),
        );
        if !mounted.status.success() {
            eprintln!(
                "SKIPPED: cannot loop-mount an ext4 image here: {}",
                String::from_utf8_lossy(&mounted.stderr)
            );
            return None;
        }
        Some(LoopExt4 { mount })
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let _ = output_within(
            Command::new("umount").arg("-l").arg(&self.mount),
            Duration::from_secs(60),
        );
    }
}

/// A daemon whose data directory is `dir` (on the small file system).
fn daemon_on(root: &Path, dir: &Path, on_full: &str) -> Daemon {
    let config = root.join("edgecap.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"dev1\"\n[storage]\ndir = \"{}\"\nsegment_size = \"1MiB\"\nmax_disk = \"64MiB\"\non_full = \"{on_full}\"\n[ingest]\nsocket = \"{}\"\n",
            dir.display(),
            root.join("ingest.sock").display()
        ),
    )
    .unwrap();
    Daemon::with_config(root, dir, &config)
}

fn batch(n: usize, tag: &str) -> Vec<String> {
    let payload = "x".repeat(900);
    (0..n)
        .map(|i| event_line("fill", format!("{tag}{i}{payload}")))
        .collect()
}

#[test]
fn a_full_file_system_under_drop_oldest_drops_the_oldest_and_keeps_capturing() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = LoopExt4::new(root.path(), 12) else {
        return;
    };
    let dir = fs.mount.join("data");
    let daemon = daemon_on(root.path(), &dir, "drop_oldest");
    // 30,000 events of about 1 KiB: about 30 MiB through a 12 MiB file system.
    let mut acked = Vec::new();
    for round in 0..30 {
        let replies = request(&daemon.socket, &batch(1000, &format!("r{round}-")));
        for reply in &replies {
            assert_eq!(reply["ok"], true, "refused under drop_oldest: {reply}");
        }
        acked.extend(acked_seqs(&replies));
    }
    let status = daemon.status();
    assert!(status["dropped_events"].as_u64() > Some(0), "{status}");
    assert_eq!(status["healthy"], true, "{status}");
    // The newest events are all there, and the drops are recorded.
    let stored: std::collections::BTreeSet<u64> = daemon
        .dump()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    let newest = &acked[acked.len() - 1000..];
    assert!(
        newest.iter().all(|s| stored.contains(s)),
        "recent acked events lost"
    );
    let drops = daemon
        .dump()
        .iter()
        .filter(|e| e["kind"] == "system" && e["value"]["event"] == "drop")
        .count();
    assert!(drops > 0, "no drop event recorded");
}

#[test]
fn a_full_file_system_under_reject_refuses_clearly_and_resumes_when_space_returns() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = LoopExt4::new(root.path(), 12) else {
        return;
    };
    let dir = fs.mount.join("data");
    let mut daemon = daemon_on(root.path(), &dir, "reject");
    // Another program's file takes half of the file system.
    let filler = fs.mount.join("filler");
    std::fs::write(&filler, vec![0u8; 6 << 20]).unwrap();
    let mut acked = Vec::new();
    let mut refusal = None;
    for round in 0..20 {
        let replies = request(&daemon.socket, &batch(1000, &format!("r{round}-")));
        for reply in replies {
            match reply["seq"].as_u64() {
                Some(seq) if reply["ok"] == true => acked.push(seq),
                _ => refusal = Some(reply["error"].as_str().unwrap_or_default().to_string()),
            }
        }
        if refusal.is_some() {
            break;
        }
    }
    let refusal = refusal.expect("a 12 MiB file system never filled up");
    assert!(
        refusal.contains("file system holding the log is full"),
        "{refusal}"
    );
    assert_eq!(
        daemon.status()["healthy"],
        true,
        "a full disk is not a fault"
    );
    // Space returns: capture resumes without a restart.
    std::fs::remove_file(&filler).unwrap();
    let replies = request(&daemon.socket, &batch(100, "after-"));
    assert!(
        replies.iter().all(|r| r["ok"] == true),
        "{:?}",
        replies.first()
    );
    acked.extend(acked_seqs(&replies));
    // Nothing acked is lost, across a restart too.
    assert!(daemon.terminate().success());
    daemon.restart();
    let stored: std::collections::BTreeSet<u64> = daemon
        .dump()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|s| !stored.contains(s))
        .take(5)
        .collect();
    assert!(lost.is_empty(), "acked events lost: {lost:?}");
}
