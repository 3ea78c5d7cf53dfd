//! The ballast: a file of reserved space in the data directory, given up when the disk fills
//! so the writes that make acknowledged events visible (the checkpoint, the archive) still
//! find room, and taken back before ingest resumes.
//!
//! Filling it is also the probe for free space: it succeeds only when the filesystem has room
//! for the ballast and as much again for new writes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::StorageError;
use crate::health::is_disk_full;

const CHUNK: usize = 1024 * 1024;

/// The ballast file.
#[derive(Debug, Clone)]
pub struct Ballast {
    path: PathBuf,
    headroom_path: PathBuf,
    bytes: u64,
}

/// What filling the ballast found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The ballast is in place and as much space again is free.
    Filled,
    /// The filesystem has no room for it: nothing was kept.
    NoRoom,
}

impl Ballast {
    /// A ballast of `bytes` in `dir` (0 disables it).
    pub fn new(dir: &Path, bytes: u64) -> Self {
        Self {
            path: dir.join("ballast"),
            headroom_path: dir.join("ballast.probe"),
            bytes,
        }
    }

    /// True when the ballast file is in place at its full size.
    pub fn present(&self) -> bool {
        self.bytes == 0
            || std::fs::metadata(&self.path).is_ok_and(|metadata| metadata.len() >= self.bytes)
    }

    /// Writes the ballast (when missing) and checks that as much space again is free.
    pub fn fill(&self) -> Result<Fill, StorageError> {
        if self.bytes == 0 {
            return Ok(Fill::Filled);
        }
        if !self.present() && !write_zeros(&self.path, self.bytes)? {
            return Ok(Fill::NoRoom);
        }
        // The headroom probe: written, synced and removed again.
        let room = write_zeros(&self.headroom_path, self.bytes)?;
        let _ = std::fs::remove_file(&self.headroom_path);
        if !room {
            self.release()?;
            return Ok(Fill::NoRoom);
        }
        Ok(Fill::Filled)
    }

    /// Removes the ballast, freeing its space.
    pub fn release(&self) -> Result<(), StorageError> {
        for path in [&self.path, &self.headroom_path] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(StorageError::io("remove ballast", path, error)),
            }
        }
        Ok(())
    }
}

/// Allocates `bytes` to `path` (written as zeros where the filesystem cannot allocate without
/// writing) and syncs it; false (and the file removed) when the filesystem is full.
fn write_zeros(path: &Path, bytes: u64) -> Result<bool, StorageError> {
    let result = (|| {
        let mut file: File = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
            Ok(()) => {}
            Err(rustix::io::Errno::OPNOTSUPP) => {
                let zeros = vec![0u8; CHUNK];
                let mut left = bytes;
                while left > 0 {
                    let now = left.min(CHUNK as u64) as usize;
                    file.write_all(&zeros[..now])?;
                    left -= now as u64;
                }
            }
            Err(errno) => return Err(std::io::Error::from(errno)),
        }
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(true),
        Err(error) if is_disk_full(&error) => {
            let _ = std::fs::remove_file(path);
            Ok(false)
        }
        Err(error) => {
            let _ = std::fs::remove_file(path);
            Err(StorageError::io("write ballast", path, error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filling_keeps_the_ballast_and_leaves_no_probe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ballast = Ballast::new(dir.path(), 2 * CHUNK as u64 + 17);
        assert!(!ballast.present());
        assert_eq!(ballast.fill().expect("fills"), Fill::Filled);
        assert!(ballast.present());
        assert!(!dir.path().join("ballast.probe").exists());
        ballast.release().expect("releases");
        assert!(!ballast.present());
        assert!(
            Ballast::new(dir.path(), 0).present(),
            "a zero ballast is always there"
        );
    }
}
