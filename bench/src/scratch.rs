//! A file system of the bench's own for the write-amplification figures: an ext4 image on a
//! loop device, so its `/sys/block/loopN/stat` counts exactly what the contender asked the device
//! to write (data, metadata and journal), and nothing any other process wrote. Needs root
//! (losetup, mount); without it the caller falls back to the host disk's counters.

use std::path::{Path, PathBuf};
use std::process::Command;

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
        std::fs::create_dir_all(&mount).map_err(|e| format!("mount point: {e}"))?;
        let scratch = ScratchFs { mount, device };
        run(
            "mount",
            &[&scratch.device, &scratch.mount.display().to_string()],
        )?;
        Ok(scratch)
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
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
