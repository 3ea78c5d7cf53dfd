//! `Idempotency-Key` on `/v1/ingest`: a retried batch is answered with the first answer and
//! stored once, also after a crash.

use std::time::Duration;

use mm_testkit::{ServerProcess, calls, eventually, ndjson_line, now_us, request};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

fn batch(seed: u64, count: usize) -> Vec<u8> {
    calls(seed, count, 3, &["/v1/x"], now_us(), 1)
        .iter()
        .map(ndjson_line)
        .collect::<String>()
        .into_bytes()
}

fn send(
    server: &ServerProcess,
    key: Option<&str>,
    token: Option<&str>,
    body: &[u8],
) -> mm_testkit::Response {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(key) = key {
        headers.push(("Idempotency-Key", key));
    }
    if let Some(value) = &authorization {
        headers.push(("Authorization", value));
    }
    request(server.address, "POST", "/v1/ingest", &headers, body).expect("answers")
}

fn metric(server: &ServerProcess, name: &str, token: Option<&str>) -> f64 {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|value| vec![("Authorization", value)])
        .unwrap_or_default();
    let response = request(server.address, "GET", "/metrics", &headers, b"").expect("answers");
    mm_testkit::metric_value(&String::from_utf8_lossy(&response.body), name).unwrap_or(0.0)
}

/// Calls the ranking counts over the last hour.
fn stored_calls(server: &ServerProcess) -> u64 {
    mm_testkit::ranked_calls(server.address)
}

fn start(dir: &std::path::Path, config: &str) -> ServerProcess {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("config written");
    ServerProcess::start(
        EXE,
        &dir.join("data"),
        &["--config", path.to_str().expect("utf-8")],
        &[],
    )
}

#[test]
fn a_retried_batch_is_answered_once_and_counted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), "");
    let mut body = batch(1, 500);
    body.extend_from_slice(b"not json\n");
    let first = send(&server, Some("order-17"), None, &body);
    assert_eq!(
        first.status,
        207,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = send(&server, Some("order-17"), None, &body);
    assert_eq!(again.status, 207);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body, "the first answer, byte for byte");
    assert_eq!(metric(&server, "mm_ingest_events_total", None), 500.0);
    // Without a key, the same body is a new request.
    let unkeyed = send(&server, None, None, &body);
    assert_eq!(unkeyed.status, 207);
    assert_eq!(metric(&server, "mm_ingest_events_total", None), 1000.0);
    let stored = eventually(Duration::from_secs(20), || {
        (stored_calls(&server) == 1000).then_some(())
    });
    assert!(stored.is_some(), "{}", stored_calls(&server));
}

#[test]
fn a_key_reused_for_another_body_or_malformed_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), "");
    assert_eq!(send(&server, Some("k-1"), None, &batch(2, 10)).status, 200);
    let reused = send(&server, Some("k-1"), None, &batch(3, 10));
    assert_eq!(
        reused.status,
        422,
        "{}",
        String::from_utf8_lossy(&reused.body)
    );
    assert_eq!(reused.json()["error"]["code"], "idempotency_key_reused");
    let long = "k".repeat(256);
    for bad in [long.as_str(), "with space"] {
        let refused = send(&server, Some(bad), None, &batch(4, 10));
        assert_eq!(refused.status, 400);
        assert_eq!(refused.json()["error"]["code"], "bad_idempotency_key");
    }
    assert_eq!(metric(&server, "mm_ingest_events_total", None), 10.0);
}

#[test]
fn keys_are_scoped_to_the_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[auth]\ntokens = [\"first-client-token\", \"second-client-token\"]\n",
    )
    .expect("config written");
    let server = ServerProcess::start(
        EXE,
        &dir.path().join("data"),
        &["--config", path.to_str().expect("utf-8")],
        &[],
    );
    let first = send(
        &server,
        Some("same"),
        Some("first-client-token"),
        &batch(5, 20),
    );
    let second = send(
        &server,
        Some("same"),
        Some("second-client-token"),
        &batch(6, 30),
    );
    assert_eq!(first.status, 200);
    assert_eq!(
        second.status,
        200,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    assert_eq!(second.header("idempotent-replayed"), None);
    assert_eq!(
        metric(
            &server,
            "mm_ingest_events_total",
            Some("first-client-token")
        ),
        50.0
    );
}

#[test]
fn a_retry_after_a_crash_is_answered_from_the_log_or_the_store() {
    // Checkpoints far apart: the first key is only in the write-ahead log when killed.
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), "[window]\ncheckpoint_interval = \"60s\"\n");
    let in_log = batch(7, 300);
    let first = send(&server, Some("in-log"), None, &in_log);
    assert_eq!(first.status, 200);
    assert_eq!(
        metric(&server, "mm_wal_checkpointed_lsn", None),
        0.0,
        "not checkpointed yet"
    );
    server.kill9();
    let server = start(dir.path(), "[window]\ncheckpoint_interval = \"200ms\"\n");
    let retried = send(&server, Some("in-log"), None, &in_log);
    assert_eq!(retried.status, 200);
    assert_eq!(retried.header("idempotent-replayed"), Some("true"));
    assert_eq!(retried.body, first.body);
    // The second key goes through a checkpoint into the store before the next crash.
    let in_store = batch(8, 200);
    let second = send(&server, Some("in-store"), None, &in_store);
    assert_eq!(second.status, 200);
    let checkpointed = eventually(Duration::from_secs(10), || {
        (metric(&server, "mm_wal_checkpointed_lsn", None) >= 2.0).then_some(())
    });
    assert!(checkpointed.is_some(), "the second batch is checkpointed");
    server.kill9();
    let server = start(dir.path(), "");
    for (key, body, answer) in [
        ("in-log", &in_log, &first),
        ("in-store", &in_store, &second),
    ] {
        let retried = send(&server, Some(key), None, body);
        assert_eq!(retried.status, 200, "{key}");
        assert_eq!(retried.header("idempotent-replayed"), Some("true"), "{key}");
        assert_eq!(retried.body, answer.body, "{key}");
    }
    let counted = eventually(Duration::from_secs(20), || {
        (stored_calls(&server) == 500).then_some(())
    });
    assert!(
        counted.is_some(),
        "each batch counted once: {}",
        stored_calls(&server)
    );
}

#[test]
fn concurrent_requests_with_one_key_store_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), "");
    let body = batch(9, 3000);
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| send(&server, Some("racing"), None, &body).status))
            .collect();
        senders
            .into_iter()
            .map(|sender| sender.join().expect("sender ran"))
            .collect()
    });
    assert!(answers.contains(&200), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|status| *status == 200 || *status == 409),
        "answered or told the key is in use: {answers:?}"
    );
    assert_eq!(metric(&server, "mm_ingest_events_total", None), 3000.0);
}
