//! Traces, checked at an independent OTLP receiver (Python, built from the
//! `opentelemetry-proto` and `grpcio` packages; `support/otlp_receiver.py`) that the test
//! starts: the spans of one published event across an HTTP hop and a Kafka hop (cluster mode,
//! gRPC export), the spans of an ingest request through the write-ahead log (embedded, HTTP
//! export), parent-based sampling, and log lines that carry the trace and span ids.
// Only the configuration writer of the cluster tests' helpers is used here.
#[allow(dead_code)]
#[path = "support/cluster.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mm_testkit::{Broker, ServerProcess, eventually, get, request};
use serde_json::{Value, json};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");
const TYPE: &str = "order.refund-requested";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The OTLP receiver: a child process that prints every span it receives as a JSON line.
struct Receiver {
    child: Child,
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start(protocol: &str) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/otlp_receiver.py"
        );
        let mut child = Command::new("python3")
            .args([script, protocol])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (opentelemetry-proto and grpcio are installed by .ci/run)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines
            .next()
            .expect("the receiver prints its port")
            .expect("a line");
        let port = first
            .strip_prefix("listening ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("not a port: {first:?}"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let collected = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let span: Value = serde_json::from_str(&line).expect("a JSON span");
                collected.lock().expect("spans").push(span);
            }
        });
        Self { child, port, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().expect("spans").clone()
    }

    /// Waits for a span matching `wanted`.
    fn span(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        eventually(Duration::from_secs(60), || {
            self.spans().into_iter().find(|span| wanted(span))
        })
        .unwrap_or_else(|| panic!("no {what} span among {:#?}", self.spans()))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn caller_traceparent() -> String {
    format!("00-{TRACE}-{CALLER_SPAN}-01")
}

fn refund_type() -> Value {
    json!({
        "owning_application": "refunds",
        "category": "business",
        "partition_key_fields": ["/order_id"],
        "partitions": 3,
        "schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"]
        }
    })
}

fn refund() -> Value {
    json!({
        "metadata": {
            "eid": "00000000-0000-4000-8000-000000000001",
            "occurred_at": "2026-12-01T10:00:00Z"
        },
        "order_id": "o-1"
    })
}

fn json_request(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> mm_testkit::Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(address, method, path, &all, body.to_string().as_bytes()).expect("server answers")
}

#[test]
fn a_published_event_is_traced_across_the_http_hop_and_the_kafka_hop() {
    let receiver = Receiver::start("grpc");
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = support::write_cluster_config(dir.path(), &broker.bootstrap(), "tr", "2s", 3, "");
    let endpoint = receiver.endpoint();
    let start = |name: &str, service: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&config).expect("config");
        std::fs::write(
            &path,
            format!(
                "{text}\n[telemetry]\notlp_protocol = \"grpc\"\nservice_name = \"{service}\"\n"
            ),
        )
        .expect("config");
        ServerProcess::start(
            EXE,
            &dir.path().join(name),
            &["--config", path.to_str().expect("utf-8")],
            &[("MM_OTLP_ENDPOINT", &endpoint)],
        )
    };
    let a = start("a", "monitor-a");
    let b = start("b", "monitor-b");

    let created = json_request(
        a.address,
        "PUT",
        &format!("/v1/event-types/{TYPE}"),
        &[],
        &refund_type(),
    );
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let published = json_request(
        a.address,
        "POST",
        &format!("/v1/event-types/{TYPE}/events"),
        &[("traceparent", &caller_traceparent())],
        &json!([refund()]),
    );
    assert_eq!(
        published.status,
        200,
        "{}",
        String::from_utf8_lossy(&published.body)
    );

    // The HTTP hop: A's server span continues the caller's trace; its producer span is the
    // context the event carries.
    let server = receiver.span("A's publish request", |span| {
        span["service"] == "monitor-a"
            && span["kind"] == "server"
            && span["name"] == "POST /v1/event-types/{name}/events"
    });
    assert_eq!(server["trace_id"], TRACE);
    assert_eq!(server["parent_span_id"], CALLER_SPAN);
    assert_eq!(server["attributes"]["http.response.status_code"], 200);
    let producer = receiver.span("A's producer", |span| {
        span["service"] == "monitor-a" && span["kind"] == "producer"
    });
    assert_eq!(producer["name"], format!("{TYPE} publish"));
    assert_eq!(producer["trace_id"], TRACE);
    assert_eq!(producer["parent_span_id"], server["span_id"]);
    let carried = format!(
        "00-{TRACE}-{}-01",
        producer["span_id"].as_str().expect("span id")
    );

    // The Kafka record carries it in its headers, for any consumer (kafka-python here).
    let script = format!(
        r#"
import json
from kafka import KafkaConsumer
consumer = KafkaConsumer("tr.events.{TYPE}", bootstrap_servers="{broker}",
                         auto_offset_reset="earliest", consumer_timeout_ms=20000)
print(json.dumps([{{k: v.decode() for k, v in m.headers}} for m in consumer]))
"#,
        broker = broker.bootstrap()
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let headers: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(headers.len(), 1, "{headers:?}");
    assert_eq!(headers[0]["traceparent"], carried.as_str());

    // The Kafka hop: B reads the event for a subscription; its consumer span continues the
    // producer's trace, and the event's metadata carries the same context.
    let subscription = json_request(
        b.address,
        "POST",
        "/v1/subscriptions",
        &[],
        &json!({"consumer_group": "audit", "event_types": [TYPE], "read_from": "begin"}),
    );
    assert_eq!(subscription.status, 201);
    let id = subscription.json()["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let read = eventually(Duration::from_secs(30), || {
        let events = get(
            b.address,
            &format!("/v1/subscriptions/{id}/events?limit=10"),
        )
        .json();
        let events = events["events"].as_array().cloned().unwrap_or_default();
        (!events.is_empty()).then_some(events)
    })
    .expect("B reads the event");
    assert_eq!(read[0]["metadata"]["traceparent"], carried.as_str());
    let consumer = receiver.span("B's consumer", |span| {
        span["service"] == "monitor-b" && span["kind"] == "consumer"
    });
    assert_eq!(consumer["name"], format!("tr.events.{TYPE} receive"));
    assert_eq!(consumer["trace_id"], TRACE);
    assert_eq!(consumer["parent_span_id"], producer["span_id"]);
    assert_eq!(consumer["attributes"]["messaging.system"], "kafka");
}

/// An embedded server exporting over HTTP at `sampling_ratio`, logging JSON at `warn`.
fn embedded(
    receiver: &Receiver,
    dir: &std::path::Path,
    sampling_ratio: f64,
) -> (ServerProcess, Arc<Mutex<Vec<Value>>>) {
    let config = dir.join("traces.toml");
    std::fs::write(
        &config,
        format!(
            "[telemetry]\notlp_endpoint = \"{}\"\nsampling_ratio = {sampling_ratio}\n",
            receiver.endpoint()
        ),
    )
    .expect("config");
    let server = ServerProcess::start_logged(
        EXE,
        &dir.join("data"),
        &["--config", config.to_str().expect("utf-8"), "--log-json"],
        &[("MM_LOG", "warn")],
    );
    let lines = server.1.clone();
    (server.0, lines)
}

fn calls(count: usize) -> Vec<u8> {
    let now = mm_model::time::now_us() / 1_000;
    (0..count)
        .map(|index| {
            format!(
                "{{\"ts\":{now},\"merchant\":\"m-{index}\",\"api\":\"charge\",\"status\":200,\"latency_ms\":12,\"corr_id\":\"c-{index}\"}}\n"
            )
        })
        .collect::<String>()
        .into_bytes()
}

#[test]
fn an_ingest_request_is_traced_through_the_wal_and_its_debug_lines_carry_the_ids() {
    let receiver = Receiver::start("http");
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, lines) = embedded(&receiver, dir.path(), 1.0);
    let traceparent = caller_traceparent();
    let answer = request(
        server.address,
        "POST",
        "/v1/ingest",
        &[("traceparent", &traceparent), ("X-Log-Level", "debug")],
        &calls(20),
    )
    .expect("server answers");
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let plain = request(server.address, "POST", "/v1/ingest", &[], &calls(5)).expect("answers");
    assert_eq!(plain.status, 200);

    // A call whose record carried a trace context shows its trace id when looked up.
    let now = mm_model::time::now_us() / 1_000;
    let traced_calls = format!(
        "{{\"ts\":{now},\"merchant\":\"m-t\",\"api\":\"refund\",\"status\":200,\"latency_ms\":3,\"corr_id\":\"with-parent\",\"traceparent\":\"00-{TRACE}-{CALLER_SPAN}-01\"}}\n\
         {{\"ts\":{now},\"merchant\":\"m-t\",\"api\":\"refund\",\"status\":200,\"latency_ms\":3,\"corr_id\":\"with-id\",\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\"}}\n"
    );
    let stored = mm_testkit::ingest(server.address, traced_calls.as_bytes()).expect("answers");
    assert_eq!(stored.status, 200);
    for (corr_id, trace_id) in [
        ("with-parent", TRACE),
        ("with-id", "0af7651916cd43dd8448eb211c80319c"),
    ] {
        let found = get(server.address, &format!("/v1/events/{corr_id}")).json();
        let event = &found["events"][0];
        assert_eq!(event["trace_id"], trace_id, "{found}");
    }
    let untraced = get(server.address, "/v1/events/c-1").json();
    assert!(
        untraced["events"][0].get("trace_id").is_none(),
        "{untraced}"
    );

    let server_span = receiver.span("the ingest request", |span| {
        span["name"] == "POST /v1/ingest" && span["trace_id"] == TRACE
    });
    assert_eq!(server_span["parent_span_id"], CALLER_SPAN);
    assert_eq!(server_span["service"], "merchant-monitor");
    let append = receiver.span("the WAL append", |span| {
        span["name"] == "wal append" && span["trace_id"] == TRACE
    });
    assert_eq!(append["parent_span_id"], server_span["span_id"]);
    assert_eq!(append["attributes"]["wal.events"], 20);
    // The group commit is a trace of its own, linked to the appends it made durable.
    let fsync = receiver.span("the WAL fsync", |span| {
        span["name"] == "wal fsync"
            && span["links"].as_array().is_some_and(|links| {
                links
                    .iter()
                    .any(|link| link["span_id"] == append["span_id"])
            })
    });
    assert_ne!(fsync["trace_id"], TRACE);

    // The access log line is a debug line: written for the request that asked, with its ids,
    // and not for the other one.
    let served = eventually(Duration::from_secs(30), || {
        lines
            .lock()
            .expect("lines")
            .iter()
            .find(|line| line["fields"]["message"] == "request served")
            .cloned()
    })
    .expect("the raised request's access line");
    assert_eq!(served["level"], "DEBUG");
    assert_eq!(served["trace_id"], TRACE);
    assert_eq!(served["span_id"], server_span["span_id"]);
    assert_eq!(served["span"]["http.route"], "/v1/ingest");
    // The second request's server span was exported after the first's: once it is in, its
    // access line (which would have been written before) is known to be absent.
    receiver.span("the plain request", |span| {
        span["name"] == "POST /v1/ingest" && span["trace_id"] != TRACE
    });
    let served_lines = lines
        .lock()
        .expect("lines")
        .iter()
        .filter(|line| line["fields"]["message"] == "request served")
        .count();
    assert_eq!(served_lines, 1);

    // A level that is not one is refused, with the header named.
    let refused = request(
        server.address,
        "GET",
        "/v1/merchants",
        &[("X-Log-Level", "loud")],
        b"",
    )
    .expect("answers");
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["code"], "invalid_log_level");
}

#[test]
fn sampling_follows_a_sampled_caller_even_when_new_traces_are_not_recorded() {
    let receiver = Receiver::start("http");
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _) = embedded(&receiver, dir.path(), 0.0);
    let unsampled = request(server.address, "POST", "/v1/ingest", &[], &calls(3)).expect("answers");
    assert_eq!(unsampled.status, 200);
    let sampled = request(
        server.address,
        "POST",
        "/v1/ingest",
        &[("traceparent", &caller_traceparent())],
        &calls(3),
    )
    .expect("answers");
    assert_eq!(sampled.status, 200);
    let server_span = receiver.span("the sampled caller's request", |span| {
        span["name"] == "POST /v1/ingest"
    });
    assert_eq!(server_span["trace_id"], TRACE);
    receiver.span("its WAL append", |span| span["name"] == "wal append");
    // Spans are exported in the order they end: the unsampled request's would be here by now.
    assert!(
        receiver
            .spans()
            .iter()
            .all(|span| span["trace_id"] == TRACE),
        "{:#?}",
        receiver.spans()
    );
}

#[test]
fn only_a_caller_with_a_valid_token_raises_the_log_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, lines) = ServerProcess::start_logged(
        EXE,
        &dir.path().join("data"),
        &["--log-json"],
        &[("MM_LOG", "warn"), ("MM_AUTH_TOKENS", "level-token-1")],
    );
    // A wrong token: refused, and its level ignored (no debug line).
    let refused = request(
        server.address,
        "GET",
        "/v1/merchants",
        &[
            ("X-Log-Level", "debug"),
            ("Authorization", "Bearer not-the-token"),
        ],
        b"",
    )
    .expect("answers");
    assert_eq!(refused.status, 401);
    let served = request(
        server.address,
        "GET",
        "/v1/merchants",
        &[
            ("X-Log-Level", "debug"),
            ("Authorization", "Bearer level-token-1"),
        ],
        b"",
    )
    .expect("answers");
    assert_eq!(served.status, 200);
    let served_lines = || -> Vec<Value> {
        lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|line| line["fields"]["message"] == "request served")
            .cloned()
            .collect()
    };
    // Lines arrive in the order they are written: once the second request's line is here, the
    // first one's would be too.
    eventually(Duration::from_secs(30), || {
        (!served_lines().is_empty()).then_some(())
    })
    .expect("the access line of the caller with a token");
    let written = served_lines();
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(written[0]["fields"]["status"], 200);
}
