//! The demo's built-in traffic.

use std::sync::Arc;
use std::time::Duration;

use mm_traffic::{TrafficConfig, TrafficGenerator};

use crate::http::AppState;
use mm_model::time::now_us;

/// Settings of the demo generator.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    pub rate: f64,
    pub merchants: usize,
    pub seed: u64,
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
