//! The activity stream: one record per closed (merchant, api, minute) window, and one per
//! correction, delivered at least once to every sink before the checkpoint that makes the
//! window final commits.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use mm_model::activity::ActivityRecord;
use tokio::sync::broadcast;

use crate::error::{EngineError, Result};

/// Where activity records go.
pub struct ActivitySinks {
    file: Option<(PathBuf, File)>,
    subscribers: broadcast::Sender<Arc<ActivityRecord>>,
}

impl std::fmt::Debug for ActivitySinks {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ActivitySinks")
            .field("file", &self.file.as_ref().map(|(path, _)| path))
            .finish()
    }
}

impl ActivitySinks {
    /// Opens the NDJSON file sink (appending) if a path is given.
    pub fn open(
        file: Option<&Path>,
        subscribers: broadcast::Sender<Arc<ActivityRecord>>,
    ) -> Result<Self> {
        let file = match file {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(EngineError::io("creating", parent))?;
                }
                let handle = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(EngineError::io("opening activity file", path))?;
                Some((path.to_owned(), handle))
            }
            None => None,
        };
        Ok(Self { file, subscribers })
    }

    /// Delivers records; returns once the file sink has them on disk.
    pub fn emit(&mut self, records: &[ActivityRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some((path, file)) = &mut self.file {
            let mut buffer = Vec::with_capacity(records.len() * 400);
            for record in records {
                serde_json::to_writer(&mut buffer, record)?;
                buffer.push(b'\n');
            }
            file.write_all(&buffer)
                .and_then(|()| file.sync_data())
                .map_err(EngineError::io("writing activity file", path))?;
        }
        if self.subscribers.receiver_count() > 0 {
            for record in records {
                // Slow in-process subscribers lag and are told so by the channel; never block.
                let _ = self.subscribers.send(Arc::new(record.clone()));
            }
        }
        Ok(())
    }
}
