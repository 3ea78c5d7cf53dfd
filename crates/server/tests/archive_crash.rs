//! SIGKILL at random points while the archive flushes constantly, and while it compacts: every
//! acknowledged event is found exactly once afterwards, and a batch in flight at a kill is
//! found whole or not at all.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mm_testkit::{ServerProcess, get, ingest, now_us, xorshift};
use mm_traffic::{GeneratedEvent, TrafficConfig, TrafficGenerator};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");
const BATCHES: usize = 300;
const PER_BATCH: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Acknowledged,
    Unknown,
}

/// A data directory with a storage configuration, for servers killed and started again.
struct Crashed {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    config: std::path::PathBuf,
}

impl Crashed {
    /// Tiny archive flushes (`flush_events`, or 100 ms), so that kills land during them.
    fn with_flushes_of(flush_events: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[storage]\narchive_flush_events = {flush_events}\narchive_flush_age = \"100ms\"\n"
            ),
        )
        .expect("config written");
        Self {
            _dir: dir,
            data,
            config,
        }
    }

    fn start(&self) -> ServerProcess {
        ServerProcess::start(
            EXE,
            &self.data,
            &["--config", self.config.to_str().expect("utf-8")],
            &[],
        )
    }
}

/// A random source seeded from the clock; the seed is printed to replay a failure.
fn seeded(test: &str) -> impl FnMut() -> u64 {
    let seed = now_us() as u64;
    println!("{test} seed {seed}");
    xorshift(seed)
}

#[test]
fn kill_nine_during_flushes_loses_and_duplicates_no_archived_event() {
    let mut random = seeded("archive crash test");
    let crashed = Crashed::with_flushes_of(250);
    let traffic = TrafficConfig {
        seed: 21,
        merchants: 30,
        start_ts_us: now_us() - 30 * 60_000_000,
        events_per_second: 50.0,
        ..TrafficConfig::default()
    };
    let events: Vec<GeneratedEvent> = TrafficGenerator::new(traffic)
        .take(BATCHES * PER_BATCH)
        .collect();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        events
            .chunks(PER_BATCH)
            .map(|chunk| {
                let mut body = Vec::new();
                chunk.iter().for_each(|event| event.write_ndjson(&mut body));
                body
            })
            .collect(),
    );
    let fates: Arc<Mutex<BTreeMap<usize, Fate>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut server = crashed.start();
    for round in 0..4 {
        let address = server.address;
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let (next, bodies, fates) = (next.clone(), bodies.clone(), fates.clone());
                std::thread::spawn(move || {
                    loop {
                        let batch = next.fetch_add(1, Ordering::SeqCst);
                        if batch >= BATCHES {
                            return;
                        }
                        let fate = loop {
                            match ingest(address, &bodies[batch]) {
                                Ok(response) if response.status == 200 => {
                                    break Fate::Acknowledged;
                                }
                                // Refused whole while the archive catches up: send it again,
                                // as a client honouring Retry-After would.
                                Ok(response) if response.status == 503 => {
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                                Ok(response) => {
                                    panic!("batch {batch}: unexpected {}", response.status)
                                }
                                Err(_) => break Fate::Unknown,
                            }
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
            senders
                .into_iter()
                .for_each(|sender| sender.join().expect("sender"));
            break;
        }
        std::thread::sleep(Duration::from_millis(50 + random() % 250));
        server.kill9();
        senders
            .into_iter()
            .for_each(|sender| sender.join().expect("sender"));
        server = crashed.start();
    }
    assert!(
        next.load(Ordering::SeqCst) >= BATCHES,
        "every batch was attempted"
    );
    let fates = fates.lock().expect("lock").clone();
    let unknown = fates
        .values()
        .filter(|fate| **fate == Fate::Unknown)
        .count();
    println!(
        "{} acknowledged, {unknown} in flight at a kill",
        fates.len() - unknown
    );
    assert_nothing_quarantined(&server);

    let seen = archived_counts(server.address, &events);
    for (batch, chunk) in events.chunks(PER_BATCH).enumerate() {
        let counts: Vec<usize> = chunk
            .iter()
            .map(|event| seen.get(&event.corr_id).copied().unwrap_or(0))
            .collect();
        match fates.get(&batch) {
            Some(Fate::Acknowledged) => assert!(
                counts.iter().all(|count| *count == 1),
                "acknowledged batch {batch}: {counts:?}"
            ),
            _ => assert!(
                counts.iter().all(|count| *count == 1) || counts.iter().all(|count| *count == 0),
                "in-flight batch {batch} found in part or twice: {counts:?}"
            ),
        }
    }
}

/// How many times each correlation id is archived, read back through the listing endpoint,
/// merchant by merchant, over the last three hours.
fn archived_counts(
    address: std::net::SocketAddr,
    events: &[GeneratedEvent],
) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let merchants: std::collections::BTreeSet<&str> =
        events.iter().map(|event| event.merchant.as_str()).collect();
    let from = mm_model::time::format_rfc3339(now_us() - 3 * 60 * 60_000_000).replace(':', "%3A");
    for merchant in merchants {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/merchants/{merchant}/events?from={from}&limit=1000");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = get(address, &path).json();
            for event in page["events"].as_array().expect("events") {
                *seen
                    .entry(event["corr_id"].as_str().expect("corr_id").to_owned())
                    .or_default() += 1;
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
    }
    seen
}

fn assert_nothing_quarantined(server: &ServerProcess) {
    let metrics = String::from_utf8(get(server.address, "/metrics").body).expect("utf-8");
    assert!(
        metrics.contains("mm_archive_quarantined_segments 0"),
        "no segment may be corrupt after kills"
    );
}

fn manifest_segments(data: &std::path::Path) -> usize {
    let manifest = std::fs::read(data.join("archive/MANIFEST.json")).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    manifest["segments"].as_array().expect("segments").len()
}

#[test]
fn kill_nine_during_compaction_loses_and_duplicates_no_archived_event() {
    let mut random = seeded("compaction crash test");
    // Tiny flushes: the finished hours end up in many small segments, which the archive
    // thread compacts as soon as a server starts.
    let crashed = Crashed::with_flushes_of(200);
    let data = &crashed.data;
    let hour = 3_600_000_000;
    let traffic = TrafficConfig {
        seed: 23,
        merchants: 30,
        // Inside the two hours before the current one, so both are finished.
        start_ts_us: (now_us() / hour - 2) * hour + 60_000_000,
        // 30,000 events over 5,000 s: all inside those two hours.
        events_per_second: 6.0,
        late_fraction: 0.0,
        ..TrafficConfig::default()
    };
    let events: Vec<GeneratedEvent> = TrafficGenerator::new(traffic)
        .take(BATCHES * PER_BATCH)
        .collect();
    // Rounds: ingest a quarter of the events (more small segments in the finished hours),
    // stop; start again, which compacts at once, and kill it somewhere in the middle.
    let mut rounds = Vec::new();
    for round in 0..4 {
        // Every fourth event: each round adds to both hours.
        let part: Vec<&GeneratedEvent> = events.iter().skip(round).step_by(4).collect();
        let server = crashed.start();
        for chunk in part.chunks(PER_BATCH) {
            let mut body = Vec::new();
            chunk.iter().for_each(|event| event.write_ndjson(&mut body));
            let accepted = mm_testkit::eventually(Duration::from_secs(10), || {
                let response = ingest(server.address, &body).expect("answers");
                (response.status == 200).then_some(())
            });
            assert!(accepted.is_some(), "a batch is accepted");
        }
        assert!(server.terminate(), "graceful stop");
        let before = manifest_segments(data);
        let server = crashed.start();
        std::thread::sleep(Duration::from_millis(random() % 300));
        server.kill9();
        rounds.push((before, manifest_segments(data)));
    }
    println!("segments before and after each killed start: {rounds:?}");
    assert!(
        rounds.iter().all(|(before, _)| *before >= 10),
        "many small segments to compact each round: {rounds:?}"
    );
    let server = crashed.start();
    let compacted = mm_testkit::eventually(Duration::from_secs(30), || {
        let segments = manifest_segments(data);
        (segments <= 2).then_some(segments)
    });
    assert!(
        compacted.is_some(),
        "the finished hours end up in one segment each ({} left)",
        manifest_segments(data)
    );
    assert_nothing_quarantined(&server);
    let seen = archived_counts(server.address, &events);
    let wrong: Vec<(&str, usize)> = events
        .iter()
        .map(|event| {
            let count = seen.get(&event.corr_id).copied().unwrap_or(0);
            (event.corr_id.as_str(), count)
        })
        .filter(|(_, count)| *count != 1)
        .take(5)
        .collect();
    assert!(wrong.is_empty(), "events not found exactly once: {wrong:?}");
    assert_eq!(seen.len(), events.len(), "nothing else is archived");
}
