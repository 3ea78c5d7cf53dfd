//! Whether storage takes writes: one shared state that every writer (the write-ahead log,
//! the checkpoint, the archive) reports to, and that ingest, the health endpoints and the
//! metrics read.
//!
//! A failed write is a state, not an end: the component reports it, keeps what it could not
//! write, retries, and reports recovery once a write succeeds. Storage is writable when no
//! component is failing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One component's failed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `wal`, `checkpoint`, `archive`, ...
    pub component: &'static str,
    /// The filesystem is full (or the quota is reached).
    pub disk_full: bool,
    /// The error, in words.
    pub detail: String,
    /// When the component first failed (µs since the epoch).
    pub since_us: i64,
}

/// The shared state.
#[derive(Debug, Default)]
pub struct StorageHealth {
    writable: AtomicBool,
    failures: Mutex<BTreeMap<&'static str, Failure>>,
}

impl StorageHealth {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            writable: AtomicBool::new(true),
            failures: Mutex::new(BTreeMap::new()),
        })
    }

    /// True when no component is failing.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// The failures now, disk-full ones first.
    pub fn failures(&self) -> Vec<Failure> {
        let mut failures: Vec<Failure> = self
            .failures
            .lock()
            .map(|failures| failures.values().cloned().collect())
            .unwrap_or_default();
        failures.sort_by_key(|failure| !failure.disk_full);
        failures
    }

    /// True when a component failed because the disk is full.
    pub fn disk_full(&self) -> bool {
        self.failures().iter().any(|failure| failure.disk_full)
    }

    /// A component's write failed. Returns true when this is news (it was not failing).
    pub fn report_failure(&self, component: &'static str, disk_full: bool, detail: String) -> bool {
        let Ok(mut failures) = self.failures.lock() else {
            return false;
        };
        let news = !failures.contains_key(component);
        let since_us = failures
            .get(component)
            .map_or_else(mm_model::time::now_us, |failure| failure.since_us);
        failures.insert(
            component,
            Failure {
                component,
                disk_full,
                detail,
                since_us,
            },
        );
        self.writable.store(false, Ordering::Release);
        news
    }

    /// A component wrote successfully. Returns true when it was failing.
    pub fn report_recovered(&self, component: &'static str) -> bool {
        let Ok(mut failures) = self.failures.lock() else {
            return false;
        };
        let was_failing = failures.remove(component).is_some();
        self.writable.store(failures.is_empty(), Ordering::Release);
        was_failing
    }
}

/// True when an I/O error says the filesystem is full or the quota is reached.
pub fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_only_when_every_component_recovered() {
        let health = StorageHealth::new();
        assert!(health.writable());
        assert!(health.report_failure("wal", true, "no space".into()));
        assert!(!health.report_failure("wal", true, "still no space".into()));
        assert!(health.report_failure("archive", false, "i/o error".into()));
        assert!(!health.writable());
        assert!(health.disk_full());
        let failures = health.failures();
        assert_eq!(failures[0].component, "wal", "disk-full failures first");
        assert_eq!(failures[0].detail, "still no space");
        assert!(health.report_recovered("wal"));
        assert!(!health.writable(), "the archive still fails");
        assert!(!health.disk_full());
        assert!(health.report_recovered("archive"));
        assert!(!health.report_recovered("archive"));
        assert!(health.writable());
    }

    #[test]
    fn disk_full_errors_are_recognised() {
        let full = std::io::Error::from_raw_os_error(28); // ENOSPC
        assert!(is_disk_full(&full));
        assert!(!is_disk_full(&std::io::Error::from_raw_os_error(5))); // EIO
    }
}
