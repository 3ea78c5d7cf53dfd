//! SIGKILL at random points while the archive flushes constantly, and while it compacts: every
//! acknowledged event is found exactly once afterwards, a batch in flight at a kill is found
//! whole or not at all, and a batch whose connection was refused is not found. Each kill
//! lands while a request is unanswered and after the archive has flushed in that round, or
//! while a compaction is under way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mm_testkit::{ServerProcess, get, ingest, metric_value, now_us, xorshift};
use mm_traffic::{GeneratedEvent, TrafficConfig, TrafficGenerator};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");
const BATCHES: usize = 300;
/// Kills during flushes that must each interrupt a request.
const FLUSH_KILLS: usize = 3;
const PER_BATCH: usize = 100;
/// Starts killed during a compaction.
const ROUNDS: usize = 6;

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
    let fates: Fates = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut server = crashed.start();
    // A kill that lands between two requests tested no crash: it does not count, and another
    // follows (at most twice as many kills as needed).
    let mut crashes = 0;
    let mut round = 0;
    loop {
        let address = server.address;
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let (next, bodies, fates) = (next.clone(), bodies.clone(), fates.clone());
                let in_flight = in_flight.clone();
                std::thread::spawn(move || {
                    loop {
                        let batch = next.fetch_add(1, Ordering::SeqCst);
                        if batch >= BATCHES {
                            return;
                        }
                        let fate = loop {
                            in_flight.fetch_add(1, Ordering::SeqCst);
                            let answer = ingest(address, &bodies[batch]);
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            match answer {
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
                                Err(error)
                                    if error.kind() == std::io::ErrorKind::ConnectionRefused =>
                                {
                                    break Fate::NotSent;
                                }
                                Err(_) => break Fate::InFlight,
                            }
                        };
                        fates.lock().expect("lock").insert(batch, (fate, round));
                        if fate != Fate::Acknowledged {
                            return;
                        }
                    }
                })
            })
            .collect();
        if crashes == FLUSH_KILLS || round == 2 * FLUSH_KILLS {
            senders
                .into_iter()
                .for_each(|sender| sender.join().expect("sender"));
            break;
        }
        // Kill at a random point of the stream: after 5 to 29 acknowledgements in this round
        // and a flush that moved the manifest on, while a request is being answered.
        let archived_at_start = archived_rows(&crashed.data);
        let target = 5 + (random() % 25) as usize;
        let acknowledged_in_round = || {
            fates
                .lock()
                .expect("lock")
                .values()
                .filter(|(fate, sent_in)| *fate == Fate::Acknowledged && *sent_in == round)
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while acknowledged_in_round() < target
            || archived_rows(&crashed.data) == archived_at_start
            || in_flight.load(Ordering::SeqCst) == 0
        {
            assert!(
                Instant::now() < deadline && next.load(Ordering::SeqCst) < BATCHES,
                "round {round}: no kill point ({} of {target} acknowledged, {} events archived)",
                acknowledged_in_round(),
                archived_rows(&crashed.data)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        server.kill9();
        senders
            .into_iter()
            .for_each(|sender| sender.join().expect("sender"));
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
        server = crashed.start();
    }
    assert_eq!(
        crashes, FLUSH_KILLS,
        "{FLUSH_KILLS} kills interrupted a request ({round} kills in all)"
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
            Some(Fate::InFlight) => assert!(
                counts.iter().all(|count| *count == 1) || counts.iter().all(|count| *count == 0),
                "in-flight batch {batch} found in part or twice: {counts:?}"
            ),
            Some(Fate::NotSent) | None => assert!(
                counts.iter().all(|count| *count == 0),
                "batch {batch} was never sent but found: {counts:?}"
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
    assert_eq!(
        metric_value(&metrics, "mm_archive_quarantined_segments"),
        Some(0.0),
        "no segment may be corrupt after kills"
    );
}

/// The segments the manifest lists, as (hour, file name); none before the first flush.
fn manifest(data: &std::path::Path) -> Vec<(i64, String)> {
    let Ok(bytes) = std::fs::read(data.join("archive/MANIFEST.json")) else {
        return Vec::new();
    };
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    manifest["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|segment| {
            (
                segment["hour"].as_i64().expect("hour"),
                segment["file"].as_str().expect("file").to_owned(),
            )
        })
        .collect()
}

fn manifest_segments(data: &std::path::Path) -> usize {
    manifest(data).len()
}

/// Events in the segments the manifest lists.
fn archived_rows(data: &std::path::Path) -> u64 {
    let Ok(bytes) = std::fs::read(data.join("archive/MANIFEST.json")) else {
        return 0;
    };
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    manifest["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|segment| segment["rows"].as_u64().expect("rows"))
        .sum()
}

/// Merged segments (`seg-c…`, written by compaction) on disk, listed or not.
fn merged_files(data: &std::path::Path) -> BTreeSet<std::path::PathBuf> {
    std::fs::read_dir(data.join("archive"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .flat_map(|entry| {
            std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|file| file.path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("seg-c"))
        })
        .collect()
}

/// Hours the manifest still lists in at least `COMPACTED_FROM` segments: compaction has not
/// merged them yet.
fn uncompacted_hours(data: &std::path::Path) -> usize {
    let mut per_hour: BTreeMap<i64, usize> = BTreeMap::new();
    for (hour, _) in manifest(data) {
        *per_hour.entry(hour).or_default() += 1;
    }
    per_hour
        .values()
        .filter(|segments| **segments >= COMPACTED_FROM)
        .count()
}

/// The archive thread compacts an hour with this many segments or more.
const COMPACTED_FROM: usize = 4;

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
    // Rounds: ingest a sixth of the events (more small segments in the finished hours),
    // stop; start again, which compacts at once, and kill it while the compaction is under
    // way: its merged file is on disk and an hour is still listed in small segments. Which
    // moment is random: as soon as the first merged file appears, or once the manifest lists
    // one merged hour while the other is still being merged. A start whose compaction ends
    // before that moment is seen is stopped gracefully instead (that round tests no crash).
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        // Every sixth event: each round adds to both hours.
        let part: Vec<&GeneratedEvent> = events.iter().skip(round).step_by(ROUNDS).collect();
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
        let merged_before = merged_files(data);
        let after_first_hour = random() % 2 == 1;
        let server = crashed.start();
        let deadline = Instant::now() + Duration::from_secs(60);
        let killed = loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: no compaction in 60 s"
            );
            let started = merged_files(data).difference(&merged_before).count() > 0;
            let listed = manifest(data)
                .iter()
                .filter(|(_, file)| file.starts_with("seg-c"))
                .filter(|(_, file)| !merged_before.iter().any(|path| path.ends_with(file)))
                .count();
            let pending = uncompacted_hours(data);
            if pending == 0 {
                break false;
            }
            if started && (!after_first_hour || listed > 0) {
                break true;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if killed {
            server.kill9();
        } else {
            assert!(server.terminate(), "graceful stop");
        }
        // The state the kill left (the manifest cannot change any more): a merged file
        // written, and an hour still in small segments.
        let interrupted = killed
            && uncompacted_hours(data) > 0
            && merged_files(data).difference(&merged_before).count() > 0;
        rounds.push((before, manifest_segments(data), interrupted));
    }
    println!("segments before and after each start, killed mid-compaction: {rounds:?}");
    assert!(
        rounds.iter().all(|(before, ..)| *before >= 10),
        "many small segments to compact each round: {rounds:?}"
    );
    let interrupted = rounds
        .iter()
        .filter(|(.., interrupted)| *interrupted)
        .count();
    assert!(
        interrupted >= ROUNDS / 2,
        "only {interrupted} of {ROUNDS} kills landed during a compaction: {rounds:?}"
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
