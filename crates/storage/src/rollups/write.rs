//! Writing the store: a checkpoint's windows (closes, corrections, open snapshots) and an
//! import's, each as one atomic batch that moves the ranking index, the hour rollups and the
//! open-window markers along.

use std::borrow::Cow;
use std::collections::BTreeMap;

use fjall::PersistMode;
use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey};

use super::hours::HourChange;
use super::memo::{ImportMemo, Memo, Space, must_read, read_for_write};
use super::ranking::{HourDeltas, IndexEntries, Totals, index_key};
use super::{
    Applied, CHECKPOINT_KEY, CheckpointBatch, Group, IMPORT_PREFIX, PreparedCheckpoint, Store,
    day_of, decode_error, merchant_name_key, rollup_key, sortable,
};
use crate::StorageError;
use crate::codec::{self, RollupState};

/// A window to write: its key, its store key ([`rollup_key`]) and its rollup.
pub(super) struct WindowWrite<'a> {
    pub(super) key: &'a WindowKey,
    pub(super) store_key: Vec<u8>,
    pub(super) rollup: Cow<'a, Rollup>,
}

impl<'a> WindowWrite<'a> {
    /// Each of `windows`, borrowed.
    pub(super) fn all(windows: &'a [(WindowKey, Rollup)]) -> Vec<Self> {
        windows
            .iter()
            .map(|(key, rollup)| WindowWrite {
                key,
                store_key: rollup_key(key),
                rollup: Cow::Borrowed(rollup),
            })
            .collect()
    }
}

impl Store {
    /// Builds the atomic batch for `batch`: merges corrections into the stored finals and
    /// brings the ranking index along.
    pub fn prepare(&self, batch: CheckpointBatch) -> Result<PreparedCheckpoint, StorageError> {
        let CheckpointBatch {
            mut finals,
            corrections,
            open,
            checkpoint,
            requests,
        } = batch;
        let mut write = self.db.batch();
        self.write_requests(&mut write, &requests);
        let mut corrected = Vec::new();
        let mut corrected_calls = Vec::new();

        // Late calls for a window closing in this same batch go into its final record.
        let mut closing: BTreeMap<WindowKey, usize> = finals
            .iter()
            .enumerate()
            .map(|(position, (key, _))| (key.clone(), position))
            .collect();
        for (key, delta) in corrections {
            if let Some(position) = closing.get(&key) {
                finals[*position].1.merge(&delta);
                continue;
            }
            let mut total = self.stored_rollup(&key)?.unwrap_or_default();
            total.merge(&delta);
            corrected.push((key, total));
            corrected_calls.push(delta);
        }
        closing.clear();

        let applied = self.write_windows(
            &mut write,
            [
                (Group::Final, &WindowWrite::all(&finals)),
                (Group::Final, &WindowWrite::all(&corrected)),
                (Group::Open, &WindowWrite::all(&open)),
            ],
            None,
        )?;
        // A closing window's hour gains all its calls; a corrected one, the late calls.
        let hour_changes = finals
            .iter()
            .map(|(key, rollup)| (key, HourChange::Add(Cow::Borrowed(rollup))))
            .chain(
                corrected
                    .iter()
                    .zip(&corrected_calls)
                    .map(|((key, _), calls)| (key, HourChange::Add(Cow::Borrowed(calls)))),
            )
            .collect();
        self.write_hours(&mut write, hour_changes, None)?;
        let checkpoint_bytes =
            serde_json::to_vec(&checkpoint).map_err(|error| StorageError::Corrupt {
                what: "checkpoint",
                path: self.meta.path().to_owned(),
                detail: error.to_string(),
            })?;
        write.insert(&self.meta, CHECKPOINT_KEY, checkpoint_bytes);
        Ok(PreparedCheckpoint {
            batch: write,
            finals,
            corrected,
            applied,
        })
    }

    /// Writes windows with their index entries: the rollup, the open-window marker, the
    /// merchant-name index and the ranking index (exact minute and hour totals). Returns what
    /// changes in memory, for [`Store::commit_batch`].
    pub(super) fn write_windows<const N: usize>(
        &self,
        write: &mut fjall::OwnedWriteBatch,
        groups: [(Group, &[WindowWrite<'_>]); N],
        mut memo: Memo<'_>,
    ) -> Result<Applied, StorageError> {
        let mut changes = Vec::new();
        let mut opened = Vec::new();
        let mut closed = Vec::new();
        let open_keys = self
            .open_keys
            .read()
            .map_err(|_| StorageError::Poisoned("open windows"))?;
        let mut hour_deltas = HourDeltas::new();
        let mut minute_entries = IndexEntries::new();
        // The name index holds each merchant's latest minute written in this batch.
        let mut last_seen: BTreeMap<&str, i64> = BTreeMap::new();
        let mut value = Vec::with_capacity(256);
        // The day of the window before (windows come grouped by series, then by minute).
        let mut day: Option<(i64, super::Day)> = None;
        for (group, windows) in groups {
            let state = match group {
                Group::Open => RollupState::Open,
                Group::Final | Group::FinalNeverOpen => RollupState::Final,
            };
            for window in windows {
                let (key, store_key, rollup) = (window.key, &window.store_key[..], &*window.rollup);
                let day = self.day_through(&mut day, day_of(key.minute))?;
                value.clear();
                codec::encode_rollup(rollup, state, &mut value);
                write.insert(&day.rollups, store_key, value.as_slice());
                match group {
                    Group::Open => {
                        if !open_keys.contains(store_key) {
                            opened.push(store_key.to_vec());
                        }
                        write.insert(&self.open, store_key, []);
                    }
                    // The set in memory is the keyspace's: a window not in it has no
                    // marker to remove (and a needless tombstone would slow its scans).
                    Group::Final => {
                        if open_keys.contains(store_key) {
                            closed.push(store_key.to_vec());
                            write.remove(&self.open, store_key);
                        }
                    }
                    Group::FinalNeverOpen => {}
                }
                if key.api == MERCHANT_TOTAL_API {
                    let seen = last_seen.entry(key.merchant.as_str()).or_insert(key.minute);
                    *seen = (*seen).max(key.minute);
                    let deltas = (&mut hour_deltas, &mut changes, &mut minute_entries);
                    self.index_minute(&day, key, rollup, deltas, &mut memo)?;
                }
            }
        }
        for (merchant, minute) in last_seen {
            write.insert(
                &self.merchants,
                merchant_name_key(merchant),
                sortable(minute),
            );
        }
        minute_entries.sort_unstable_by(|left, right| (left.0, &left.1).cmp(&(right.0, &right.1)));
        let mut held: Option<(i64, super::Day)> = None;
        for (number, key, value) in minute_entries {
            let handles = self.day_through(&mut held, number)?;
            write.insert(&handles.index, key, value);
        }
        for ((day, hour, merchant), delta) in hour_deltas {
            let Some(handles) = self.day(day) else {
                continue;
            };
            let hour_key = index_key(b'h', hour, &merchant);
            let stored = read_for_write(&mut memo, day, Space::Index, &handles.index, &hour_key)?;
            let previous = match stored {
                Some(bytes) => Totals::decode(&bytes)?,
                None => Totals::default(),
            };
            let mut fields = previous.fields();
            for (field, change) in fields.iter_mut().zip(delta) {
                *field = field.saturating_add_signed(change);
            }
            write.insert(
                &handles.index,
                hour_key,
                Totals::from_fields(fields).encode(),
            );
        }
        Ok(Applied {
            ranking: changes,
            opened,
            closed,
        })
    }

    /// Commits a batch of window writes atomically and brings what is kept in memory along:
    /// windows it opens join the open set before the commit, windows it closes leave it after.
    pub(super) fn commit_batch(
        &self,
        batch: fjall::OwnedWriteBatch,
        applied: Applied,
        durability: Option<PersistMode>,
    ) -> Result<(), StorageError> {
        if !applied.opened.is_empty() {
            let mut open_keys = self
                .open_keys
                .write()
                .map_err(|_| StorageError::Poisoned("open windows"))?;
            open_keys.extend(applied.opened.into_iter().map(Vec::into_boxed_slice));
        }
        batch.durability(durability).commit()?;
        if !applied.closed.is_empty() {
            let mut open_keys = self
                .open_keys
                .write()
                .map_err(|_| StorageError::Poisoned("open windows"))?;
            for key in &applied.closed {
                open_keys.remove(key.as_slice());
            }
        }
        if let Ok(mut ranking) = self.ranking.write() {
            ranking.apply(&applied.ranking);
        }
        Ok(())
    }

    /// Commits a prepared checkpoint atomically and durably.
    pub fn commit(&self, prepared: PreparedCheckpoint) -> Result<(), StorageError> {
        self.commit_batch(
            prepared.batch,
            prepared.applied,
            Some(PersistMode::SyncData),
        )
    }

    /// Merges imported calls into the store, atomically with the import's progress records
    /// (`progress`: per file of the calls, a key of its own and a value, in the `meta`
    /// keyspace). Each window's calls
    /// are added to what is stored; a window stays (or becomes) open when it is open in the
    /// store or starts at or after `open_from_minute` (a window a starting server would still
    /// count into, so it restores it with these calls), and is final otherwise.
    pub fn import(
        &self,
        windows: &[(WindowKey, Rollup)],
        open_from_minute: i64,
        progress: &[(&str, &[u8])],
        memo: &mut ImportMemo,
    ) -> Result<(), StorageError> {
        let mut finals = Vec::new();
        // Most of an import's windows are new and final.
        let mut finals_never_open = Vec::with_capacity(windows.len());
        let mut open = Vec::new();
        let mut hour_changes = Vec::with_capacity(windows.len());
        // In key order: each insert then walks the memtable's skiplist down the path the one
        // before it warmed, instead of a random one through memory the size of the memtable.
        let mut keyed: Vec<(Vec<u8>, &(WindowKey, Rollup))> = windows
            .iter()
            .map(|window| (rollup_key(&window.0), window))
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (store_key, (key, calls)) in keyed {
            let day = day_of(key.minute);
            // Claimed whether or not the day exists yet: this batch may create it.
            let stored = match must_read(&mut Some(&mut *memo), day, Space::Rollups, &store_key) {
                true => match self.day(day) {
                    Some(handles) => handles.rollups.get(&store_key)?,
                    None => None,
                },
                false => None,
            };
            // A window never stored is written as imported, without a copy.
            let (rollup, state) = match stored {
                Some(bytes) => {
                    let (mut rollup, state) =
                        codec::decode_rollup(&bytes).map_err(decode_error("stored rollup"))?;
                    rollup.merge(calls);
                    (Cow::Owned(rollup), Some(state))
                }
                None => (Cow::Borrowed(calls), None),
            };
            let window = WindowWrite {
                key,
                store_key,
                rollup,
            };
            match state {
                Some(RollupState::Open) => open.push(window),
                _ if key.minute >= open_from_minute => {
                    if state == Some(RollupState::Final) {
                        // A final window reopened: its hour no longer holds it whole.
                        hour_changes.push((key, HourChange::Unknown));
                    }
                    open.push(window);
                }
                Some(RollupState::Final) => {
                    hour_changes.push((key, HourChange::Add(Cow::Borrowed(calls))));
                    finals.push(window);
                }
                // Never stored: no open-window marker to clear.
                None => {
                    hour_changes.push((key, HourChange::Add(Cow::Borrowed(calls))));
                    finals_never_open.push(window);
                }
            }
        }
        let mut write = self.db.batch();
        let applied = self.write_windows(
            &mut write,
            [
                (Group::Final, finals.as_slice()),
                (Group::FinalNeverOpen, finals_never_open.as_slice()),
                (Group::Open, open.as_slice()),
            ],
            Some(&mut *memo),
        )?;
        self.hold_hours(&mut write, hour_changes, memo)?;
        for (key, record) in progress {
            write.insert(&self.meta, format!("{IMPORT_PREFIX}{key}"), *record);
        }
        self.commit_batch(write, applied, Some(PersistMode::SyncData))
    }

    /// The progress record of an import, as [`Store::import`] last wrote it.
    pub fn import_progress(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .meta
            .get(format!("{IMPORT_PREFIX}{key}"))?
            .map(|value| value.to_vec()))
    }
}
