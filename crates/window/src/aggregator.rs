use std::collections::BTreeMap;
use std::hash::Hasher;
use std::sync::Arc;

use hashbrown::HashTable;
use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey, latency_micros};
use mm_model::sketch::bin_for;
use mm_model::time::{MICROS_PER_MINUTE, minute_of};
use rustc_hash::{FxHashMap, FxHasher};

use crate::round::{
    AggregatorStats, Call, Correction, Disposition, Origin, Round, WindowConfig, WindowRollup,
};

#[derive(Debug)]
struct OpenWindow {
    minute: i64,
    rollup: Rollup,
    dirty: bool,
}

/// A (merchant, api) series, or a merchant-wide series (api [`MERCHANT_TOTAL_API`]).
///
/// Only API series hold windows. A merchant-wide window is the merge of its merchant's API
/// windows of the same minute, computed when it is needed (a checkpoint, a close) instead of
/// being counted event by event: every API window of one merchant-minute closes in the same
/// watermark step, so the merge is always complete.
#[derive(Debug)]
struct Series {
    /// [`series_hash`] of merchant and API.
    hash: u64,
    merchant: Arc<str>,
    api: Arc<str>,
    /// For an API series: its merchant-wide series. For a merchant-wide series: itself.
    total: u32,
    /// For a merchant-wide series: its API series.
    members: Vec<u32>,
    windows: Vec<OpenWindow>,
}

#[derive(Debug, Clone, Copy)]
struct PartitionClock {
    max_event_us: i64,
    last_arrival_wall_us: i64,
}

/// The window aggregator; see the crate documentation for its semantics.
#[derive(Debug)]
pub struct Aggregator {
    config: WindowConfig,
    /// Series ids, by [`series_hash`].
    series_index: HashTable<u32>,
    series: Vec<Series>,
    /// The API series with an open window, by the window's minute.
    close_schedule: BTreeMap<i64, Vec<u32>>,
    partitions: FxHashMap<u32, PartitionClock>,
    watermark_us: i64,
    closed: Vec<WindowRollup>,
    /// Late calls per window, with the largest position among them.
    corrections: FxHashMap<WindowKey, (Rollup, i64)>,
    /// API windows that changed since the last drain.
    dirty: Vec<(u32, i64)>,
    open_windows: usize,
    stats: AggregatorStats,
    /// Wall time of the first `advance` while no input had been seen: an input that has never
    /// delivered anything is idle from then on.
    idle_since_us: Option<i64>,
}

impl Aggregator {
    /// An empty aggregator whose watermark has not started.
    pub fn new(config: WindowConfig) -> Self {
        Self {
            config,
            series_index: HashTable::new(),
            series: Vec::new(),
            close_schedule: BTreeMap::new(),
            partitions: FxHashMap::default(),
            watermark_us: i64::MIN,
            closed: Vec::new(),
            corrections: FxHashMap::default(),
            dirty: Vec::new(),
            open_windows: 0,
            stats: AggregatorStats::default(),
            idle_since_us: None,
        }
    }

    /// The current watermark (µs); `i64::MIN` before any input.
    pub fn watermark_us(&self) -> i64 {
        self.watermark_us
    }

    /// Counters.
    pub fn stats(&self) -> AggregatorStats {
        self.stats
    }

    /// Number of open (merchant, api) windows.
    pub fn open_windows(&self) -> usize {
        self.open_windows
    }

    /// The largest event time seen per partition, for checkpoints.
    pub fn partition_clocks(&self) -> Vec<(u32, i64)> {
        let mut clocks: Vec<(u32, i64)> = self
            .partitions
            .iter()
            .map(|(partition, clock)| (*partition, clock.max_event_us))
            .collect();
        clocks.sort_unstable();
        clocks
    }

    fn series_id(&mut self, merchant: &str, api: &str) -> u32 {
        let hash = series_hash(merchant, api);
        let series = &self.series;
        if let Some(id) = self.series_index.find(hash, |id| {
            let candidate = &series[*id as usize];
            *candidate.api == *api && *candidate.merchant == *merchant
        }) {
            return *id;
        }
        let (total, merchant) = if api == MERCHANT_TOTAL_API {
            (self.series.len() as u32, Arc::from(merchant))
        } else {
            let total = self.series_id(merchant, MERCHANT_TOTAL_API);
            (total, self.series[total as usize].merchant.clone())
        };
        let id = self.series.len() as u32;
        if total != id {
            self.series[total as usize].members.push(id);
        }
        self.series.push(Series {
            hash,
            merchant,
            api: Arc::from(api),
            total,
            members: Vec::new(),
            windows: Vec::new(),
        });
        let series = &self.series;
        self.series_index
            .insert_unique(hash, id, |id| series[*id as usize].hash);
        id
    }

    /// Whether the watermark has closed the window of `minute`: a call for it now is late.
    pub fn is_closed(&self, minute: i64) -> bool {
        self.window_is_closed(minute)
    }

    fn window_is_closed(&self, minute: i64) -> bool {
        (minute + 1).saturating_mul(MICROS_PER_MINUTE) <= self.watermark_us
    }

    /// Counts one API call. `now_wall_us` is the wall clock at arrival.
    pub fn ingest(&mut self, origin: Origin, call: Call<'_>, now_wall_us: i64) -> Disposition {
        let clock = self
            .partitions
            .entry(origin.partition)
            .or_insert(PartitionClock {
                max_event_us: i64::MIN,
                last_arrival_wall_us: now_wall_us,
            });
        clock.max_event_us = clock.max_event_us.max(call.ts_us.min(now_wall_us));
        clock.last_arrival_wall_us = clock.last_arrival_wall_us.max(now_wall_us);

        let minute = minute_of(call.ts_us);
        if self.window_is_closed(minute) {
            self.add_late(origin.position, call, |_| false);
            return Disposition::Late;
        }
        self.stats.events += 1;
        let id = self.series_id(call.merchant, call.api);
        let window = self.open_window(id, minute);
        window.rollup.record_prepared(
            call.status,
            latency_micros(call.latency_ms),
            bin_for(call.latency_ms),
        );
        if !window.dirty {
            window.dirty = true;
            self.dirty.push((id, minute));
        }
        Disposition::Open
    }

    /// Collects a call whose window has closed ([`Self::is_closed`]) as a correction of that
    /// window and of its merchant-wide window, tagged with its input position, except for
    /// the windows where `already_counted` says a record downstream holds it already (cluster
    /// mode, after taking over from an owner that emitted it). Returns whether it was
    /// collected for any window.
    pub fn add_late(
        &mut self,
        position: i64,
        call: Call<'_>,
        mut already_counted: impl FnMut(&WindowKey) -> bool,
    ) -> bool {
        self.stats.events += 1;
        self.stats.late_events += 1;
        let minute = minute_of(call.ts_us);
        let mut collected = false;
        for series_api in [call.api, MERCHANT_TOTAL_API] {
            let key = WindowKey {
                merchant: call.merchant.to_owned(),
                api: series_api.to_owned(),
                minute,
            };
            if already_counted(&key) {
                continue;
            }
            let (late, last_position) = self
                .corrections
                .entry(key)
                .or_insert_with(|| (Rollup::default(), position));
            late.record(call.status, call.latency_ms);
            *last_position = (*last_position).max(position);
            collected = true;
        }
        collected
    }

    fn open_window(&mut self, id: u32, minute: i64) -> &mut OpenWindow {
        let windows = &mut self.series[id as usize].windows;
        let position = match windows.iter().position(|window| window.minute == minute) {
            Some(position) => position,
            None => {
                windows.push(OpenWindow {
                    minute,
                    rollup: Rollup::default(),
                    dirty: false,
                });
                self.close_schedule.entry(minute).or_default().push(id);
                self.open_windows += 1;
                windows.len() - 1
            }
        };
        &mut self.series[id as usize].windows[position]
    }

    /// The merchant-wide rollup of `minute`: the merge of the open API windows of that minute.
    fn merchant_total(&self, total: u32, minute: i64) -> Option<Rollup> {
        let mut merged: Option<Rollup> = None;
        for member in &self.series[total as usize].members {
            let windows = &self.series[*member as usize].windows;
            if let Some(window) = windows.iter().find(|window| window.minute == minute) {
                match merged.as_mut() {
                    Some(merged) => merged.merge(&window.rollup),
                    None => merged = Some(window.rollup.clone()),
                }
            }
        }
        merged
    }

    /// Moves the watermark for the wall clock `now_wall_us` and closes every window it passed.
    pub fn advance(&mut self, now_wall_us: i64) {
        let grace = self.config.grace_us;
        let idle_timeout = self.config.idle_timeout_us;
        let wall_watermark = now_wall_us.saturating_sub(grace);
        let candidate = if self.partitions.is_empty() {
            let idle_since = *self.idle_since_us.get_or_insert(now_wall_us);
            if now_wall_us.saturating_sub(idle_since) < idle_timeout {
                return;
            }
            wall_watermark
        } else {
            self.partitions
                .values()
                .map(|clock| {
                    let own = clock.max_event_us.saturating_sub(grace);
                    let idle =
                        now_wall_us.saturating_sub(clock.last_arrival_wall_us) >= idle_timeout;
                    if idle { own.max(wall_watermark) } else { own }
                })
                .min()
                .unwrap_or(wall_watermark)
        };
        if candidate <= self.watermark_us {
            return;
        }
        self.watermark_us = candidate;
        self.close_due();
    }

    /// Closes every open window: the input has ended (a bounded file, a finished replay).
    /// Anything ingested afterwards is late.
    pub fn close_all(&mut self) {
        self.watermark_us = i64::MAX;
        self.close_due();
    }

    fn close_due(&mut self) {
        // Merchant-wide totals of the minutes closing now, merged as their API windows close.
        let mut totals: Vec<((u32, i64), Rollup)> = Vec::new();
        let mut total_index: FxHashMap<(u32, i64), usize> = FxHashMap::default();
        while let Some(minute) = self.close_schedule.keys().next().copied() {
            if !self.window_is_closed(minute) {
                break;
            }
            let mut ids = self.close_schedule.remove(&minute).unwrap_or_default();
            ids.sort_unstable();
            for id in ids {
                self.close_window(id, minute, &mut totals, &mut total_index);
            }
        }
        for ((total, minute), rollup) in totals {
            self.stats.windows_closed += 1;
            self.closed.push(WindowRollup {
                key: WindowKey {
                    merchant: self.series[total as usize].merchant.to_string(),
                    api: MERCHANT_TOTAL_API.to_owned(),
                    minute,
                },
                rollup,
            });
        }
    }

    /// Closes the window of API series `id` at `minute`, adding it to its merchant's total.
    fn close_window(
        &mut self,
        id: u32,
        minute: i64,
        totals: &mut Vec<((u32, i64), Rollup)>,
        total_index: &mut FxHashMap<(u32, i64), usize>,
    ) {
        let series = &mut self.series[id as usize];
        let Some(position) = series
            .windows
            .iter()
            .position(|window| window.minute == minute)
        else {
            return;
        };
        let window = series.windows.swap_remove(position);
        self.open_windows -= 1;
        self.stats.windows_closed += 1;
        let slot = *total_index
            .entry((series.total, minute))
            .or_insert_with(|| {
                totals.push(((series.total, minute), Rollup::default()));
                totals.len() - 1
            });
        totals[slot].1.merge(&window.rollup);
        self.closed.push(WindowRollup {
            key: WindowKey {
                merchant: series.merchant.to_string(),
                api: series.api.to_string(),
                minute,
            },
            rollup: window.rollup,
        });
    }

    /// One checkpoint round: advances the watermark for `now_wall_us`, then hands out the
    /// windows it closed, the late calls, and the open windows that changed since the last
    /// round (marking them clean). Both deployments build their checkpoints from this.
    pub fn checkpoint(&mut self, now_wall_us: i64) -> Round {
        self.advance(now_wall_us);
        Round {
            finals: self.take_closed(),
            corrections: self.take_corrections(),
            open: self.take_changed_open(),
        }
    }

    /// Windows closed since the last call, each exactly once, merchant-wide ones included.
    fn take_closed(&mut self) -> Vec<WindowRollup> {
        // Sized like the last batch: closes come in similar batches, minute after minute.
        let capacity = self.closed.len();
        std::mem::replace(&mut self.closed, Vec::with_capacity(capacity))
    }

    /// Late calls since the last call, merged per window (merchant-wide ones included), sorted
    /// by window: add each to the stored final rollup.
    fn take_corrections(&mut self) -> Vec<Correction> {
        let mut corrections: Vec<Correction> = self
            .corrections
            .drain()
            .map(|(key, (late, last_position))| Correction {
                key,
                late,
                last_position,
            })
            .collect();
        corrections.sort_unstable_by(|left, right| left.key.cmp(&right.key));
        corrections
    }

    /// Whether late calls wait to be taken.
    pub fn has_corrections(&self) -> bool {
        !self.corrections.is_empty()
    }

    /// Every open window changed since the last call, and the merchant-wide window of each
    /// such minute; marks them clean.
    fn take_changed_open(&mut self) -> Vec<WindowRollup> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut changed = Vec::with_capacity(dirty.len() + dirty.len() / 4);
        let mut totals: Vec<(u32, i64)> = Vec::with_capacity(dirty.len());
        for (id, minute) in dirty {
            let series = &mut self.series[id as usize];
            if let Some(window) = series
                .windows
                .iter_mut()
                .find(|window| window.minute == minute)
            {
                window.dirty = false;
                changed.push(WindowRollup {
                    key: WindowKey {
                        merchant: series.merchant.to_string(),
                        api: series.api.to_string(),
                        minute,
                    },
                    rollup: window.rollup.clone(),
                });
                totals.push((series.total, minute));
            }
        }
        totals.sort_unstable();
        totals.dedup();
        for (total, minute) in totals {
            if let Some(rollup) = self.merchant_total(total, minute) {
                changed.push(WindowRollup {
                    key: WindowKey {
                        merchant: self.series[total as usize].merchant.to_string(),
                        api: MERCHANT_TOTAL_API.to_owned(),
                        minute,
                    },
                    rollup,
                });
            }
        }
        changed
    }

    /// Restores an open window from a checkpoint. Merchant-wide windows are recomputed from
    /// their API windows, so restoring one is a no-op.
    pub fn restore_open(&mut self, merchant: &str, api: &str, minute: i64, rollup: Rollup) {
        if api == MERCHANT_TOTAL_API {
            return;
        }
        let id = self.series_id(merchant, api);
        let window = self.open_window(id, minute);
        window.rollup = rollup;
    }

    /// Restores a partition's clock from a checkpoint.
    pub fn restore_clock(&mut self, partition: u32, max_event_us: i64, now_wall_us: i64) {
        self.partitions.insert(
            partition,
            PartitionClock {
                max_event_us,
                last_arrival_wall_us: now_wall_us,
            },
        );
    }

    /// Restores the watermark from a checkpoint.
    pub fn restore_watermark(&mut self, watermark_us: i64) {
        self.watermark_us = self.watermark_us.max(watermark_us);
    }

    /// Forgets series without open windows, to bound memory with many short-lived keys.
    /// Returns how many series were removed.
    pub fn compact_series(&mut self) -> usize {
        let mut keep = vec![false; self.series.len()];
        for (id, series) in self.series.iter().enumerate() {
            if !series.windows.is_empty() {
                keep[id] = true;
                keep[series.total as usize] = true;
            }
        }
        if keep.iter().all(|kept| *kept) {
            return 0;
        }
        let mut new_id = vec![u32::MAX; self.series.len()];
        let mut kept = Vec::new();
        for (id, series) in std::mem::take(&mut self.series).into_iter().enumerate() {
            if keep[id] {
                new_id[id] = kept.len() as u32;
                kept.push(series);
            }
        }
        let removed = keep.iter().filter(|kept| !**kept).count();
        for series in kept.iter_mut() {
            series.total = new_id[series.total as usize];
            series.members = series
                .members
                .iter()
                .map(|member| new_id[*member as usize])
                .filter(|member| *member != u32::MAX)
                .collect();
        }
        self.series = kept;
        self.series_index.retain(|id| {
            *id = new_id[*id as usize];
            *id != u32::MAX
        });
        for ids in self.close_schedule.values_mut() {
            for id in ids.iter_mut() {
                *id = new_id[*id as usize];
            }
        }
        self.dirty = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|(id, minute)| (new_id[id as usize], minute))
            .collect();
        removed
    }
}

/// The hash of a series key, computed once per call.
fn series_hash(merchant: &str, api: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(merchant.as_bytes());
    hasher.write_u8(0xff);
    hasher.write(api.as_bytes());
    hasher.finish()
}
