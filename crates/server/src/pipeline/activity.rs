//! The activity stream: one record per closed (merchant, api, minute) window, and one per
//! correction, delivered at least once to every sink before the checkpoint that makes the
//! window final commits.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use mm_model::rollup::{Rollup, WindowKey};
use mm_model::time::{self, MICROS_PER_MINUTE};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// One activity record. `dedupe_key` is the same every time the same record is re-delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityRecord {
    pub merchant: String,
    pub api: String,
    pub window_start: String,
    pub window_end: String,
    pub calls: u64,
    pub status: BTreeMap<String, u64>,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub error_rate: f64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// True when this record replaces an earlier one for the same window (late data).
    pub correction: bool,
    pub dedupe_key: String,
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

impl ActivityRecord {
    pub fn new(key: &WindowKey, rollup: &Rollup, correction: bool) -> Self {
        let classes = rollup.classes();
        let start = key.minute * MICROS_PER_MINUTE;
        let quantile = |q: f64| round(rollup.quantile_ms(q).unwrap_or(0.0));
        // A final record is delivered once per window; each correction carries the new total,
        // so the call count tells successive corrections apart.
        let dedupe_key = if correction {
            format!(
                "{}|{}|{}|c{}",
                key.merchant, key.api, key.minute, rollup.calls
            )
        } else {
            format!("{}|{}|{}|final", key.merchant, key.api, key.minute)
        };
        Self {
            merchant: key.merchant.clone(),
            api: key.api.clone(),
            window_start: time::format_rfc3339(start),
            window_end: time::format_rfc3339(start + MICROS_PER_MINUTE),
            calls: rollup.calls,
            status: rollup
                .status
                .iter()
                .map(|(code, count)| (code.to_string(), *count))
                .collect(),
            status_2xx: classes.status_2xx,
            status_3xx: classes.status_3xx,
            status_4xx: classes.status_4xx,
            status_5xx: classes.status_5xx,
            error_rate: rollup.error_rate(),
            min_ms: round(rollup.latency_min_us as f64 / 1000.0),
            mean_ms: round(rollup.mean_ms().unwrap_or(0.0)),
            p50_ms: quantile(0.5),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
            max_ms: round(rollup.max_ms()),
            correction,
            dedupe_key,
        }
    }
}

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
    ) -> anyhow::Result<Self> {
        let file = match file {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                let handle = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening activity file {}", path.display()))?;
                Some((path.to_owned(), handle))
            }
            None => None,
        };
        Ok(Self { file, subscribers })
    }

    /// Delivers records; returns once the file sink has them on disk.
    pub fn emit(&mut self, records: &[ActivityRecord]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some((path, file)) = &mut self.file {
            let mut buffer = Vec::with_capacity(records.len() * 400);
            for record in records {
                serde_json::to_writer(&mut buffer, record).context("encoding activity record")?;
                buffer.push(b'\n');
            }
            file.write_all(&buffer)
                .and_then(|()| file.sync_data())
                .with_context(|| format!("writing activity file {}", path.display()))?;
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
