//! The demo's built-in traffic.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use mm_traffic::{TrafficConfig, TrafficGenerator};

use crate::config::Config;
use crate::http::AppState;
use mm_model::time::now_us;

/// Settings of the demo generator.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    pub rate: f64,
    pub merchants: usize,
    pub seed: u64,
    /// History generated and imported before the server starts, on an empty data directory.
    pub backfill: Duration,
}

/// On an empty data directory: generates `options.backfill` of traffic up to now, at the live
/// rate, and imports it (the `import` path), so the dashboard has history from the first look.
/// Skipped when the directory already holds a store.
pub fn backfill(config: &Config, options: DemoOptions) -> anyhow::Result<()> {
    if options.backfill.is_zero() || config.data_dir.join("store").exists() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let end = now_us() - 60_000_000;
    let history = TrafficConfig {
        seed: options.seed.wrapping_add(1),
        merchants: options.merchants,
        start_ts_us: end - options.backfill.as_micros() as i64,
        events_per_second: options.rate,
        ..TrafficConfig::default()
    };
    let dir = config.data_dir.join("import");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("demo-history.ndjson.zst");
    tracing::info!(
        hours = options.backfill.as_secs_f64() / 3600.0,
        rate = options.rate,
        "demo: generating history for an empty data directory"
    );
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = zstd::stream::write::Encoder::new(std::io::BufWriter::new(file), 1)
        .context("starting zstd")?;
    let mut line = Vec::with_capacity(512);
    let mut events = 0u64;
    for event in TrafficGenerator::new(history) {
        if event.ts_us >= end {
            break;
        }
        line.clear();
        event.write_ndjson(&mut line);
        writer.write_all(&line).context("writing the history")?;
        events += 1;
    }
    writer
        .finish()
        .and_then(|mut inner| inner.flush())
        .context("writing the history")?;
    let options = crate::import::import_options(config);
    let source = mm_import::Source::new(&path)?;
    let (store, archive) = mm_import::open(&config.data_dir)?;
    let outcome = mm_import::import_file(
        &source,
        &options,
        &store,
        &archive,
        &mm_import::Progress::default(),
    )?;
    drop((store, archive));
    let _ = std::fs::remove_file(&path);
    tracing::info!(
        events,
        imported = outcome.progress.accepted,
        seconds = started.elapsed().as_secs_f64(),
        "demo: history imported"
    );
    Ok(())
}

/// Feeds live generated traffic through the same ingest path as HTTP requests, each event
/// released at its arrival time.
pub async fn generate(state: Arc<AppState>, options: DemoOptions) {
    let config = TrafficConfig {
        seed: options.seed,
        merchants: options.merchants,
        start_ts_us: now_us(),
        events_per_second: options.rate,
        ..TrafficConfig::default()
    };
    let mut generator = TrafficGenerator::new(config);
    let mut pending = generator.next();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut body = Vec::with_capacity(1 << 20);
    loop {
        ticker.tick().await;
        let now = now_us();
        body.clear();
        while let Some(event) = &pending {
            if event.arrival_us > now || body.len() > 4 << 20 {
                break;
            }
            event.write_ndjson(&mut body);
            pending = generator.next();
        }
        if body.is_empty() {
            continue;
        }
        match state
            .ingestor
            .ingest(None, &body, &mut state.budget.reservation())
            .await
        {
            Ok(mm_ingest::IngestAnswer::Fresh(reply)) if reply.rejected > 0 => {
                tracing::warn!(rejected = reply.rejected, first = ?reply.errors.first(), "demo records rejected");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "demo batch refused; retrying with the next tick"),
        }
    }
}
