//! SIGKILL at random points during a replay, restart, and compare the stored rollups with a
//! plain fold over exactly the acknowledged events.
//!
//! Every batch uses its own API name, so the fate of each batch can be read back: a batch that
//! was acknowledged must be counted exactly once; a batch that was in flight when the server
//! died may be counted (it was durable before the ack could be sent) or not, but never in
//! part and never twice; a batch whose connection was refused never reached a server and must
//! not be counted. Each kill lands while the server is taking batches: it has acknowledged
//! some in that round, and at least one request is left without an answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mm_model::ApiCall;
use mm_model::rollup::MERCHANT_TOTAL_API;
use mm_model::time::{MICROS_PER_MINUTE, format_rfc3339, minute_of};
use mm_testkit::{
    ServerProcess, calls, eventually, get, ingest, ndjson_line, now_us, oracle, xorshift,
};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");
const BATCHES: usize = 600;
const PER_BATCH: usize = 150;
const MERCHANTS: usize = 4;
const KILLS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Acknowledged,
    /// Sent on an open connection that broke before the answer: stored or not.
    InFlight,
    /// The connection was refused: the batch never reached a server.
    NotSent,
}

/// What happened to one batch, and in which round (a server's life) it was sent.
type Fates = Arc<Mutex<BTreeMap<usize, (Fate, usize)>>>;

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
    let fates: Fates = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(bodies);

    let mut server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    // A kill that lands between two requests tested no crash: it does not count, and another
    // follows (at most twice as many kills as needed).
    let mut crashes = 0;
    let mut round = 0;
    loop {
        let address = server.address;
        let senders: Vec<_> = (0..3)
            .map(|_| {
                let (next, bodies, fates) = (next.clone(), bodies.clone(), fates.clone());
                let in_flight = in_flight.clone();
                std::thread::spawn(move || {
                    loop {
                        let batch = next.fetch_add(1, Ordering::SeqCst);
                        if batch >= BATCHES {
                            return;
                        }
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let answer = ingest(address, bodies[batch].as_bytes());
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        let fate = match answer {
                            Ok(response) if response.status == 200 => Fate::Acknowledged,
                            Ok(response) => panic!("batch {batch}: unexpected {}", response.status),
                            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                                Fate::NotSent
                            }
                            Err(_) => Fate::InFlight,
                        };
                        fates.lock().expect("lock").insert(batch, (fate, round));
                        if fate != Fate::Acknowledged {
                            return;
                        }
                    }
                })
            })
            .collect();
        if crashes == KILLS || round == 2 * KILLS {
            for sender in senders {
                sender.join().expect("sender finished");
            }
            break;
        }
        // Kill at a random point of the stream: after 10 to 49 acknowledgements in this
        // round (so at most ~330 of the 600 batches go before the last round, six kills at
        // most), while a request is being answered.
        let target = 10 + (rng() % 40) as usize;
        let acknowledged_in_round = || {
            fates
                .lock()
                .expect("lock")
                .values()
                .filter(|(fate, sent_in)| *fate == Fate::Acknowledged && *sent_in == round)
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while acknowledged_in_round() < target || in_flight.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: {} of {target} batches acknowledged in 120 s",
                acknowledged_in_round()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        server.kill9();
        for sender in senders {
            sender.join().expect("sender finished");
        }
        let interrupted = fates
            .lock()
            .expect("lock")
            .values()
            .filter(|(fate, sent_in)| *fate == Fate::InFlight && *sent_in == round)
            .count();
        if interrupted >= 1 {
            crashes += 1;
        } else {
            println!("kill {round} landed between two requests: it does not count");
        }
        round += 1;
        server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    }
    assert_eq!(
        crashes, KILLS,
        "{KILLS} kills interrupted a request ({round} kills in all)"
    );
    assert!(
        next.load(Ordering::SeqCst) >= BATCHES,
        "every batch was attempted"
    );

    let fates: BTreeMap<usize, Fate> = fates
        .lock()
        .expect("lock")
        .iter()
        .map(|(batch, (fate, _))| (*batch, *fate))
        .collect();
    let count = |wanted: Fate| fates.values().filter(|fate| **fate == wanted).count();
    println!(
        "{} acknowledged, {} in flight at a kill, {} refused",
        count(Fate::Acknowledged),
        count(Fate::InFlight),
        count(Fate::NotSent)
    );

    // Per-API totals for each merchant, read back once a checkpoint holds every acknowledged
    // batch (or the wait gives up and the comparison below says what is missing).
    let from = format_rfc3339((minute_of(now) - 15) * MICROS_PER_MINUTE).replace(':', "%3A");
    let to = format_rfc3339((minute_of(now) + 2) * MICROS_PER_MINUTE).replace(':', "%3A");
    let stored_per_api = || {
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
        stored_calls
    };
    let per_merchant = |batch: usize| {
        let mut per_merchant: BTreeMap<String, u64> = BTreeMap::new();
        for event in &batches[batch] {
            *per_merchant.entry(event.merchant.clone()).or_default() += 1;
        }
        per_merchant
    };
    let stored_of = |stored_calls: &BTreeMap<(String, String), u64>, batch: usize| {
        let api = format!("/crash/{batch:04}");
        per_merchant(batch)
            .into_iter()
            .map(|(merchant, want)| {
                let stored = stored_calls.get(&(merchant, api.clone())).copied();
                (stored.unwrap_or(0), want)
            })
            .collect::<Vec<(u64, u64)>>()
    };
    let stored_calls = eventually(Duration::from_secs(30), || {
        let stored_calls = stored_per_api();
        fates
            .iter()
            .filter(|(_, fate)| **fate == Fate::Acknowledged)
            .all(|(batch, _)| {
                stored_of(&stored_calls, *batch)
                    .iter()
                    .all(|(stored, want)| stored == want)
            })
            .then_some(stored_calls)
    })
    .unwrap_or_else(stored_per_api);
    let mut included = Vec::new();
    for batch in 0..batches.len() {
        let (stored, want): (Vec<u64>, Vec<u64>) =
            stored_of(&stored_calls, batch).into_iter().unzip();
        let absent = stored.iter().all(|calls| *calls == 0);
        match fates.get(&batch) {
            Some(Fate::Acknowledged) => {
                assert_eq!(
                    stored, want,
                    "acknowledged batch {batch} must be counted exactly once"
                );
                included.push(batch);
            }
            Some(Fate::InFlight) => {
                assert!(
                    stored == want || absent,
                    "in-flight batch {batch} counted partly: {stored:?} of {want:?}"
                );
                if !absent {
                    included.push(batch);
                }
            }
            Some(Fate::NotSent) | None => {
                assert!(
                    absent,
                    "batch {batch} was never sent but counted: {stored:?}"
                );
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
