//! The publish benchmark: the event gateway end to end against a child server (validation
//! against a 12-field schema with enums and nested objects, partitioning, durable append),
//! batches of 500, 8 in flight; `/v1/ingest` of as many API-call records in batches of 500 in
//! the same run, alternating; validation alone per event, in process; and publish latency at a
//! paced 20,000 events/s.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::child::ChildServer;
use super::{BenchArgs, median, percentile};

pub(super) type HttpClient = Client<HttpConnector, Full<Bytes>>;

const BATCH: usize = 500;
const IN_FLIGHT: usize = 8;
pub(super) const TYPE_NAME: &str = "payment.settled";

/// The benchmark's event type: 12 fields, enums, nested objects.
pub fn definition() -> Value {
    json!({
        "owning_application": "bench",
        "category": "business",
        "partition_key_fields": ["/payment_id"],
        "partitions": 8,
        "schema": {
            "type": "object",
            "properties": {
                "payment_id": {"type": "string", "minLength": 8, "maxLength": 40},
                "merchant": {"type": "string", "maxLength": 64},
                "amount": {"type": "number", "minimum": 0},
                "currency": {"enum": ["EUR", "USD", "GBP", "SEK", "JPY"]},
                "method": {"enum": ["card", "sepa", "ideal", "paypal", "klarna"]},
                "status": {"enum": ["settled", "partially_settled"]},
                "fee": {"type": "integer", "minimum": 0},
                "captured_at": {"type": "string"},
                "card": {
                    "type": "object",
                    "properties": {
                        "brand": {"enum": ["visa", "mastercard", "amex"]},
                        "last4": {"type": "string", "pattern": "^[0-9]{4}$"},
                        "country": {"type": "string", "minLength": 2, "maxLength": 2}
                    },
                    "required": ["brand", "last4"],
                    "additionalProperties": false
                },
                "customer": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "segment": {"enum": ["consumer", "business"]}
                    },
                    "required": ["id"]
                },
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
                "attempt": {"type": "integer", "minimum": 1, "maximum": 10}
            },
            "required": ["payment_id", "merchant", "amount", "currency", "method", "status"],
            "additionalProperties": false
        }
    })
}

/// The `number`th benchmark event.
pub fn event(number: u64) -> Value {
    const CURRENCIES: [&str; 5] = ["EUR", "USD", "GBP", "SEK", "JPY"];
    const METHODS: [&str; 5] = ["card", "sepa", "ideal", "paypal", "klarna"];
    const BRANDS: [&str; 3] = ["visa", "mastercard", "amex"];
    json!({
        "metadata": {
            "eid": format!("{:08x}-0000-4000-8000-{:012x}", number >> 48, number & 0xffff_ffff_ffff),
            "occurred_at": "2026-12-01T10:00:00.123456Z"
        },
        "payment_id": format!("pay_{number:012}"),
        "merchant": format!("Merchant{}", number % 997),
        "amount": (number % 100_000) as f64 / 100.0,
        "currency": CURRENCIES[(number % 5) as usize],
        "method": METHODS[(number / 5 % 5) as usize],
        "status": if number.is_multiple_of(11) { "partially_settled" } else { "settled" },
        "fee": number % 250,
        "captured_at": "2026-12-01T09:59:58Z",
        "card": {"brand": BRANDS[(number % 3) as usize], "last4": format!("{:04}", number % 10_000), "country": "NL"},
        "customer": {"id": format!("cus_{}", number % 50_000), "segment": if number.is_multiple_of(4) { "business" } else { "consumer" }},
        "tags": ["bench", "settlement"],
        "attempt": 1 + number % 3
    })
}

pub(super) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub(super) async fn send(
    client: &HttpClient,
    method: &str,
    url: &str,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Posts every body to `url`, `IN_FLIGHT` at a time; every answer must be a 200 (retried on
/// 429/503). Returns the elapsed time.
pub(super) async fn post_all(
    client: &HttpClient,
    url: &str,
    bodies: Arc<Vec<Bytes>>,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (client, url, bodies, next) =
            (client.clone(), url.to_owned(), bodies.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(body) = bodies.get(index) else {
                    return Ok::<(), anyhow::Error>(());
                };
                loop {
                    let (status, answer) = send(&client, "POST", &url, body.clone()).await?;
                    match status {
                        200 => break,
                        429 | 503 => tokio::time::sleep(Duration::from_millis(20)).await,
                        other => bail!(
                            "{url} answered {other}: {}",
                            String::from_utf8_lossy(&answer)
                        ),
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(started.elapsed())
}

pub(super) fn publish_batches(events: u64) -> Vec<Bytes> {
    (0..events.div_ceil(BATCH as u64))
        .map(|batch| {
            let first = batch * BATCH as u64;
            let last = (first + BATCH as u64).min(events);
            Bytes::from(Value::Array((first..last).map(event).collect()).to_string())
        })
        .collect()
}

/// API-call records in NDJSON batches of 500, their times ending now.
pub(super) fn ingest_batches(work_dir: &Path, events: u64) -> anyhow::Result<Vec<Bytes>> {
    let path = work_dir.join(format!("publish-ingest-{events}.ndjson"));
    let rate = 200_000.0;
    let config = mm_traffic::TrafficConfig {
        seed: 17,
        start_ts_us: mm_model::time::now_us() - (events as f64 / rate * 1e6) as i64,
        events_per_second: rate,
        ..mm_traffic::TrafficConfig::default()
    };
    crate::dataset::write_gen(config, events, &path)?;
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&[u8]> = text
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    Ok(lines
        .chunks(BATCH)
        .map(|chunk| Bytes::from(chunk.join(&b'\n')))
        .collect())
}

/// Validation (and partitioning and enriching) alone, in process: nanoseconds per event.
fn validation_ns(events: u64) -> anyhow::Result<(f64, f64, f64)> {
    let dir = tempfile_dir()?;
    let gateway = mm_gateway::Gateway::open_embedded(&dir)?;
    let definition: mm_gateway::EventTypeDefinition = serde_json::from_value(definition())?;
    gateway.registry.put(TYPE_NAME, definition, 0)?;
    let registered = gateway.registry.get(TYPE_NAME)?;
    let batches = publish_batches(events);
    let options = mm_gateway::PublishOptions {
        atomic: false,
        flow_id: "bench".into(),
        now_us: mm_model::time::now_us(),
        trace: None,
    };
    let started = Instant::now();
    let mut accepted = 0;
    for batch in &batches {
        let prepared = mm_gateway::publish::prepare(&registered, batch, &options)?;
        accepted += prepared.records.len();
    }
    let prepare_ns = started.elapsed().as_nanos() as f64 / events as f64;
    if accepted as u64 != events {
        bail!("{accepted} of {events} benchmark events passed validation");
    }
    // The schema check alone, on already parsed events without their metadata.
    let parsed: Vec<Value> = (0..events.min(100_000))
        .map(|number| {
            let mut event = event(number);
            if let Some(object) = event.as_object_mut() {
                object.remove("metadata");
            }
            event
        })
        .collect();
    let started = Instant::now();
    let valid = parsed
        .iter()
        .filter(|event| registered.validator.is_valid(event))
        .count();
    let validate_ns = started.elapsed().as_nanos() as f64 / parsed.len() as f64;
    if valid != parsed.len() {
        bail!("{valid} of {} parsed events are valid", parsed.len());
    }
    // The fast path's check, on the events' text (what publishing runs).
    let texts: Vec<String> = (0..events.min(100_000))
        .map(|number| event(number).to_string())
        .collect();
    let fast = registered
        .fast
        .as_ref()
        .context("the benchmark schema compiles for the fast path")?;
    let started = Instant::now();
    let accepted = texts
        .iter()
        .filter(|text| fast.accepts(text.as_bytes()))
        .count();
    let fast_ns = started.elapsed().as_nanos() as f64 / texts.len() as f64;
    if accepted != texts.len() {
        bail!(
            "the fast path accepted {accepted} of {} events",
            texts.len()
        );
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((prepare_ns, validate_ns, fast_ns))
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("mm-bench-publish-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Publishes at a paced `rate` events/s for `seconds`; the request latencies in ms.
async fn paced_latencies(
    client: &HttpClient,
    url: &str,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<Vec<f64>> {
    let batches = (rate * seconds / BATCH as f64) as u64;
    let interval = Duration::from_secs_f64(BATCH as f64 / rate);
    let bodies = publish_batches(batches * BATCH as u64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, body) in bodies.into_iter().enumerate() {
        let due = started + interval * index as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let (status, answer) = send(&client, "POST", &url, body).await?;
            if status != 200 {
                bail!(
                    "paced publish answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            Ok(sent.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.push(task.await??);
    }
    Ok(latencies)
}

/// Against a fresh server at `url`: registers the benchmark type and publishes every body
/// (`publishing`), or ingests every API-call body. Returns the elapsed time of the posts.
pub(super) async fn post_workload(
    client: &HttpClient,
    url: &str,
    publishing: bool,
    publish_bodies: &Arc<Vec<Bytes>>,
    ingest_bodies: &Arc<Vec<Bytes>>,
) -> anyhow::Result<Duration> {
    if !publishing {
        return post_all(client, &format!("{url}/v1/ingest"), ingest_bodies.clone()).await;
    }
    let (status, answer) = send(
        client,
        "PUT",
        &format!("{url}/v1/event-types/{TYPE_NAME}"),
        Bytes::from(definition().to_string()),
    )
    .await?;
    if status != 201 {
        bail!(
            "registering the type answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    post_all(
        client,
        &format!("{url}/v1/event-types/{TYPE_NAME}/events"),
        publish_bodies.clone(),
    )
    .await
}

pub(super) fn bench_publish(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let events = args.events;
    let publish_bodies = Arc::new(publish_batches(events));
    let ingest_bodies = Arc::new(ingest_batches(work_dir, events)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = client();
    let mut publish_rates = Vec::new();
    let mut ingest_rates = Vec::new();
    for round in 0..args.runs.max(1) {
        for publishing in [true, false] {
            let data_dir = work_dir.join("publish-data");
            let _ = std::fs::remove_dir_all(&data_dir);
            let server = ChildServer::start(&data_dir, None)?;
            let elapsed = runtime.block_on(post_workload(
                &client,
                &server.url,
                publishing,
                &publish_bodies,
                &ingest_bodies,
            ))?;
            server.stop()?;
            let rate = events as f64 / elapsed.as_secs_f64();
            println!(
                "publish: round {}: {} {events} events in {:.2} s: {rate:.0} events/s",
                round + 1,
                if publishing { "publish" } else { "ingest " },
                elapsed.as_secs_f64()
            );
            if publishing {
                &mut publish_rates
            } else {
                &mut ingest_rates
            }
            .push(rate);
        }
    }
    let publish = median(&mut publish_rates);
    let ingest = median(&mut ingest_rates);
    println!(
        "publish: {events} events of a 12-field schema in batches of {BATCH}, {IN_FLIGHT} in flight, durable acks: median {publish:.0} events/s; /v1/ingest of as many API-call records in batches of {BATCH}, same run: median {ingest:.0} events/s; ratio publish/ingest {:.2}",
        publish / ingest
    );

    let (prepare_ns, validate_ns, fast_ns) = validation_ns(events.min(200_000))?;
    println!(
        "publish: in process, per event: parse + validate + partition + enrich {prepare_ns:.0} ns; the schema check alone: fast path on the text {fast_ns:.0} ns, jsonschema on a parsed value {validate_ns:.0} ns"
    );

    let data_dir = work_dir.join("publish-data");
    let _ = std::fs::remove_dir_all(&data_dir);
    let server = ChildServer::start(&data_dir, None)?;
    let mut latencies = runtime.block_on(async {
        send(
            &client,
            "PUT",
            &format!("{}/v1/event-types/{TYPE_NAME}", server.url),
            Bytes::from(definition().to_string()),
        )
        .await?;
        paced_latencies(
            &client,
            &format!("{}/v1/event-types/{TYPE_NAME}/events", server.url),
            20_000.0,
            10.0,
        )
        .await
    })?;
    server.stop()?;
    latencies.sort_by(f64::total_cmp);
    println!(
        "publish: paced at 20,000 events/s for 10 s (batches of {BATCH}): latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    Ok(())
}
