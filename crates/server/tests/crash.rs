//! SIGKILL at random points during a replay, restart, and compare the stored rollups with a
//! plain fold over exactly the acknowledged events.
//!
//! Every batch uses its own API name, so the fate of each batch can be read back: a batch that
//! was acknowledged must be counted exactly once; a batch that was in flight when the server
//! died may be counted (it was durable before the ack could be sent) or not, but never in
//! part and never twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mm_model::ApiCall;
use mm_model::rollup::MERCHANT_TOTAL_API;
use mm_model::time::{MICROS_PER_MINUTE, format_rfc3339, minute_of};
use mm_testkit::{ServerProcess, calls, get, ingest, ndjson_line, now_us, oracle, xorshift};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");
const BATCHES: usize = 600;
const PER_BATCH: usize = 150;
const MERCHANTS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Acknowledged,
    Unknown,
}

fn batch_events(batch: usize, now: i64) -> Vec<ApiCall> {
    let api = format!("/crash/{batch:04}");
    // Spread over the last ten minutes: some windows close (and take corrections) meanwhile.
    calls(
        1000 + batch as u64,
        PER_BATCH,
        MERCHANTS,
        &[api.as_str()],
        now,
        10,
    )
}

#[test]
fn kill_nine_at_random_points_loses_and_doubles_nothing() {
    let seed = now_us() as u64;
    println!("crash test seed {seed}");
    let mut rng = xorshift(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let now = now_us();
    let batches: Vec<Vec<ApiCall>> = (0..BATCHES).map(|batch| batch_events(batch, now)).collect();
    let bodies: Vec<String> = batches
        .iter()
        .map(|events| events.iter().map(ndjson_line).collect())
        .collect();
    let fates: Arc<Mutex<BTreeMap<usize, Fate>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(bodies);

    let mut server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    for round in 0..4 {
        let address = server.address;
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let (next, bodies, fates) = (next.clone(), bodies.clone(), fates.clone());
                std::thread::spawn(move || {
                    loop {
                        let batch = next.fetch_add(1, Ordering::SeqCst);
                        if batch >= BATCHES {
                            return;
                        }
                        let fate = match ingest(address, bodies[batch].as_bytes()) {
                            Ok(response) if response.status == 200 => Fate::Acknowledged,
                            Ok(response) => panic!("batch {batch}: unexpected {}", response.status),
                            Err(_) => Fate::Unknown,
                        };
                        fates.lock().expect("lock").insert(batch, fate);
                        if fate == Fate::Unknown {
                            return;
                        }
                    }
                })
            })
            .collect();
        if round == 3 {
            for sender in senders {
                sender.join().expect("sender finished");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50 + rng() % 300));
        server.kill9();
        for sender in senders {
            sender.join().expect("sender finished");
        }
        server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    }
    assert!(
        next.load(Ordering::SeqCst) >= BATCHES,
        "every batch was attempted"
    );

    let fates = fates.lock().expect("lock").clone();
    let unknown: BTreeSet<usize> = fates
        .iter()
        .filter(|(_, fate)| **fate == Fate::Unknown)
        .map(|(batch, _)| *batch)
        .collect();
    println!(
        "{} acknowledged, {} in flight at a kill",
        fates.len() - unknown.len(),
        unknown.len()
    );

    // Read back per-API totals for each merchant (two checkpoint intervals after the last ack).
    std::thread::sleep(Duration::from_millis(4_500));
    let from = format_rfc3339((minute_of(now) - 15) * MICROS_PER_MINUTE).replace(':', "%3A");
    let to = format_rfc3339((minute_of(now) + 2) * MICROS_PER_MINUTE).replace(':', "%3A");
    let mut stored_calls: BTreeMap<(String, String), u64> = BTreeMap::new();
    for merchant in 0..MERCHANTS {
        let answer = get(
            server.address,
            &format!("/v1/merchants/m{merchant}/apis?from={from}&to={to}"),
        )
        .json();
        for row in answer["apis"].as_array().expect("apis") {
            stored_calls.insert(
                (
                    format!("m{merchant}"),
                    row["api"].as_str().expect("api").to_owned(),
                ),
                row["calls"].as_u64().expect("calls"),
            );
        }
    }
    let mut included = Vec::new();
    for (batch, events) in batches.iter().enumerate() {
        let mut per_merchant: BTreeMap<String, u64> = BTreeMap::new();
        for event in events {
            *per_merchant.entry(event.merchant.clone()).or_default() += 1;
        }
        let api = format!("/crash/{batch:04}");
        let stored: Vec<u64> = per_merchant
            .keys()
            .map(|merchant| {
                stored_calls
                    .get(&(merchant.clone(), api.clone()))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        let want: Vec<u64> = per_merchant.values().copied().collect();
        let absent = stored.iter().all(|calls| *calls == 0);
        match fates.get(&batch) {
            Some(Fate::Acknowledged) => {
                assert_eq!(
                    stored, want,
                    "acknowledged batch {batch} must be counted exactly once"
                );
                included.push(batch);
            }
            Some(Fate::Unknown) | None => {
                assert!(
                    stored == want || absent,
                    "in-flight batch {batch} counted partly: {stored:?} of {want:?}"
                );
                if !absent {
                    included.push(batch);
                }
            }
        }
    }

    // Exactness per minute, percentiles included: the merchant series against the fold.
    let expected = oracle(included.iter().flat_map(|batch| batches[*batch].iter()));
    for merchant in 0..MERCHANTS {
        let merchant = format!("m{merchant}");
        let answer = get(
            server.address,
            &format!("/v1/merchants/{merchant}/activity?from={from}&to={to}&step=1m"),
        )
        .json();
        for bucket in answer["buckets"].as_array().expect("buckets") {
            let start = mm_model::time::parse_rfc3339(bucket["start"].as_str().expect("start"))
                .expect("time");
            let key = mm_model::WindowKey {
                merchant: merchant.clone(),
                api: MERCHANT_TOTAL_API.into(),
                minute: minute_of(start),
            };
            let (calls, p50, max) = match expected.get(&key) {
                Some(rollup) => (rollup.calls, rollup.quantile_ms(0.5), Some(rollup.max_ms())),
                None => (0, None, None),
            };
            assert_eq!(
                bucket["calls"].as_u64(),
                Some(calls),
                "{merchant} at {start}"
            );
            let round = |value: f64| (value * 1000.0).round() / 1000.0;
            assert_eq!(
                bucket["p50_ms"].as_f64(),
                p50.map(round),
                "{merchant} p50 at {start}"
            );
            assert_eq!(
                bucket["max_ms"].as_f64(),
                max.map(round),
                "{merchant} max at {start}"
            );
        }
    }
    let started = Instant::now();
    assert!(server.terminate(), "clean shutdown after the crashes");
    assert!(started.elapsed() < Duration::from_secs(30));
}
