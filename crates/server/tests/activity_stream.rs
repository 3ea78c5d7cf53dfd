//! Closed windows go out once on the activity stream; late data goes out as a correction.

use std::collections::BTreeMap;
use std::time::Duration;

use mm_model::time::{MICROS_PER_MINUTE, minute_of};
use mm_testkit::{
    ServerProcess, calls, eventually, get, ingest, metric_value, ndjson_line, now_us, oracle,
};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

/// Reads `activity` events from a server-sent-event stream until it holds `wanted` of them
/// (set by the test once it knows) or 30 seconds have passed.
fn subscribe(
    address: std::net::SocketAddr,
    path: &str,
    wanted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("writes");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout set");
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut reader = BufReader::new(stream);
        let mut records = Vec::new();
        let mut event = String::new();
        let mut line = String::new();
        while started.elapsed() < Duration::from_secs(30)
            && records.len() < wanted.load(Ordering::Acquire)
        {
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) if line.ends_with('\n') => {}
                // A timeout may leave part of a line: keep it and read on.
                Ok(_) | Err(_) => continue,
            }
            let complete = std::mem::take(&mut line);
            let complete = complete.trim_end();
            if let Some(name) = complete.strip_prefix("event: ") {
                event = name.to_owned();
            } else if let Some(data) = complete.strip_prefix("data: ")
                && event == "activity"
            {
                records.push(serde_json::from_str(data).expect("event data is JSON"));
            }
        }
        records
    })
}

fn read_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each activity line is JSON"))
        .collect()
}

#[test]
fn idle_windows_close_once_and_late_calls_are_corrections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[window]\ngrace = \"1m\"\nidle_timeout = \"2s\"\ncheckpoint_interval = \"200ms\"\n[activity]\nfile = \"activity.ndjson\"\n",
    )
    .expect("config written");
    let data = dir.path().join("data");
    let activity = data.join("activity.ndjson");
    let server = ServerProcess::start(
        EXE,
        &data,
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    // A server-sent-events subscriber, connected before any traffic.
    let wanted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let subscriber = subscribe(
        server.address,
        "/v1/activity/stream?merchant=m1",
        wanted.clone(),
    );

    // Calls from 2 to 4 minutes ago, sent right after start (before the new input counts as
    // idle): on time. With no further traffic the idle input's watermark then follows the
    // wall clock and every one of these windows must close.
    let now = now_us();
    let events: Vec<_> = calls(
        9,
        500,
        3,
        &["/v1/payments", "/v1/refunds"],
        now - 2 * MICROS_PER_MINUTE,
        2,
    );
    let body: String = events.iter().map(ndjson_line).collect();
    assert_eq!(
        ingest(server.address, body.as_bytes())
            .expect("answers")
            .status,
        200
    );
    let expected = oracle(&events);
    // Every (merchant, api) window and every merchant-wide window (api "").
    let windows = expected.len();
    assert!(expected.keys().any(|key| key.api.is_empty()));
    eventually(Duration::from_secs(20), || {
        (read_records(&activity).len() >= windows).then_some(())
    })
    .expect("every window closes without new traffic");
    // Give a duplicate, if there were one, the time to appear: one more call (another
    // merchant, an open window) and wait until a checkpoint has covered it, so at least one
    // checkpoint ran after every window had closed.
    let checkpointed = metric(&server, "mm_wal_checkpointed_lsn");
    let mut marker = events[0].clone();
    marker.merchant = "after-close".into();
    marker.ts_us = now_us();
    marker.corr_id = "after-close".into();
    assert_eq!(
        ingest(server.address, ndjson_line(&marker).as_bytes())
            .expect("answers")
            .status,
        200
    );
    eventually(Duration::from_secs(10), || {
        (metric(&server, "mm_wal_checkpointed_lsn") > checkpointed).then_some(())
    })
    .expect("a checkpoint covers the call sent after the windows closed");
    let records: Vec<serde_json::Value> = read_records(&activity)
        .into_iter()
        .filter(|record| record["merchant"] != "after-close")
        .collect();
    assert_eq!(
        records.len(),
        windows,
        "one record per (merchant, api, minute) and per merchant-minute"
    );
    let mut seen = BTreeMap::new();
    for record in &records {
        assert_eq!(record["correction"], false);
        let start = mm_model::time::parse_rfc3339(record["window_start"].as_str().expect("start"))
            .expect("time");
        let key = mm_model::WindowKey {
            merchant: record["merchant"].as_str().expect("merchant").to_owned(),
            api: record["api"].as_str().expect("api").to_owned(),
            minute: minute_of(start),
        };
        let rollup = expected.get(&key).expect("record for a real window");
        assert_eq!(record["calls"], rollup.calls);
        assert_eq!(
            record["dedupe_key"],
            mm_model::activity::dedupe_key(&key, rollup.calls)
        );
        assert_eq!(record["status_5xx"], rollup.classes().status_5xx);
        let dedupe = record["dedupe_key"]
            .as_str()
            .expect("dedupe key")
            .to_owned();
        assert!(
            seen.insert(dedupe, ()).is_none(),
            "dedupe keys are unique per record"
        );
    }

    // The subscriber saw m1's windows, and only m1's.
    let want_m1 = records
        .iter()
        .filter(|record| record["merchant"] == "m1")
        .count();
    assert!(want_m1 > 0);
    wanted.store(want_m1, std::sync::atomic::Ordering::Release);
    let streamed = subscriber.join().expect("subscriber thread");
    assert_eq!(streamed.len(), want_m1, "one event per m1 record");
    assert!(streamed.iter().all(|record| record["merchant"] == "m1"));

    // A late call for one of the closed windows: stored as a correction and emitted flagged.
    let mut late = events[0].clone();
    late.corr_id = "late-one".into();
    late.status = 503;
    assert_eq!(
        ingest(server.address, ndjson_line(&late).as_bytes())
            .expect("answers")
            .status,
        200
    );
    let key = mm_model::WindowKey {
        merchant: late.merchant.clone(),
        api: late.api.clone(),
        minute: minute_of(late.ts_us),
    };
    let correction = eventually(Duration::from_secs(10), || {
        read_records(&activity)
            .into_iter()
            .find(|record| record["correction"] == true && record["api"] != "")
    })
    .expect("a correction record is emitted");
    assert_eq!(correction["merchant"], key.merchant.as_str());
    assert_eq!(correction["api"], key.api.as_str());
    assert_eq!(
        correction["calls"],
        expected[&key].calls + 1,
        "the correction carries the corrected total"
    );
    let merchant_key = mm_model::WindowKey {
        api: String::new(),
        ..key.clone()
    };
    let merchant_correction = read_records(&activity)
        .into_iter()
        .find(|record| record["correction"] == true && record["api"] == "")
        .expect("the merchant-wide window is corrected too");
    assert_eq!(
        merchant_correction["calls"],
        expected[&merchant_key].calls + 1
    );
    // The metrics follow once the checkpoint that emitted the correction has committed.
    let counted = eventually(Duration::from_secs(10), || {
        (metric(&server, "mm_window_late_events_total") == Some(1.0)
            && metric(&server, "mm_window_corrections_total") == Some(2.0))
        .then_some(())
    });
    assert!(
        counted.is_some(),
        "the late event and the correction are counted: {:?} late, {:?} corrections",
        metric(&server, "mm_window_late_events_total"),
        metric(&server, "mm_window_corrections_total")
    );
}

/// A gauge or counter of the server's `/metrics`.
fn metric(server: &ServerProcess, name_with_labels: &str) -> Option<f64> {
    let text = String::from_utf8(get(server.address, "/metrics").body).expect("utf-8");
    metric_value(&text, name_with_labels)
}
