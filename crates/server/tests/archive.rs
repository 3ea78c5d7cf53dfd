//! The raw event archive end to end: lookup by correlation id and listing, before and after
//! the Parquet flush, after a SIGKILL, and read back by DuckDB.

use std::collections::BTreeMap;
use std::time::Duration;

use mm_testkit::{ServerProcess, eventually, get, ingest, metric_value, now_us};
use mm_traffic::{GeneratedEvent, TrafficConfig, TrafficGenerator};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

fn generated(count: usize, seed: u64) -> Vec<GeneratedEvent> {
    let config = TrafficConfig {
        seed,
        merchants: 20,
        start_ts_us: now_us() - 20 * 60_000_000,
        events_per_second: 20.0,
        ..TrafficConfig::default()
    };
    TrafficGenerator::new(config).take(count).collect()
}

/// The event as the API must show it: the NDJSON line's fields, timestamp normalized.
fn expected_json(event: &GeneratedEvent) -> Value {
    let mut line = Vec::new();
    event.write_ndjson(&mut line);
    let mut value: Value = serde_json::from_slice(&line).expect("generated line is JSON");
    value["ts"] = Value::String(mm_model::time::format_rfc3339(event.ts_us));
    value
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        "[storage]\narchive_flush_events = 1500\narchive_flush_age = \"1s\"\n",
    )
    .expect("config written");
    path
}

fn lookup(server: &ServerProcess, corr_id: &str) -> Vec<Value> {
    let answer = get(server.address, &format!("/v1/events/{corr_id}")).json();
    answer["events"].as_array().cloned().unwrap_or_default()
}

/// The segments the archive's manifest lists: what readers see, once the flush that wrote them
/// has switched the manifest.
fn manifest_segments(data: &std::path::Path) -> Vec<Value> {
    std::fs::read(data.join("archive/MANIFEST.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|manifest| manifest["segments"].as_array().cloned())
        .unwrap_or_default()
}

/// Events in the segments the manifest lists.
fn archived_rows(data: &std::path::Path) -> u64 {
    segment_rows(&manifest_segments(data))
}

fn segment_rows(segments: &[Value]) -> u64 {
    segments
        .iter()
        .map(|segment| segment["rows"].as_u64().expect("rows"))
        .sum()
}

/// Waits until the manifest lists segments holding exactly `rows` events.
fn wait_for_archived_rows(data: &std::path::Path, rows: u64) {
    let archived = eventually(Duration::from_secs(30), || {
        (archived_rows(data) == rows).then_some(())
    });
    assert!(
        archived.is_some(),
        "the manifest lists {} archived events, not {rows}",
        archived_rows(data)
    );
}

/// A gauge or counter of the server's `/metrics`.
fn metric(server: &ServerProcess, name_with_labels: &str) -> Option<f64> {
    let text = String::from_utf8(get(server.address, "/metrics").body).expect("utf-8");
    metric_value(&text, name_with_labels)
}

/// The hour directory (`2026-11-21T15`) an event's segment is in.
fn hour_directory(ts_us: i64) -> String {
    mm_model::time::format_rfc3339(ts_us)[..13].to_owned()
}

#[test]
fn every_event_is_found_by_correlation_id_and_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = config(dir.path());
    let server = ServerProcess::start(
        EXE,
        &data,
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let events = generated(4_000, 3);
    let mut body = Vec::new();
    events
        .iter()
        .for_each(|event| event.write_ndjson(&mut body));
    assert_eq!(ingest(server.address, &body).expect("answers").status, 200);

    // Findable as soon as acknowledged (hot tail), with every field as ingested.
    for event in events.iter().step_by(397) {
        assert_eq!(
            lookup(&server, &event.corr_id),
            vec![expected_json(event)],
            "{}",
            event.corr_id
        );
    }
    // And after the flush to Parquet: the manifest lists every event, so none is read from
    // memory any more.
    wait_for_archived_rows(&data, events.len() as u64);
    for event in events.iter().step_by(211) {
        assert_eq!(
            lookup(&server, &event.corr_id),
            vec![expected_json(event)],
            "{}",
            event.corr_id
        );
    }
    assert!(lookup(&server, "no-such-correlation-id").is_empty());

    // Listing: newest first, every event exactly once across pages.
    let merchant = events[0].merchant.clone();
    let mut want: Vec<&GeneratedEvent> = events
        .iter()
        .filter(|event| event.merchant == merchant)
        .collect();
    want.sort_by(|left, right| (right.ts_us, &right.corr_id).cmp(&(left.ts_us, &left.corr_id)));
    let from = mm_model::time::format_rfc3339(now_us() - 30 * 60_000_000).replace(':', "%3A");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let mut path = format!("/v1/merchants/{merchant}/events?from={from}&limit=37");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = get(server.address, &path).json();
        seen.extend(page["events"].as_array().expect("events").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let want_json: Vec<Value> = want.iter().map(|event| expected_json(event)).collect();
    assert_eq!(seen, want_json);

    // Filters.
    let errors = get(
        server.address,
        &format!("/v1/merchants/{merchant}/events?from={from}&status=500&limit=1000"),
    )
    .json();
    let want_errors = want.iter().filter(|event| event.status == 500).count();
    assert_eq!(
        errors["events"].as_array().expect("events").len(),
        want_errors
    );
    let bad = get(
        server.address,
        &format!("/v1/merchants/{merchant}/events?cursor=garbage"),
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn events_survive_a_kill_before_and_after_the_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("config.toml");
    // A flush at 1000 events and never by age: the first batch (1000) is flushed at once, the
    // second (600) stays in memory (and the WAL) until the server dies.
    std::fs::write(
        &config,
        "[storage]\narchive_flush_events = 1000\narchive_flush_age = \"1h\"\n",
    )
    .expect("config written");
    let start = || {
        ServerProcess::start(
            EXE,
            &data,
            &["--config", config.to_str().expect("utf-8")],
            &[],
        )
    };
    let server = start();
    let events = generated(1_600, 8);
    let (flushed, in_memory) = events.split_at(1_000);
    let send = |server: &ServerProcess, batch: &[GeneratedEvent]| {
        let mut body = Vec::new();
        batch.iter().for_each(|event| event.write_ndjson(&mut body));
        assert_eq!(ingest(server.address, &body).expect("answers").status, 200);
    };
    send(&server, flushed);
    wait_for_archived_rows(&data, flushed.len() as u64);
    send(&server, in_memory);
    // The second batch is acknowledged (so in the WAL), held in the hot tail, and in no segment.
    let held = eventually(Duration::from_secs(10), || {
        (metric(&server, "mm_archive_hot_events") == Some(in_memory.len() as f64)).then_some(())
    });
    assert!(
        held.is_some(),
        "the hot tail holds the second batch: {:?}",
        metric(&server, "mm_archive_hot_events")
    );
    assert_eq!(
        archived_rows(&data),
        flushed.len() as u64,
        "only the first batch is in segments when the server is killed"
    );
    server.kill9();

    let server = start();
    // The second batch comes back from the WAL into the hot tail, not into a segment.
    assert_eq!(archived_rows(&data), flushed.len() as u64);
    let replayed = eventually(Duration::from_secs(10), || {
        (metric(&server, "mm_archive_hot_events") == Some(in_memory.len() as f64)).then_some(())
    });
    assert!(
        replayed.is_some(),
        "the WAL refills the hot tail: {:?}",
        metric(&server, "mm_archive_hot_events")
    );
    for event in &events {
        assert_eq!(
            lookup(&server, &event.corr_id),
            vec![expected_json(event)],
            "{} after restart",
            event.corr_id
        );
    }
}

#[test]
fn duckdb_reads_the_archive_as_parquet() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import duckdb"])
        .output();
    assert!(
        python.is_ok_and(|output| output.status.success()),
        "this test reads the archive with DuckDB: install its Python module (`pip install duckdb`; \
         .ci/run installs it)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = config(dir.path());
    let server = ServerProcess::start(
        EXE,
        &data,
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let events = generated(3_000, 5);
    let mut body = Vec::new();
    events
        .iter()
        .for_each(|event| event.write_ndjson(&mut body));
    assert_eq!(ingest(server.address, &body).expect("answers").status, 200);
    assert!(server.terminate(), "a clean stop flushes the hot tail");
    let script = format!(
        "import duckdb, json\n\
         rows = duckdb.sql(\"select corr_id, merchant, api, status, latency_ms, epoch_us(ts) as ts_us from read_parquet('{}/archive/*/*.parquet')\").fetchall()\n\
         print(json.dumps([list(row) for row in rows]))\n",
        data.display()
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON rows");
    assert_eq!(rows.len(), events.len(), "DuckDB sees every archived event");
    let by_corr: BTreeMap<String, &Value> = rows
        .iter()
        .map(|row| (row[0].as_str().unwrap_or_default().to_owned(), row))
        .collect();
    for event in events.iter().step_by(101) {
        let row = by_corr.get(&event.corr_id).expect("row present");
        assert_eq!(row[1], event.merchant.as_str());
        assert_eq!(row[2], event.api);
        assert_eq!(row[3], event.status);
        assert_eq!(row[4].as_f64(), Some(event.latency_ms));
        assert_eq!(row[5].as_i64(), Some(event.ts_us));
    }
}

#[test]
fn a_corrupt_segment_is_reported_and_the_rest_still_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = config(dir.path());
    let start = || {
        ServerProcess::start(
            EXE,
            &data,
            &["--config", config.to_str().expect("utf-8")],
            &[],
        )
    };
    let server = start();
    let first = generated(1_600, 11);
    let second = generated(1_600, 12);
    let mut first_flush = Vec::new();
    for (index, batch) in [&first, &second].into_iter().enumerate() {
        let mut body = Vec::new();
        batch.iter().for_each(|event| event.write_ndjson(&mut body));
        assert_eq!(ingest(server.address, &body).expect("answers").status, 200);
        wait_for_archived_rows(&data, 1_600 * (index as u64 + 1));
        if index == 0 {
            first_flush = manifest_segments(&data);
        }
    }
    assert!(server.terminate());
    assert_eq!(segment_rows(&first_flush), first.len() as u64);

    // Corrupt one segment of the first flush.
    let victim = &first_flush[0];
    let victim_hour = hour_directory(
        victim["min_ts_us"]
            .as_i64()
            .expect("the segment's first event time"),
    );
    let victim_file = victim["file"].as_str().expect("file name");
    let victim_path = data.join("archive").join(&victim_hour).join(victim_file);
    let mut bytes = std::fs::read(&victim_path).expect("reads");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim_path, bytes).expect("writes");
    // Its events: the first batch's events of its hour.
    let lost: std::collections::BTreeSet<&str> = first
        .iter()
        .filter(|event| hour_directory(event.ts_us) == victim_hour)
        .map(|event| event.corr_id.as_str())
        .collect();
    assert_eq!(lost.len() as u64, victim["rows"].as_u64().expect("rows"));

    let server = start();
    assert_eq!(
        metric(&server, "mm_archive_quarantined_segments"),
        Some(1.0),
        "the corrupt segment is counted"
    );
    let quarantined: Vec<String> = data
        .join("archive/quarantine")
        .read_dir()
        .expect("quarantine exists")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(quarantined, [format!("{victim_hour}-{victim_file}")]);
    assert_eq!(
        archived_rows(&data),
        (first.len() + second.len() - lost.len()) as u64,
        "the manifest no longer lists it"
    );
    // Every event of the intact segments is still found, once; the quarantined one is not read.
    for event in first.iter().chain(&second) {
        let found = lookup(&server, &event.corr_id);
        if lost.contains(event.corr_id.as_str()) {
            assert!(
                found.is_empty(),
                "{} is in the quarantined segment",
                event.corr_id
            );
        } else {
            assert_eq!(found, vec![expected_json(event)], "{}", event.corr_id);
        }
    }
    assert_eq!(get(server.address, "/readyz").status, 200);
}
