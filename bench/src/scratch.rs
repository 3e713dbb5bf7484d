//! A file system of the bench's own for the write-amplification figures: an ext4 image on a
//! loop device, so its `/sys/block/loopN/stat` counts exactly what the contender asked the device
//! to write (data, metadata and journal), and nothing any other process wrote. Needs root
//! (losetup, mount); without it the caller falls back to the host disk's counters.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub struct ScratchFs {
    pub mount: PathBuf,
    device: String,
}

fn run(command: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(command)
        .args(args)
        .output()
        .map_err(|e| format!("{command}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{command} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Scratch file systems mounted now, for the panic hook: the bench is built with
/// panic = "abort", so no destructor runs after a failed assertion.
static MOUNTED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// Unmounts and detaches every scratch file system if the bench panics.
pub fn clean_up_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if let Ok(mounted) = MOUNTED.try_lock() {
            for (mount, device) in mounted.iter() {
                let _ = run("umount", &[&mount.display().to_string()]);
                let _ = run("losetup", &["--detach", device]);
            }
        }
    }));
}

/// Unmounts and detaches what an earlier run killed from outside left under `root` (a SIGKILL
/// runs no hook): any loop device backing `root/*.img`, and its mount.
pub fn clean_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for image in entries.filter_map(|e| Some(e.ok()?.path())) {
        if image.extension().is_none_or(|ext| ext != "img") {
            continue;
        }
        let _ = run("umount", &[&image.with_extension("").display().to_string()]);
        let Ok(listing) = run("losetup", &["--associated", &image.display().to_string()]) else {
            continue;
        };
        for device in listing.lines().filter_map(|line| line.split(':').next()) {
            let _ = run("losetup", &["--detach", device]);
        }
    }
}

impl ScratchFs {
    /// A fresh `bytes`-sized ext4 at `root/name`, mounted; Err says why not (not root, no loop).
    pub fn create(root: &Path, name: &str, bytes: u64) -> Result<ScratchFs, String> {
        let image = root.join(format!("{name}.img"));
        let mount = root.join(name);
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| format!("image: {e}"))?;
        let image_str = image.display().to_string();
        run("mkfs.ext4", &["-q", "-F", &image_str])?;
        let device = run(
            "losetup",
            &["--find", "--show", "--direct-io=on", &image_str],
        )?;
        // From here on the destructor (or the panic hook) detaches it, whatever fails next.
        let scratch = ScratchFs { mount, device };
        MOUNTED
            .lock()
            .expect("lock")
            .push((scratch.mount.clone(), scratch.device.clone()));
        std::fs::create_dir_all(&scratch.mount).map_err(|e| format!("mount point: {e}"))?;
        run(
            "mount",
            &[&scratch.device, &scratch.mount.display().to_string()],
        )?;
        Ok(scratch)
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        MOUNTED
            .lock()
            .expect("lock")
            .retain(|(_, device)| device != &self.device);
        // Both, whatever the first says: a mount that failed still leaves the loop device.
        let unmounted = run("umount", &[&self.mount.display().to_string()]);
        let detached = run("losetup", &["--detach", &self.device]);
        if let Err(e) = detached {
            eprintln!(
                "warning: the scratch loop device stays attached: {e} (umount: {unmounted:?})"
            );
        }
    }
}
