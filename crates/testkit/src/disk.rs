//! A small filesystem of its own for tests that need a full disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::{TempDir, tempdir};

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct SmallDisk {
    _dir: TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes`, or says loudly why it cannot.
    pub fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempdir().expect("tempdir");
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&mount)
            .output();
        match mounted {
            Ok(output) if output.status.success() => Some(Self { _dir: dir, mount }),
            Ok(output) => {
                eprintln!(
                    "\n!!!!! SKIPPED: cannot mount a tmpfs for the disk-full test ({}); run the tests as root on Linux to cover it !!!!!\n",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!(
                    "\n!!!!! SKIPPED: cannot run mount for the disk-full test ({error}) !!!!!\n"
                );
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Writes a file until the filesystem is full.
    pub fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler created");
        let chunk = vec![7u8; 256 * 1024];
        loop {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        // Fill the last bytes too.
        while file.write_all(&[7u8; 512]).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
