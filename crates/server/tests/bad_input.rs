//! A batch mixing valid records with every kind of malformed one.

use std::time::Duration;

use mm_model::time::format_rfc3339;
use mm_testkit::{ServerProcess, eventually, get, ingest, metric_value, now_us};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

#[test]
fn malformed_records_are_reported_and_the_rest_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, dir.path(), &[], &[]);
    let now = now_us();
    let ts = format_rfc3339(now - 30_000_000);
    let good = |merchant: &str, status: u16| {
        format!(
            r#"{{"ts":"{ts}","merchant":"{merchant}","api":"/v1/payments","status":{status},"latency_ms":12.5,"corr_id":"c"}}"#
        )
    };
    let huge = "x".repeat(100_000);
    let mut body: Vec<u8> = Vec::new();
    let mut lines: Vec<Vec<u8>> = vec![
        good("bad-input-m", 200).into_bytes(),                                                                  // 0 ok
        b"{this is not json".to_vec(),                                                                          // 1
        good("bad-input-m", 500).into_bytes(),                                                                  // 2 ok
        format!(r#"{{"ts":"{ts}","merchant":12.5,"api":"/v1/payments","status":200,"latency_ms":1,"corr_id":"c"}}"#).into_bytes(), // 3 wrong type
        format!(r#"{{"ts":"{ts}","api":"/v1/payments","status":200,"latency_ms":1,"corr_id":"c"}}"#).into_bytes(),  // 4 missing merchant
        good("bad-input-m", 200).replace(&ts, "9999-01-01T00:00:00Z").into_bytes(),                           // 5 future
        good("bad-input-m", 200).replace(&ts, "1971-01-01T00:00:00Z").into_bytes(),                           // 6 too old
        good(&huge, 200).into_bytes(),                                                                          // 7 huge string
        good("bad-input-m", 200).replace("bad-input-m", "bad\u{fffd}m").into_bytes(),                          // 8 invalid UTF-8 (patched below)
        good("bad-input-m", 200).replace("\"status\":200", "\"status\":\"teapot\"").into_bytes(),              // 9 bad status
        good("bad-input-m", 200).replace("\"latency_ms\":12.5", "\"latency_ms\":-3").into_bytes(),          // 10 negative latency (the key too: a time can hold "12.5")
        b"[1,2,3]".to_vec(),                                                                                    // 11 not an object
        good("bad-input-m", 404).into_bytes(),                                                                  // 12 ok
    ];
    // Replace the UTF-8 replacement character with a raw invalid byte.
    let position = lines[8]
        .windows(3)
        .position(|window| window == "\u{fffd}".as_bytes())
        .expect("marker present");
    lines[8].splice(position..position + 3, [0xffu8]);
    for line in &lines {
        body.extend_from_slice(line);
        body.push(b'\n');
    }
    let response = ingest(server.address, &body).expect("answers");
    assert_eq!(
        response.status,
        207,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let reply = response.json();
    assert_eq!(reply["accepted"], 3);
    assert_eq!(reply["rejected"], 10);
    let errors = reply["errors"].as_array().expect("errors");
    let reported: Vec<(u64, String, Option<String>)> = errors
        .iter()
        .map(|error| {
            (
                error["index"].as_u64().expect("index"),
                error["code"].as_str().expect("code").to_owned(),
                error["field"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let expected: Vec<(u64, &str, Option<&str>)> = vec![
        (1, "invalid_json", None),
        (3, "wrong_type", Some("merchant")),
        (4, "missing_field", Some("merchant")),
        (5, "too_far_in_future", Some("ts")),
        (6, "too_old", Some("ts")),
        (7, "too_long", Some("merchant")),
        (8, "invalid_utf8", None),
        (9, "invalid_value", Some("status")),
        (10, "invalid_value", Some("latency_ms")),
        (11, "not_an_object", None),
    ];
    let expected: Vec<(u64, String, Option<String>)> = expected
        .into_iter()
        .map(|(index, code, field)| (index, code.to_owned(), field.map(str::to_owned)))
        .collect();
    assert_eq!(reported, expected);
    assert!(errors.iter().all(|error| {
        error["reason"]
            .as_str()
            .is_some_and(|reason| !reason.is_empty())
    }));

    // The valid three are stored; the server keeps serving.
    let from = format_rfc3339(now - 10 * 60_000_000).replace(':', "%3A");
    let apis = eventually(Duration::from_secs(10), || {
        let answer = get(
            server.address,
            &format!("/v1/merchants/bad-input-m/apis?from={from}"),
        )
        .json();
        (answer["apis"][0]["calls"] == 3).then_some(answer)
    })
    .expect("valid records are counted");
    assert_eq!(apis["apis"][0]["status"]["200"], 1);
    assert_eq!(apis["apis"][0]["status"]["500"], 1);
    assert_eq!(apis["apis"][0]["status"]["404"], 1);
    let metrics = String::from_utf8(get(server.address, "/metrics").body).expect("utf-8");
    assert_eq!(
        metric_value(
            &metrics,
            "mm_ingest_rejected_total{reason=\"invalid_value\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    let again = ingest(
        server.address,
        format!("{}\n", good("bad-input-m", 200)).as_bytes(),
    )
    .expect("answers");
    assert_eq!(again.status, 200);
}
