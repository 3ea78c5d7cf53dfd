//! Every endpoint and its error paths, against the real binary.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use mm_model::rollup::MERCHANT_TOTAL_API;
use mm_model::time::{MICROS_PER_MINUTE, format_rfc3339, minute_of};
use mm_testkit::{
    Response, ServerProcess, calls, eventually, get, ingest, metric_value, ndjson_line, now_us,
    oracle, request,
};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

fn encode(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}

#[test]
fn ingest_then_query_every_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    let now = now_us();
    let events = calls(
        1,
        3_000,
        5,
        &["/v1/payments", "/v1/refunds", "/v1/tokens"],
        now,
        20,
    );
    let body: String = events.iter().map(ndjson_line).collect();
    let response = ingest(server.address, body.as_bytes()).expect("answers");
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()["accepted"], 3_000);
    assert_eq!(response.json()["rejected"], 0);

    let expected = oracle(&events);
    let from = format_rfc3339(minute_of(now - 25 * MICROS_PER_MINUTE) * MICROS_PER_MINUTE);
    let to = format_rfc3339((minute_of(now) + 1) * MICROS_PER_MINUTE);
    let activity_path = format!(
        "/v1/merchants/m0/activity?from={}&to={}&step=1m",
        encode(&from),
        encode(&to)
    );
    // Open windows reach the store with the next checkpoint (every 2 s by default).
    let activity = eventually(Duration::from_secs(10), || {
        let answer = get(server.address, &activity_path).json();
        let calls: u64 = answer["buckets"]
            .as_array()?
            .iter()
            .map(|bucket| bucket["calls"].as_u64().unwrap_or(0))
            .sum();
        let want: u64 = expected
            .iter()
            .filter(|(key, _)| key.merchant == "m0" && key.api == MERCHANT_TOTAL_API)
            .map(|(_, rollup)| rollup.calls)
            .sum();
        (calls == want).then_some(answer)
    })
    .expect("activity reflects every ingested call");
    assert_eq!(activity["merchant"], "m0");
    assert_eq!(activity["step"], "1m");
    let buckets = activity["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 26, "every minute of the period is present");
    for bucket in buckets {
        let start = mm_model::time::parse_rfc3339(bucket["start"].as_str().expect("start"))
            .expect("RFC 3339");
        let key = mm_model::WindowKey {
            merchant: "m0".into(),
            api: MERCHANT_TOTAL_API.into(),
            minute: minute_of(start),
        };
        match expected.get(&key) {
            Some(rollup) => {
                let classes = rollup.classes();
                assert_eq!(bucket["calls"], rollup.calls);
                assert_eq!(bucket["status_2xx"], classes.status_2xx);
                assert_eq!(bucket["status_4xx"], classes.status_4xx);
                assert_eq!(bucket["status_5xx"], classes.status_5xx);
                let p99 = bucket["p99_ms"].as_f64().expect("p99 present");
                let want = rollup.quantile_ms(0.99).expect("non-empty");
                assert!((p99 - want).abs() < 0.001, "p99 {p99} vs {want}");
                assert_eq!(bucket["max_ms"].as_f64(), Some(rollup.max_ms()));
            }
            None => assert_eq!(bucket["calls"], 0),
        }
    }

    // Five-minute steps merge exactly, and an API filter narrows to one series.
    let five = get(
        server.address,
        &format!(
            "/v1/merchants/m0/activity?from={}&to={}&step=5m&api=/v1/refunds",
            encode(&from),
            encode(&to)
        ),
    )
    .json();
    let refunds: u64 = five["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|bucket| bucket["calls"].as_u64().unwrap_or(0))
        .sum();
    let want: u64 = events
        .iter()
        .filter(|event| event.merchant == "m0" && event.api == "/v1/refunds")
        .count() as u64;
    assert_eq!(refunds, want);

    // The per-API table counts every status code.
    let apis = get(
        server.address,
        &format!(
            "/v1/merchants/m1/apis?from={}&to={}",
            encode(&from),
            encode(&to)
        ),
    )
    .json();
    let rows = apis["apis"].as_array().expect("apis");
    assert_eq!(rows.len(), 3);
    for row in rows {
        let api = row["api"].as_str().expect("api");
        let mut status: BTreeMap<String, u64> = BTreeMap::new();
        for event in events
            .iter()
            .filter(|event| event.merchant == "m1" && event.api == api)
        {
            *status.entry(event.status.to_string()).or_default() += 1;
        }
        let got: BTreeMap<String, u64> =
            serde_json::from_value(row["status"].clone()).expect("status map");
        assert_eq!(got, status, "status codes of {api}");
        assert_eq!(row["calls"], status.values().sum::<u64>());
    }
    let calls_order: Vec<u64> = rows
        .iter()
        .map(|row| row["calls"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        calls_order.windows(2).all(|pair| pair[0] >= pair[1]),
        "sorted by calls"
    );

    // The ranking.
    let ranking = get(
        server.address,
        &format!(
            "/v1/merchants?from={}&to={}&sort=errors&limit=3",
            encode(&from),
            encode(&to)
        ),
    )
    .json();
    let rows = ranking["merchants"].as_array().expect("merchants");
    assert_eq!(rows.len(), 3);
    let errors: Vec<u64> = rows
        .iter()
        .map(|row| row["errors"].as_u64().unwrap_or(0))
        .collect();
    assert!(errors.windows(2).all(|pair| pair[0] >= pair[1]));
    let top = rows[0]["merchant"].as_str().expect("merchant");
    let want = events
        .iter()
        .filter(|event| event.merchant == top && event.status >= 500)
        .count() as u64;
    assert_eq!(errors[0], want);

    // Suggestions: known merchants by prefix, ignoring case.
    let search = get(server.address, "/v1/merchants/search?prefix=M&limit=3").json();
    assert_eq!(search["merchants"], serde_json::json!(["m0", "m1", "m2"]));
    assert_eq!(
        get(server.address, "/v1/merchants/search?prefix=nobody").json()["merchants"],
        serde_json::json!([])
    );

    // One merchant: known, with the minute it was last seen; an unknown one is a 404.
    let known = get(server.address, "/v1/merchants/m2").json();
    assert_eq!(known["merchant"], "m2");
    let last_minute = events
        .iter()
        .filter(|event| event.merchant == "m2")
        .map(|event| minute_of(event.ts_us))
        .max()
        .expect("m2 has calls");
    assert_eq!(
        known["last_seen"],
        format_rfc3339(last_minute * MICROS_PER_MINUTE)
    );
    assert_error(
        &get(server.address, "/v1/merchants/M2"),
        404,
        "unknown_merchant",
    );

    // Operability endpoints.
    assert_eq!(get(server.address, "/healthz").status, 200);
    assert_eq!(get(server.address, "/readyz").status, 200);
    let metrics = String::from_utf8(get(server.address, "/metrics").body).expect("utf-8");
    let value = |name: &str| {
        metric_value(&metrics, name).unwrap_or_else(|| panic!("metrics lack {name}:\n{metrics}"))
    };
    assert_eq!(value("mm_ingest_events_total"), 3000.0);
    assert_eq!(
        value("mm_ingest_rejected_total{reason=\"invalid_json\"}"),
        0.0
    );
    assert!(value("mm_wal_fsync_seconds_count") >= 1.0);
    assert!(
        value("mm_store_write_seconds_count") >= 1.0,
        "a checkpoint was written"
    );
    assert!(value("mm_window_open") >= 0.0);
    let openapi = get(server.address, "/openapi.json").json();
    assert_eq!(openapi["openapi"], "3.1.0");
    assert_documents_exactly_the_routes(&openapi);
    // An open server-sent-events subscriber does not hold up a graceful shutdown.
    let mut subscriber = std::net::TcpStream::connect(server.address).expect("connects");
    write!(
        subscriber,
        "GET /v1/activity/stream HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .expect("writes");
    // Subscribed once the stream's response head has arrived.
    subscriber
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout set");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut subscriber, &mut byte).expect("the stream answers");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let started = std::time::Instant::now();
    assert!(server.terminate(), "graceful shutdown exits cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    drop(subscriber);
}

/// The served document describes every route the router serves (the route table in
/// `http/mod.rs` is the router's only source) and no route it does not serve.
fn assert_documents_exactly_the_routes(openapi: &serde_json::Value) {
    let routes = merchant_monitor::http::routes();
    for route in &routes {
        let method = route.method.as_str().to_ascii_lowercase();
        assert!(
            openapi["paths"][route.path][&method].is_object(),
            "/openapi.json does not describe {} {}: give its handler a #[utoipa::path] and list \
             it in `paths(...)` in http/openapi.rs",
            route.method,
            route.path
        );
    }
    let paths = openapi["paths"].as_object().expect("paths");
    for (path, item) in paths {
        let item = item.as_object().expect("a path item");
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if !item.contains_key(method) {
                continue;
            }
            assert!(
                routes.iter().any(|route| route.path == path
                    && route.method.as_str().eq_ignore_ascii_case(method)),
                "/openapi.json describes {method} {path}, which the router does not serve"
            );
        }
    }
}

fn assert_error(response: &mm_testkit::Response, status: u16, code: &str) {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.json()["error"]["code"],
        code,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(
        response.json()["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty())
    );
}

#[test]
fn error_paths_answer_with_one_json_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[ingest]\nmax_body_bytes = 4096\n").expect("config written");
    let server = ServerProcess::start(
        EXE,
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let address = server.address;

    for (path, fragment) in [
        ("/v1/merchants/m/activity?from=yesterday", "from"),
        ("/v1/merchants/m/activity?step=7m", "step"),
        (
            "/v1/merchants/m/activity?from=2026-11-21T10:00:00Z&to=2026-11-21T09:00:00Z",
            "after",
        ),
        ("/v1/merchants/m/activity?colour=red", "unknown parameter"),
        ("/v1/merchants/m/apis?sort=loudness", "sort"),
        ("/v1/merchants?limit=0", "limit"),
        ("/v1/merchants?limit=ten", "limit"),
    ] {
        let response = get(address, path);
        assert_error(&response, 400, "bad_request");
        let message = response.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(fragment), "{path}: {message}");
    }
    assert_error(&get(address, "/v1/everything"), 404, "not_found");

    assert_error(
        &ingest(address, &vec![b' '; 5000]).expect("answers"),
        413,
        "payload_too_large",
    );
    assert_error(
        &ingest(address, b"\n\n").expect("answers"),
        400,
        "empty_body",
    );
    assert_error(
        &ingest(address, b"[{\"ts\": ").expect("answers"),
        400,
        "unreadable_body",
    );
    let brotli = request(
        address,
        "POST",
        "/v1/ingest",
        &[("Content-Encoding", "br")],
        b"x",
    )
    .expect("answers");
    assert_error(&brotli, 415, "unsupported_encoding");
    let bad_gzip = request(
        address,
        "POST",
        "/v1/ingest",
        &[("Content-Encoding", "gzip")],
        b"not gzip",
    )
    .expect("answers");
    assert_error(&bad_gzip, 400, "unreadable_body");

    // Compressed bodies are accepted.
    let line = ndjson_line(&calls(3, 1, 1, &["/v1/x"], now_us(), 1)[0]);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(line.as_bytes()).expect("compresses");
    let gzipped = gzip.finish().expect("compresses");
    let response = request(
        address,
        "POST",
        "/v1/ingest",
        &[("Content-Encoding", "gzip")],
        &gzipped,
    )
    .expect("answers");
    assert_eq!(response.status, 200);
    // A JSON array body works too.
    let array = format!("[{}]", line.trim());
    assert_eq!(
        ingest(address, array.as_bytes()).expect("answers").status,
        200
    );
}

#[test]
fn tokens_are_required_when_configured_and_public_listeners_need_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(
        EXE,
        dir.path(),
        &[],
        &[("MM_AUTH_TOKENS", "correct-horse-battery")],
    );
    let line = ndjson_line(&calls(4, 1, 1, &["/v1/x"], now_us(), 1)[0]);
    assert_error(
        &ingest(server.address, line.as_bytes()).expect("answers"),
        401,
        "unauthorized",
    );
    let wrong = request(
        server.address,
        "POST",
        "/v1/ingest",
        &[("Authorization", "Bearer wrong-token-value")],
        line.as_bytes(),
    )
    .expect("answers");
    assert_error(&wrong, 401, "unauthorized");
    let right = request(
        server.address,
        "POST",
        "/v1/ingest",
        &[("Authorization", "Bearer correct-horse-battery")],
        line.as_bytes(),
    )
    .expect("answers");
    assert_eq!(right.status, 200);
    assert_error(&get(server.address, "/v1/merchants"), 401, "unauthorized");
    assert_eq!(
        get(server.address, "/healthz").status,
        200,
        "health needs no token"
    );

    let refused = std::process::Command::new(EXE)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("other"))
        .env_remove("MM_AUTH_TOKENS")
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("without auth tokens"), "{stderr}");
}

#[test]
fn too_many_requests_in_flight_get_429_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[ingest]\nmax_inflight_requests = 1\n").expect("config written");
    let server = ServerProcess::start(
        EXE,
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    // A place is held while a body is decoded, appended and made durable: bodies of a few
    // thousand records sent at once by several clients overlap there, and all but one are
    // refused while another holds the only place.
    let body: String = calls(7, 3000, 20, &["/v1/x"], now_us(), 1)
        .iter()
        .map(ndjson_line)
        .collect();
    let refused = eventually(Duration::from_secs(30), || {
        let answers: Vec<Response> = std::thread::scope(|scope| {
            let senders: Vec<_> = (0..6)
                .map(|_| scope.spawn(|| ingest(server.address, body.as_bytes()).expect("answers")))
                .collect();
            senders
                .into_iter()
                .map(|sender| sender.join().expect("sender ran"))
                .collect()
        });
        for answer in &answers {
            assert!(
                answer.status == 200 || answer.status == 429,
                "only accepted or refused: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        answers.into_iter().find(|answer| answer.status == 429)
    });
    let refused = refused.expect("a request is refused while another holds the only place");
    assert_error(&refused, 429, "too_many_requests");
    assert_eq!(refused.header("retry-after"), Some("1"));
}

#[test]
fn a_backlogged_archive_gets_503_with_retry_after_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    // A backlog limit of two events: right after a batch of ten is acknowledged, the archive
    // holds more than that in memory until its thread has written them.
    std::fs::write(&config, "[storage]\narchive_flush_events = 1\n").expect("config written");
    let server = ServerProcess::start(
        EXE,
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
        &[],
    );
    let mut seed = 0;
    let mut accepted_corr_ids = Vec::new();
    let mut send = |seed: u64| {
        let batch = calls(seed, 10, 3, &["/v1/payments"], now_us(), 1);
        let body: String = batch.iter().map(ndjson_line).collect();
        let response = ingest(server.address, body.as_bytes()).expect("answers");
        if response.status == 200 {
            accepted_corr_ids.extend(batch.into_iter().map(|call| call.corr_id));
        }
        (response, body)
    };
    let refused = eventually(Duration::from_secs(30), || {
        seed += 2;
        let _ = send(seed);
        let (response, body) = send(seed + 1);
        (response.status == 503).then_some((response, body))
    });
    let (refused, refused_body) = refused.expect("a batch right behind another is refused");
    assert_error(&refused, 503, "overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("archive")),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    // The refused batch was not taken in part: sent again, it is accepted whole.
    let resent = eventually(Duration::from_secs(10), || {
        let response = ingest(server.address, refused_body.as_bytes()).expect("answers");
        (response.status == 200).then_some(response)
    })
    .expect("accepted once the archive caught up");
    assert_eq!(resent.json()["accepted"], 10);
    let refused_ids: Vec<String> = refused_body
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("json")["corr_id"]
                .as_str()
                .expect("corr_id")
                .to_owned()
        })
        .collect();
    accepted_corr_ids.extend(refused_ids);
    // Every acknowledged event is in the archive exactly once, the refused send added none.
    for corr_id in &accepted_corr_ids {
        let found = get(server.address, &format!("/v1/events/{corr_id}"));
        assert_eq!(found.status, 200);
        assert_eq!(
            found.json()["events"].as_array().map(Vec::len),
            Some(1),
            "{corr_id}"
        );
    }
}
