//! Requests answered once: the `Idempotency-Key` registry.
//!
//! A request with a key is answered once and stored once; a retry with the same key within
//! the idempotency window gets the first answer and stores nothing. The record of a request
//! that stored events travels in its WAL batch ([`crate::wal::RequestRecord`]), so it is
//! durable exactly when the events are, and the checkpoint that covers the batch moves it
//! into the store ([`crate::rollups::RollupStore::request`]). Between the two it is held
//! here, together with the keys of requests in progress.
//!
//! Keys are scoped by the caller (the client's token), so two clients cannot collide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::StorageError;
use crate::rollups::{RollupStore, StoredRequest};

/// What a request with a key may do.
#[derive(Debug)]
pub enum Claim {
    /// A new request: go ahead; the claim holds the key until it is answered or released.
    Fresh(ClaimGuard),
    /// Answered before: answer it the same way.
    Answered(StoredRequest),
    /// A request with this key is in progress now.
    InProgress,
    /// The key was used for a different request (another body).
    Conflict,
}

enum Slot {
    InProgress,
    /// Answered, recorded in the WAL batch at this LSN, not yet in the store.
    Answered(StoredRequest, u64),
}

/// The registry.
pub struct RequestRegistry {
    store: Arc<RollupStore>,
    window_us: i64,
    recent: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for RequestRegistry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RequestRegistry")
            .field("window_us", &self.window_us)
            .finish_non_exhaustive()
    }
}

impl RequestRegistry {
    pub fn new(store: Arc<RollupStore>, window_us: i64) -> Arc<Self> {
        Arc::new(Self {
            store,
            window_us,
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// The idempotency window (µs).
    pub fn window_us(&self) -> i64 {
        self.window_us
    }

    /// Claims `key` for a request whose body has `fingerprint`, arriving at `now_us`.
    pub fn claim(
        self: &Arc<Self>,
        key: &str,
        fingerprint: u64,
        now_us: i64,
    ) -> Result<Claim, StorageError> {
        let mut recent = self
            .recent
            .lock()
            .map_err(|_| StorageError::Poisoned("request registry"))?;
        let known = match recent.get(key) {
            Some(Slot::InProgress) => return Ok(Claim::InProgress),
            Some(Slot::Answered(request, _)) => Some(request.clone()),
            None => self.store.request(key)?,
        };
        if let Some(request) = known.filter(|request| request.at_us + self.window_us > now_us) {
            return Ok(if request.fingerprint == fingerprint {
                Claim::Answered(request)
            } else {
                Claim::Conflict
            });
        }
        recent.insert(key.to_owned(), Slot::InProgress);
        Ok(Claim::Fresh(ClaimGuard {
            registry: self.clone(),
            key: Some(key.to_owned()),
        }))
    }

    /// A request's events are durable in the WAL batch at `lsn` (also called for each keyed
    /// batch a replay finds, so records not yet in the store are known again after a crash).
    pub fn answered(&self, request: StoredRequest, lsn: u64) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.insert(request.key.clone(), Slot::Answered(request, lsn));
        }
    }

    /// A checkpoint covering every WAL batch up to `lsn` is committed: the records it wrote
    /// are in the store now.
    pub fn checkpointed(&self, lsn: u64) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.retain(|_, slot| !matches!(slot, Slot::Answered(_, at) if *at <= lsn));
        }
    }

    fn release(&self, key: &str) {
        if let Ok(mut recent) = self.recent.lock()
            && matches!(recent.get(key), Some(Slot::InProgress))
        {
            recent.remove(key);
        }
    }
}

/// A key held by a request in progress; released when dropped unless answered.
#[derive(Debug)]
pub struct ClaimGuard {
    registry: Arc<RequestRegistry>,
    key: Option<String>,
}

impl ClaimGuard {
    /// The scoped key.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or_default()
    }

    /// The request's events are durable in the WAL batch at `lsn`.
    pub fn answered(mut self, request: StoredRequest, lsn: u64) {
        self.key = None;
        self.registry.answered(request, lsn);
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.registry.release(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollups::CheckpointBatch;

    fn request(key: &str, fingerprint: u64, at_us: i64) -> StoredRequest {
        StoredRequest {
            key: key.to_owned(),
            fingerprint,
            at_us,
            status: 200,
            reply: Arc::from(&b"{\"accepted\":1,\"rejected\":0}"[..]),
        }
    }

    #[test]
    fn a_key_is_answered_once_then_replayed_until_the_window_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(RollupStore::open(dir.path()).expect("opens"));
        let registry = RequestRegistry::new(store.clone(), 1_000);
        let Claim::Fresh(guard) = registry.claim("c:k", 7, 100).expect("claims") else {
            panic!("a new key is fresh");
        };
        assert!(matches!(
            registry.claim("c:k", 7, 101).expect("claims"),
            Claim::InProgress
        ));
        guard.answered(request("c:k", 7, 100), 5);
        assert!(matches!(
            registry.claim("c:k", 7, 102).expect("claims"),
            Claim::Answered(answer) if answer.status == 200
        ));
        assert!(matches!(
            registry.claim("c:k", 8, 102).expect("claims"),
            Claim::Conflict
        ));
        // Into the store with the checkpoint that covers LSN 5, then out of memory.
        let prepared = store
            .prepare(CheckpointBatch {
                requests: vec![request("c:k", 7, 100)],
                ..CheckpointBatch::default()
            })
            .expect("prepares");
        store.commit(prepared).expect("commits");
        registry.checkpointed(5);
        assert!(matches!(
            registry.claim("c:k", 7, 500).expect("claims"),
            Claim::Answered(_)
        ));
        // Past the window the key is new again.
        assert!(matches!(
            registry.claim("c:k", 7, 1_100).expect("claims"),
            Claim::Fresh(_)
        ));
        assert_eq!(store.expire_requests(1_000).expect("expires"), 1);
        assert_eq!(store.request("c:k").expect("reads"), None);
    }

    #[test]
    fn a_claim_dropped_unanswered_frees_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(RollupStore::open(dir.path()).expect("opens"));
        let registry = RequestRegistry::new(store, 1_000);
        let claim = registry.claim("c:k", 7, 100).expect("claims");
        drop(claim);
        assert!(matches!(
            registry.claim("c:k", 9, 101).expect("claims"),
            Claim::Fresh(_)
        ));
    }
}
