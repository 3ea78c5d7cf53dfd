//! The public store handle: the open database behind a slot it can be replaced in.
//!
//! fjall refuses every write after one that failed at the I/O level (the database is
//! "poisoned": it cannot know what reached the disk). A full disk or a failing device would
//! then stop checkpoints until a restart. Instead the handle marks itself broken and, before
//! the next write, reopens the database from disk, which recovers the journal to its last
//! complete batch; the failed batch is written again by its writer.
//!
//! Readers take the open database for one call; a reopen waits (bounded) for them to finish,
//! and readers arriving meanwhile wait for the new one. When the database cannot be opened
//! again yet (the disk is still full), every call tries again and fails until it can.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mm_model::rollup::{Rollup, WindowKey};

use super::{
    Checkpoint, CheckpointBatch, ImportMemo, MerchantCounts, PreparedCheckpoint, Replicated,
    Series, Store, StoredRequest,
};
use crate::StorageError;
use crate::codec::RollupView;

/// How long a reopen waits for readers of the old database before giving up (and trying
/// again at the next write).
const READERS_WAIT: Duration = Duration::from_secs(5);

/// The rollup store. Shared between the writer (aggregator or replicas) and readers (queries).
pub struct RollupStore {
    dir: PathBuf,
    current: RwLock<Option<Arc<Store>>>,
    /// A write failed at the I/O level: reopen before the next one.
    broken: AtomicBool,
    reopens: AtomicU64,
}

impl std::fmt::Debug for RollupStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RollupStore")
            .field("dir", &self.dir)
            .field("broken", &self.broken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RollupStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let store = Store::open(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            current: RwLock::new(Some(Arc::new(store))),
            broken: AtomicBool::new(false),
            reopens: AtomicU64::new(0),
        })
    }

    /// How many times the database was reopened after a failed write.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// The open database, for one call; opens it when an earlier reopen could not.
    pub(super) fn store(&self) -> Result<Arc<Store>, StorageError> {
        let current = self
            .current
            .read()
            .map_err(|_| StorageError::Poisoned("rollup store"))?
            .clone();
        match current {
            Some(store) => Ok(store),
            None => {
                self.reopen()?;
                self.store()
            }
        }
    }

    /// Runs a write; reopens first when an earlier one broke the database, and marks it
    /// broken when this one fails at the I/O level.
    fn write<T>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let store = self.store()?;
        let result = op(&store);
        if let Err(error) = &result
            && error.breaks_store()
        {
            self.broken.store(true, Ordering::Release);
        }
        result
    }

    /// Closes the broken database and opens it again from disk.
    fn reopen(&self) -> Result<(), StorageError> {
        let mut slot = self
            .current
            .write()
            .map_err(|_| StorageError::Poisoned("rollup store"))?;
        if slot.is_some() && !self.broken.load(Ordering::Acquire) {
            // Another caller reopened it meanwhile.
            return Ok(());
        }
        if let Some(mut old) = slot.take() {
            let deadline = Instant::now() + READERS_WAIT;
            loop {
                match Arc::try_unwrap(old) {
                    // Dropping the last handle stops fjall's workers and frees its lock.
                    Ok(store) => {
                        drop(store);
                        break;
                    }
                    Err(shared) if Instant::now() >= deadline => {
                        *slot = Some(shared);
                        return Err(StorageError::Reopening);
                    }
                    Err(shared) => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        // On failure the slot stays empty and the next call tries again.
        let store = Store::open(&self.dir)?;
        *slot = Some(Arc::new(store));
        self.broken.store(false, Ordering::Release);
        self.reopens.fetch_add(1, Ordering::Relaxed);
        tracing::info!(dir = %self.dir.display(), "rollup store reopened after a failed write");
        Ok(())
    }

    /// The last committed checkpoint, if any.
    pub fn load_checkpoint(&self) -> Result<Option<Checkpoint>, StorageError> {
        self.store()?.load_checkpoint()
    }

    /// Every window that was open at the last checkpoint, with its rollup then.
    pub fn load_open(&self) -> Result<Vec<(WindowKey, Rollup)>, StorageError> {
        self.store()?.load_open()
    }

    /// Builds the atomic batch for `batch`: merges corrections into the stored finals and
    /// brings the ranking index along.
    pub fn prepare(&self, batch: CheckpointBatch) -> Result<PreparedCheckpoint, StorageError> {
        self.write(|store| store.prepare(batch))
    }

    /// Commits a prepared checkpoint atomically and durably.
    pub fn commit(&self, prepared: PreparedCheckpoint) -> Result<(), StorageError> {
        self.write(|store| store.commit(prepared))
    }

    /// Merges imported calls into the store with the import's progress (a record per file the
    /// calls are of), atomically: each
    /// window is added to what is stored, and is open when it is open in the store or starts
    /// at or after `open_from_minute`, final otherwise.
    pub fn import(
        &self,
        windows: &[(WindowKey, Rollup)],
        open_from_minute: i64,
        progress: &[(&str, &[u8])],
        memo: &mut ImportMemo,
    ) -> Result<(), StorageError> {
        self.write(|store| {
            self.since_reopen(memo);
            store.import(windows, open_from_minute, progress, memo)
        })
    }

    /// Writes whole every hour rollup `memo`'s import holds back (durably): what an import
    /// calls when it ends or stops. One that cannot leaves them to the store's next open,
    /// which rebuilds them from their minutes.
    pub fn finish_import(&self, memo: &mut ImportMemo) -> Result<(), StorageError> {
        self.write(|store| {
            self.since_reopen(memo);
            store.release_import_hours(memo)
        })
    }

    /// A memo's held hours are of the database as it was when they were taken up: once it has
    /// been reopened (after a failed write), its open rebuilt them whole from their minutes, so
    /// the memo lets them go and holds them again from the store.
    fn since_reopen(&self, memo: &mut ImportMemo) {
        let reopens = self.reopens();
        if memo.reopens != reopens {
            memo.hours.forget();
            memo.reopens = reopens;
        }
    }

    /// What an import keeps to skip reading keys it knows are absent: taken when the import
    /// begins and handed to each of its [`RollupStore::import`] calls.
    pub fn import_memo(&self) -> Result<ImportMemo, StorageError> {
        let mut memo = ImportMemo::new(self.store()?.day_numbers()?);
        memo.reopens = self.reopens();
        Ok(memo)
    }

    /// The progress record an import last wrote under `key`.
    pub fn import_progress(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.store()?.import_progress(key)
    }

    /// Drops every day whose minutes are all older than `oldest_kept_minute`; returns how many.
    pub fn enforce_retention(&self, oldest_kept_minute: i64) -> Result<usize, StorageError> {
        self.write(|store| store.enforce_retention(oldest_kept_minute))
    }

    /// Approximate bytes on disk.
    pub fn disk_space(&self) -> u64 {
        self.store().map_or(0, |store| store.disk_space())
    }

    /// Calls and server errors per merchant over `[from_minute, to_minute)`.
    pub fn merchant_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<MerchantCounts>, StorageError> {
        self.store()?.merchant_counts(from_minute, to_minute)
    }

    /// Visits the stored rollups of one series, minutes in `[from_minute, to_minute)`, in order.
    pub fn scan_series(
        &self,
        merchant: &str,
        api: &str,
        from_minute: i64,
        to_minute: i64,
        visit: impl FnMut(i64, &RollupView<'_>),
    ) -> Result<(), StorageError> {
        self.store()?
            .scan_series(merchant, api, from_minute, to_minute, visit)
    }

    /// Visits the calls of `series` of `merchant` in `[from_minute, to_minute)` from hour
    /// rollups where whole hours allow, with pieces of whole hours visited at the hour's first
    /// minute: exact for buckets of whole hours, not for finer ones (use
    /// [`RollupStore::scan_series`] for those).
    pub fn scan_hours(
        &self,
        merchant: &str,
        series: Series<'_>,
        from_minute: i64,
        to_minute: i64,
        visit: impl FnMut(&str, i64, &RollupView<'_>),
    ) -> Result<(), StorageError> {
        self.store()?
            .scan_hours(merchant, series, from_minute, to_minute, visit)
    }

    /// The last minute a merchant had calls, if it is known.
    pub fn merchant_last_seen(&self, merchant: &str) -> Result<Option<i64>, StorageError> {
        self.store()?.merchant_last_seen(merchant)
    }

    /// Merchant names starting with `prefix` (ignoring case), at most `limit`.
    pub fn search_merchants(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        self.store()?.search_merchants(prefix, limit)
    }

    /// True when the stored rollup of `key` is provisional (its window still open).
    pub fn is_open(&self, key: &WindowKey) -> Result<bool, StorageError> {
        self.store()?.is_open(key)
    }

    /// Applies replicated records and the positions they bring `source` to, atomically.
    pub fn apply_replicated(
        &self,
        records: Vec<Replicated>,
        source: &str,
        positions: &[(i32, i64)],
    ) -> Result<usize, StorageError> {
        self.write(|store| store.apply_replicated(records, source, positions))
    }

    /// The (partition, offset) the stored record of `key` covers, if replicated.
    pub fn covers(&self, key: &WindowKey) -> Result<Option<(i32, i64)>, StorageError> {
        self.store()?.covers(key)
    }

    /// The replicated rollup of `key` with what it covers.
    pub fn replicated(&self, key: &WindowKey) -> Result<Option<(Rollup, i32, i64)>, StorageError> {
        self.store()?.replicated(key)
    }

    /// The topic positions the replica of `source` has applied.
    pub fn replica_positions(&self, source: &str) -> Result<BTreeMap<i32, i64>, StorageError> {
        self.store()?.replica_positions(source)
    }

    /// The stored answer of a request, by its scoped key.
    pub fn request(&self, key: &str) -> Result<Option<StoredRequest>, StorageError> {
        self.store()?.request(key)
    }

    /// Drops requests that arrived before `cutoff_us`; returns how many.
    pub fn expire_requests(&self, cutoff_us: i64) -> Result<usize, StorageError> {
        self.write(|store| store.expire_requests(cutoff_us))
    }
}
