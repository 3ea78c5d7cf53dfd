//! `replay FILE --to URL`: sends an NDJSON file to an ingest endpoint in batches, several in
//! flight, honouring 429/503 `Retry-After`, with a progress bar and a final events/s figure.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args, Clone)]
pub struct ReplayArgs {
    /// NDJSON file to send.
    pub file: PathBuf,
    /// Server base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub to: String,
    /// Records per request.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Bearer token.
    #[arg(long, env = "MM_TOKEN")]
    pub token: Option<String>,
    /// Stop after this many seconds (the file is sent again from the start while time remains
    /// when `--loop` is given).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Send the file repeatedly until `--duration` has passed.
    #[arg(long = "loop", requires = "duration")]
    pub repeat: bool,
    /// With `--loop`: move the event times of each repetition forward by the file's time span,
    /// so the server sees time go on and windows close as with live traffic instead of every
    /// repetition arriving late. Applies to RFC 3339 `"ts"` fields.
    #[arg(long, requires = "repeat")]
    pub shift_time: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Send each batch with its own `Idempotency-Key`, the same on every retry of it: a batch
    /// whose answer was lost is then stored once.
    #[arg(long)]
    pub idempotency_keys: bool,
}

/// Totals of a replay.
#[derive(Debug, Default)]
pub struct ReplayStats {
    pub sent_records: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub retries: AtomicU64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn ingest_url(base: &str) -> anyhow::Result<hyper::Uri> {
    let base = base.trim_end_matches('/');
    let url = if base.ends_with("/v1/ingest") {
        base.to_owned()
    } else {
        format!("{base}/v1/ingest")
    };
    url.parse()
        .with_context(|| format!("--to {base:?} is not a URL"))
}

async fn send(
    client: &HttpClient,
    url: &hyper::Uri,
    (token, key): (Option<&str>, Option<&str>),
    body: Bytes,
    stats: &ReplayStats,
) -> anyhow::Result<()> {
    loop {
        let mut request = Request::post(url.clone()).header("content-type", "application/x-ndjson");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = client
            .request(
                request
                    .body(Full::new(body.clone()))
                    .context("building request")?,
            )
            .await
            .context("sending batch")?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        let payload = response
            .into_body()
            .collect()
            .await
            .context("reading response")?
            .to_bytes();
        match status {
            StatusCode::OK | StatusCode::MULTI_STATUS => {
                let reply: serde_json::Value =
                    serde_json::from_slice(&payload).context("decoding response")?;
                stats
                    .accepted
                    .fetch_add(reply["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                stats
                    .rejected
                    .fetch_add(reply["rejected"].as_u64().unwrap_or(0), Ordering::Relaxed);
                return Ok(());
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(retry_after.unwrap_or(1).min(5) * 200))
                    .await;
            }
            other => bail!(
                "server answered {other}: {}",
                String::from_utf8_lossy(&payload)
            ),
        }
    }
}

/// Where the RFC 3339 text of a line's `"ts"` field lies.
fn ts_text(line: &[u8]) -> Option<(usize, usize)> {
    const FIELD: &[u8] = b"\"ts\":\"";
    let start = memchr::memmem::find(line, FIELD)? + FIELD.len();
    let end = start + memchr::memchr(b'"', &line[start..])?;
    Some((start, end))
}

fn event_time(line: &[u8]) -> Option<i64> {
    let (start, end) = ts_text(line)?;
    mm_model::time::parse_rfc3339(std::str::from_utf8(&line[start..end]).ok()?).ok()
}

/// Event times from the first to the last (µs) of the file's lines, inclusive.
fn time_span(batches: &[(Bytes, u64)]) -> Option<i64> {
    let mut range: Option<(i64, i64)> = None;
    for (body, _) in batches {
        for line in body.split(|byte| *byte == b'\n') {
            if let Some(ts) = event_time(line) {
                let (low, high) = range.get_or_insert((ts, ts));
                *low = (*low).min(ts);
                *high = (*high).max(ts);
            }
        }
    }
    range.map(|(low, high)| high - low + 1)
}

/// A batch with every `"ts"` moved `shift_us` forward; lines without one are sent as they are.
fn shift_batch(body: &[u8], shift_us: i64) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + body.len() / 16);
    let mut text = String::with_capacity(32);
    for line in body.split_inclusive(|byte| *byte == b'\n') {
        let shifted = ts_text(line).and_then(|(start, end)| {
            let ts =
                mm_model::time::parse_rfc3339(std::str::from_utf8(&line[start..end]).ok()?).ok()?;
            text.clear();
            mm_model::time::write_rfc3339(ts + shift_us, &mut text);
            Some((start, end))
        });
        match shifted {
            Some((start, end)) => {
                out.extend_from_slice(&line[..start]);
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(&line[end..]);
            }
            None => out.extend_from_slice(line),
        }
    }
    Bytes::from(out)
}

/// Reads the file into batches of `batch` lines (the file is read once, then re-sent when
/// looping).
fn read_batches(path: &PathBuf, batch: usize) -> anyhow::Result<Vec<(Bytes, u64)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut batches = Vec::new();
    let mut current = Vec::with_capacity(batch * 320);
    let mut lines = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            break;
        }
        current.extend_from_slice(&line);
        if !line.ends_with(b"\n") {
            current.push(b'\n');
        }
        lines += 1;
        if (lines as usize).is_multiple_of(batch) {
            batches.push((Bytes::from(std::mem::take(&mut current)), batch as u64));
        }
    }
    let rest = lines % batch as u64;
    if rest > 0 {
        batches.push((Bytes::from(current), rest));
    }
    Ok(batches)
}

/// Sends the file; prints the rate. Returns the stats and elapsed time.
pub async fn replay(args: &ReplayArgs) -> anyhow::Result<(Arc<ReplayStats>, Duration)> {
    let url = ingest_url(&args.to)?;
    let batches = Arc::new(read_batches(&args.file, args.batch.max(1))?);
    let total_records: u64 = batches.iter().map(|(_, count)| count).sum();
    if total_records == 0 {
        bail!("{} holds no records", args.file.display());
    }
    let span_us = match args.shift_time {
        true => Some(time_span(&batches).with_context(|| {
            format!(
                "--shift-time: {} has no RFC 3339 \"ts\" field",
                args.file.display()
            )
        })?),
        false => None,
    };
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build_http();
    let stats = Arc::new(ReplayStats::default());
    let progress = if args.quiet || args.repeat {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total_records)
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let next = Arc::new(AtomicU64::new(0));
    let deadline = args
        .duration
        .map(|seconds| Instant::now() + Duration::from_secs(seconds));
    let started = Instant::now();
    // Unique per batch of this run: the run's start and the batch's sequence number.
    let key_prefix = args
        .idempotency_keys
        .then(|| format!("replay-{}-{}", std::process::id(), mm_model::time::now_us()));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, url, batches, stats, next, progress) = (
            client.clone(),
            url.clone(),
            batches.clone(),
            stats.clone(),
            next.clone(),
            progress.clone(),
        );
        let token = args.token.clone();
        let repeat = args.repeat;
        let keys = key_prefix.clone();
        workers.push(tokio::spawn(async move {
            loop {
                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    return Ok::<(), anyhow::Error>(());
                }
                let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                if index >= batches.len() && !repeat {
                    return Ok(());
                }
                let (body, count) = &batches[index % batches.len()];
                let pass = (index / batches.len()) as i64;
                let body = match span_us {
                    Some(span_us) if pass > 0 => shift_batch(body, pass * span_us),
                    _ => body.clone(),
                };
                let key = keys.as_ref().map(|prefix| format!("{prefix}-{index}"));
                send(
                    &client,
                    &url,
                    (token.as_deref(), key.as_deref()),
                    body,
                    &stats,
                )
                .await?;
                stats.sent_records.fetch_add(*count, Ordering::Relaxed);
                progress.inc(*count);
            }
        }));
    }
    for worker in workers {
        worker.await.context("replay worker")??;
    }
    progress.finish_and_clear();
    Ok((stats, started.elapsed()))
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let (stats, elapsed) = replay(&args).await?;
    let sent = stats.sent_records.load(Ordering::Relaxed);
    println!(
        "replayed {sent} events in {:.2} s: {:.0} events/s (accepted {}, rejected {}, retried requests {})",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        stats.accepted.load(Ordering::Relaxed),
        stats.rejected.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifting_moves_only_the_event_time() {
        let body = b"{\"ts\":\"2026-11-21T15:00:00.025108Z\",\"merchant\":\"M\"}\n{\"no_time\":1}\n{\"a\":1,\"ts\":\"2026-11-21T15:00:59Z\"}\n";
        let batches = vec![(Bytes::from_static(body), 3)];
        let span = time_span(&batches).expect("a span");
        assert_eq!(span, 58_974_892 + 1);
        let shifted = shift_batch(body, 60_000_000);
        assert_eq!(
            std::str::from_utf8(&shifted).expect("text"),
            "{\"ts\":\"2026-11-21T15:01:00.025108Z\",\"merchant\":\"M\"}\n{\"no_time\":1}\n{\"a\":1,\"ts\":\"2026-11-21T15:01:59.000Z\"}\n"
        );
    }
}
