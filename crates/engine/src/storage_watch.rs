//! The storage watch: while storage cannot write because the disk is full, gives up the
//! ballast (so the checkpoint and the archive find room for what the log had acknowledged),
//! then probes for free space and, once the ballast and as much again fit, takes the ballast
//! back and lets ingest resume.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use mm_storage::ballast::{Ballast, Fill};
use mm_storage::health::StorageHealth;

/// How often the watch looks.
const INTERVAL: Duration = Duration::from_secs(1);

/// Components whose failure the watch clears by probing; the others (checkpoint, archive)
/// retry their own writes and report their own recovery.
const PROBED: [&str; 2] = ["wal", "ballast"];

/// Runs until `stop_rx`'s sender is gone. `settle` is how long the checkpoint and the
/// archive get to use the space the ballast freed before the probe takes it back.
pub fn run(health: Arc<StorageHealth>, ballast: Ballast, stop_rx: Receiver<()>, settle: Duration) {
    let mut released_at: Option<Instant> = None;
    loop {
        if let Err(RecvTimeoutError::Disconnected) = stop_rx.recv_timeout(INTERVAL) {
            return;
        }
        if health.writable() {
            continue;
        }
        let failures = health.failures();
        if failures.iter().any(|failure| failure.disk_full) && ballast.present() {
            match ballast.release() {
                Ok(()) => {
                    released_at = Some(Instant::now());
                    tracing::warn!(
                        "the disk is full: released the ballast so acknowledged events can be checkpointed and archived"
                    );
                }
                Err(error) => tracing::warn!(%error, "could not release the ballast"),
            }
        }
        if !failures
            .iter()
            .all(|failure| PROBED.contains(&failure.component))
        {
            continue;
        }
        if released_at.is_some_and(|at| at.elapsed() < settle) {
            continue;
        }
        match ballast.fill() {
            Ok(Fill::Filled) => {
                for component in PROBED {
                    health.report_recovered(component);
                }
                released_at = None;
                tracing::info!("the disk has room again: ballast restored, ingest resumes");
            }
            Ok(Fill::NoRoom) => {}
            Err(error) => tracing::warn!(%error, "probing for free space failed"),
        }
    }
}
