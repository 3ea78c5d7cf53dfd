//! The edges a hostile or unlucky client reaches: slow and idle connections, slow bodies,
//! too many connections, answers and requests that would take unbounded memory, and the
//! small contract fixes each named after what broke.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mm_testkit::{ServerProcess, calls, eventually, get, ingest, ndjson_line, now_us, request};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

fn server_with(config: &str) -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("config written");
    let server = ServerProcess::start(
        EXE,
        &dir.path().join("data"),
        &["--config", path.to_str().expect("utf-8")],
        &[],
    );
    (dir, server)
}

fn good_line(seed: u64) -> String {
    ndjson_line(&calls(seed, 1, 1, &["/v1/x"], now_us(), 1)[0])
}

/// Reads until the server closes the connection or `limit` passes; the bytes it sent and
/// whether it closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout set");
        match stream.read(&mut buffer) {
            Ok(0) => return (received, true),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (received, true), // reset: closed too
        }
    }
    (received, false)
}

fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    text.lines().next()?.split_whitespace().nth(1)?.parse().ok()
}

fn head_of(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).to_string();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_lowercase()
}

fn connect(address: SocketAddr) -> TcpStream {
    TcpStream::connect(address).expect("connects")
}

#[test]
fn half_a_request_line_or_nothing_is_closed_after_the_header_timeout() {
    let (_dir, server) = server_with("[http]\nheader_read_timeout = \"1s\"\n");
    let mut silent = connect(server.address);
    let mut half = connect(server.address);
    half.write_all(b"GET /healthz HT").expect("writes");
    let started = Instant::now();
    let (_, silent_closed) = read_until_closed(&mut silent, Duration::from_secs(15));
    let (_, half_closed) = read_until_closed(&mut half, Duration::from_secs(15));
    assert!(silent_closed, "a connection that sends nothing is closed");
    assert!(
        half_closed,
        "a connection that never finishes its headers is closed"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    let metrics = String::from_utf8(get(server.address, "/metrics").body).expect("utf-8");
    assert!(
        metric(
            &metrics,
            "mm_http_connections_timed_out_total{kind=\"header\"}"
        ) >= 2.0,
        "{metrics}"
    );
}

#[test]
fn an_idle_keep_alive_connection_lives_past_the_header_timeout_and_closes_at_the_idle_one() {
    let (_dir, server) =
        server_with("[http]\nheader_read_timeout = \"1s\"\nidle_timeout = \"5s\"\n");
    let mut stream = connect(server.address);
    let ask = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(ask).expect("writes");
    let first = read_response(&mut stream);
    assert_eq!(status_of(&first), Some(200));
    // Idle for longer than the header timeout: still open, a second request is answered.
    std::thread::sleep(Duration::from_millis(2500));
    stream.write_all(ask).expect("writes");
    let second = read_response(&mut stream);
    assert_eq!(status_of(&second), Some(200), "{}", head_of(&second));
    let idle_from = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(20));
    assert!(closed, "an idle connection is closed");
    assert!(
        idle_from.elapsed() >= Duration::from_secs(4),
        "closed by the idle timeout, not earlier: {:?}",
        idle_from.elapsed()
    );
}

/// Reads one response with a `content-length` body.
fn read_response(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout set");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).expect("reads");
        assert!(read > 0, "closed before a whole response");
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return received;
            }
        }
    }
}

#[test]
fn a_slow_body_holds_no_ingest_place_and_is_cut_off() {
    let (_dir, server) = server_with(
        "[ingest]\nmax_inflight_requests = 1\n[http]\nbody_idle_timeout = \"1s\"\nbody_min_bytes_per_second = 1000\n",
    );
    // Announces 1000 bytes and sends 6.
    let mut stalled = connect(server.address);
    stalled
        .write_all(b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"ts\":")
        .expect("writes");
    // Sends one byte every 300 ms: never idle for a second, far below 1000 bytes/s.
    let mut trickle = connect(server.address);
    trickle
        .write_all(b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .expect("writes");
    let trickler = std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if trickle.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        trickle
    });
    // Meanwhile the only ingest place is free for a whole body.
    let accepted = ingest(server.address, good_line(1).as_bytes()).expect("answers");
    assert_eq!(
        accepted.status,
        200,
        "{}",
        String::from_utf8_lossy(&accepted.body)
    );
    let (answer, closed) = read_until_closed(&mut stalled, Duration::from_secs(15));
    assert_eq!(
        status_of(&answer),
        Some(408),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(head_of(&answer).contains("connection: close"));
    assert!(closed);
    let mut trickle = trickler.join().expect("trickler ran");
    let (answer, _) = read_until_closed(&mut trickle, Duration::from_secs(15));
    assert_eq!(
        status_of(&answer),
        Some(408),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        String::from_utf8_lossy(&answer).contains("below the minimum"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn connections_beyond_the_cap_get_503_and_the_server_stays_reachable() {
    let (_dir, server) =
        server_with("[http]\nmax_connections = 8\nheader_read_timeout = \"60s\"\n");
    let held: Vec<TcpStream> = (0..8).map(|_| connect(server.address)).collect();
    // The ninth is refused with an answer, not left hanging.
    let refused = eventually(Duration::from_secs(10), || {
        let mut extra = connect(server.address);
        extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        let (answer, _) = read_until_closed(&mut extra, Duration::from_secs(5));
        (status_of(&answer) == Some(503)).then_some(answer)
    })
    .expect("a connection beyond the cap is answered 503");
    let text = String::from_utf8_lossy(&refused);
    assert!(text.contains("too_many_connections"), "{text}");
    assert!(head_of(&refused).contains("retry-after: 1"), "{text}");
    drop(held);
    let healthy = eventually(Duration::from_secs(10), || {
        request(server.address, "GET", "/healthz", &[], b"")
            .ok()
            .filter(|response| response.status == 200)
    });
    assert!(healthy.is_some(), "reachable again once connections close");
}

#[test]
fn a_body_of_bad_lines_gets_a_bounded_answer_with_exact_totals() {
    let (_dir, server) = server_with("[ingest]\nmax_reported_errors = 5\n");
    let mut body = "x\n".repeat(200_000);
    body.push_str(&good_line(2));
    body.push_str(&"[1]\n".repeat(7));
    let response = ingest(server.address, body.as_bytes()).expect("answers");
    assert_eq!(response.status, 207);
    assert!(response.body.len() < 4096, "{} bytes", response.body.len());
    let reply = response.json();
    assert_eq!(reply["accepted"], 1);
    assert_eq!(reply["rejected"], 200_007);
    assert_eq!(reply["errors"].as_array().map(Vec::len), Some(5));
    assert_eq!(reply["errors"][4]["index"], 4);
    assert_eq!(reply["errors_omitted"], 200_002);
    assert_eq!(reply["rejected_by_code"]["invalid_json"], 200_000);
    assert_eq!(reply["rejected_by_code"]["not_an_object"], 7);
}

#[test]
fn a_request_beyond_the_memory_bound_gets_503_and_small_ones_still_pass() {
    let (_dir, server) = server_with("[http]\nmax_request_memory_bytes = 1048576\n");
    let line = good_line(3);
    let big: String = std::iter::repeat_n(line.as_str(), 1_200_000 / line.len()).collect();
    let refused = ingest(server.address, big.as_bytes()).expect("answers");
    assert_eq!(
        refused.status,
        503,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(refused.json()["error"]["code"], "memory_bound");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let small = ingest(server.address, line.as_bytes()).expect("answers");
    assert_eq!(small.status, 200);
    let metrics = String::from_utf8(get(server.address, "/metrics").body).expect("utf-8");
    assert_eq!(
        metric(&metrics, "mm_http_request_memory_bytes"),
        0.0,
        "every reservation is given back"
    );
}

#[test]
fn answers_given_before_the_body_is_read_say_connection_close() {
    let (_dir, server) = server_with("[ingest]\nmax_body_bytes = 1000\n");
    let mut stream = connect(server.address);
    stream
        .write_all(b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        .expect("writes");
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(10));
    assert_eq!(status_of(&answer), Some(413));
    assert!(
        head_of(&answer).contains("connection: close"),
        "{}",
        head_of(&answer)
    );
    assert!(closed);
    // A whole body read and answered keeps the connection open for the next request.
    let mut stream = connect(server.address);
    let line = good_line(4);
    let ask = format!(
        "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{line}",
        line.len()
    );
    stream.write_all(ask.as_bytes()).expect("writes");
    let answer = read_response(&mut stream);
    assert_eq!(status_of(&answer), Some(200));
    assert!(!head_of(&answer).contains("connection: close"));
}

#[test]
fn ingest_counts_batches_whose_client_left_right_after_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    let body: String = calls(5, 2000, 3, &["/v1/x"], now_us(), 1)
        .iter()
        .map(ndjson_line)
        .collect();
    for _ in 0..5 {
        let mut stream = connect(server.address);
        let head = format!(
            "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("writes");
        stream.write_all(body.as_bytes()).expect("writes");
        drop(stream); // gone before the answer
    }
    let counted = eventually(Duration::from_secs(20), || {
        let metrics = String::from_utf8(get(server.address, "/metrics").body).ok()?;
        let events = metric(&metrics, "mm_ingest_events_total");
        (events == 10_000.0).then_some(events)
    });
    let metrics = String::from_utf8(get(server.address, "/metrics").body).expect("utf-8");
    assert_eq!(
        counted,
        Some(10_000.0),
        "every batch sent whole is stored and counted: {}",
        metric(&metrics, "mm_ingest_events_total")
    );
    // Stored, too: the ranking counts every call once checkpointed.
    let stored = eventually(Duration::from_secs(20), || {
        let calls = mm_testkit::ranked_calls(server.address);
        (calls == 10_000).then_some(calls)
    });
    assert_eq!(stored, Some(10_000));
}

#[test]
fn deeply_nested_extra_fields_come_back_from_the_event_apis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    let nested = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let call = &calls(6, 1, 1, &["/v1/x"], now_us(), 1)[0];
    let line = ndjson_line(call);
    let line = format!(
        "{},\"deep\":{nested}}}\n",
        line.trim_end().trim_end_matches('}')
    );
    let stored = ingest(server.address, line.as_bytes()).expect("answers");
    assert_eq!(
        stored.status,
        200,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );
    let found = eventually(Duration::from_secs(10), || {
        let response = get(server.address, &format!("/v1/events/{}", call.corr_id));
        let text = String::from_utf8(response.body).ok()?;
        text.contains("\"deep\"").then_some(text)
    })
    .expect("the event is found with its nested field");
    assert!(found.contains(&nested), "{found}");
}

#[test]
fn correlation_lookups_are_limited_and_say_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    let mut events = calls(8, 150, 2, &["/v1/x"], now_us(), 1);
    for event in &mut events {
        event.corr_id = "shared-id".into();
    }
    let body: String = events.iter().map(ndjson_line).collect();
    assert_eq!(
        ingest(server.address, body.as_bytes())
            .expect("answers")
            .status,
        200
    );
    let first = get(server.address, "/v1/events/shared-id").json();
    assert_eq!(first["events"].as_array().map(Vec::len), Some(100));
    assert_eq!(first["truncated"], true);
    let mut times: Vec<i64> = events.iter().map(|event| event.ts_us).collect();
    times.sort_unstable();
    let oldest = mm_model::time::format_rfc3339(times[0]);
    assert_eq!(
        first["events"][0]["ts"],
        oldest.as_str(),
        "the oldest come first"
    );
    let all = get(server.address, "/v1/events/shared-id?limit=1000").json();
    assert_eq!(all["events"].as_array().map(Vec::len), Some(150));
    assert_eq!(all["truncated"], false);
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_401_carries_a_challenge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(
        EXE,
        dir.path(),
        &[],
        &[("MM_AUTH_TOKENS", "a-long-enough-token")],
    );
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let value = format!("{scheme} a-long-enough-token");
        let response = request(
            server.address,
            "GET",
            "/v1/merchants",
            &[("Authorization", &value)],
            b"",
        )
        .expect("answers");
        assert_eq!(response.status, 200, "{scheme}");
    }
    let missing = get(server.address, "/v1/merchants");
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"merchant-monitor\"")
    );
    let wrong = request(
        server.address,
        "GET",
        "/v1/merchants",
        &[("Authorization", "Bearer not-the-token")],
        b"",
    )
    .expect("answers");
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .header("www-authenticate")
            .is_some_and(|value| value.contains("error=\"invalid_token\""))
    );
}

#[test]
fn a_token_of_spaces_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    for tokens in ["[\"        \"]", "[\"  abc     \"]", "[\"two words here\"]"] {
        let config = dir.path().join("config.toml");
        std::fs::write(&config, format!("[auth]\ntokens = {tokens}\n")).expect("written");
        let refused = std::process::Command::new(EXE)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .output()
            .expect("runs");
        assert!(!refused.status.success(), "{tokens} refused");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("auth tokens must"), "{tokens}: {stderr}");
    }
}

#[test]
fn from_equal_to_is_an_empty_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    assert_eq!(
        ingest(server.address, good_line(9).as_bytes())
            .expect("answers")
            .status,
        200
    );
    let instant = "2026-11-21T10:00:00Z";
    let activity = get(
        server.address,
        &format!("/v1/merchants/m0/activity?from={instant}&to={instant}&step=1m"),
    );
    assert_eq!(
        activity.status,
        200,
        "{}",
        String::from_utf8_lossy(&activity.body)
    );
    let buckets = activity.json()["buckets"].clone();
    let calls: u64 = buckets
        .as_array()
        .expect("buckets")
        .iter()
        .map(|bucket| bucket["calls"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(calls, 0, "{buckets}");
    let ranking = get(
        server.address,
        &format!("/v1/merchants?from={instant}&to={instant}"),
    );
    assert_eq!(
        ranking.status,
        200,
        "{}",
        String::from_utf8_lossy(&ranking.body)
    );
    let backwards = get(
        server.address,
        "/v1/merchants?from=2026-11-21T10:00:00Z&to=2026-11-21T09:00:00Z",
    );
    assert_eq!(backwards.status, 400);
}

#[test]
fn method_not_allowed_and_bad_utf8_paths_answer_in_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    let wrong_method = request(server.address, "DELETE", "/v1/ingest", &[], b"").expect("answers");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.json()["error"]["code"], "method_not_allowed");
    let bad_path = get(server.address, "/v1/events/%FF%FE");
    assert_eq!(
        bad_path.status,
        400,
        "{}",
        String::from_utf8_lossy(&bad_path.body)
    );
    assert_eq!(bad_path.json()["error"]["code"], "bad_request");
}

/// The value of one metric sample (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    mm_testkit::metric_value(text, name).unwrap_or(0.0)
}

/// Regression: SIGTERM right after the server announced its address killed it (the default
/// action) instead of draining it, because the handler was installed only when the serve loop
/// first polled its shutdown future.
#[test]
fn sigterm_right_after_the_address_is_announced_drains_rather_than_kills() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerProcess::start(EXE, &dir.path().join("data"), &[], &[]);
        assert!(
            server.terminate(),
            "a SIGTERM at once must end in a clean exit"
        );
    }
}
