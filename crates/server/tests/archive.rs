//! The raw event archive end to end: lookup by correlation id and listing, before and after
//! the Parquet flush, after a SIGKILL, and read back by DuckDB.

use std::collections::BTreeMap;
use std::time::Duration;

use mm_testkit::{ServerProcess, eventually, get, ingest, now_us};
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

fn segments(data: &std::path::Path) -> usize {
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
        .filter(|file| {
            file.path()
                .extension()
                .is_some_and(|extension| extension == "parquet")
        })
        .count()
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
    // And after the flush to Parquet.
    eventually(Duration::from_secs(15), || {
        (segments(&data) > 0).then_some(())
    })
    .expect("segments are written");
    std::thread::sleep(Duration::from_millis(1_500));
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
    // A long flush age: the second batch is only in memory (and the WAL) when the server dies.
    std::fs::write(
        &config,
        "[storage]\narchive_flush_events = 1000\narchive_flush_age = \"1h\"\n",
    )
    .expect("config written");
    let server = ServerProcess::start(
        EXE,
        &data,
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let events = generated(1_600, 8);
    for chunk in events.chunks(800) {
        let mut body = Vec::new();
        chunk.iter().for_each(|event| event.write_ndjson(&mut body));
        assert_eq!(ingest(server.address, &body).expect("answers").status, 200);
    }
    eventually(Duration::from_secs(15), || {
        (segments(&data) > 0).then_some(())
    })
    .expect("the first 1000 are flushed");
    server.kill9();
    let server = ServerProcess::start(
        EXE,
        &data,
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for event in &events {
        let found = lookup(&server, &event.corr_id);
        *counts.entry(format!("{} found", found.len())).or_default() += 1;
        assert_eq!(
            found,
            vec![expected_json(event)],
            "{} after restart",
            event.corr_id
        );
    }
    assert_eq!(counts.get("1 found"), Some(&events.len()));
}

#[test]
fn duckdb_reads_the_archive_as_parquet() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import duckdb"])
        .output();
    if !python.is_ok_and(|output| output.status.success()) {
        eprintln!(
            "SKIPPED: the duckdb Python package is not installed (pip install duckdb); .ci/run installs it"
        );
        return;
    }
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
    let server = ServerProcess::start(
        EXE,
        &data,
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let first = generated(1_600, 11);
    let second = generated(1_600, 12);
    for batch in [&first, &second] {
        let mut body = Vec::new();
        batch.iter().for_each(|event| event.write_ndjson(&mut body));
        assert_eq!(ingest(server.address, &body).expect("answers").status, 200);
        let before = segments(&data);
        eventually(Duration::from_secs(15), || {
            (segments(&data) > before).then_some(())
        })
        .expect("flushed");
    }
    assert!(server.terminate());
    // Corrupt the first flush's segment.
    let hour_dirs: Vec<std::path::PathBuf> = std::fs::read_dir(data.join("archive"))
        .expect("archive exists")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    let mut files: Vec<std::path::PathBuf> = hour_dirs
        .iter()
        .flat_map(|dir| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
        })
        .collect();
    files.sort();
    let victim = files.first().expect("a segment").clone();
    let mut bytes = std::fs::read(&victim).expect("reads");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim, bytes).expect("writes");

    let server = ServerProcess::start(
        EXE,
        &data,
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let metrics = String::from_utf8(get(server.address, "/metrics").body).expect("utf-8");
    assert!(
        metrics.contains("mm_archive_quarantined_segments 1"),
        "{metrics}"
    );
    assert!(
        data.join("archive/quarantine")
            .read_dir()
            .expect("quarantine exists")
            .count()
            == 1
    );
    // Events of the intact segment are still found.
    let found = second
        .iter()
        .filter(|event| lookup(&server, &event.corr_id).len() == 1)
        .count();
    assert!(found > 0, "the intact segment still serves");
    assert_eq!(get(server.address, "/readyz").status, 200);
}
