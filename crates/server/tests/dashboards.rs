//! The Grafana dashboards under `deploy/grafana/dashboards` query only metrics a running server
//! exports, so they cannot silently rot when a metric is renamed or removed. A metric with
//! labels is exported once it has a sample, so each test first drives the server until every
//! family it checks has one: the overview and gateway dashboards against an embedded server,
//! the cluster dashboard against a cluster-mode server on the test broker.
#[allow(dead_code)]
#[path = "support/cluster.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;

use std::time::Duration;

use mm_testkit::{Broker, ServerProcess, eventually, get, request};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");

/// Every `mm_…` metric name a PromQL expression mentions, as registered (the sample suffixes
/// of counters and histograms taken off).
fn metric_names(expression: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expression.as_bytes();
    let mut index = 0;
    while let Some(found) = expression[index..].find("mm_") {
        let start = index + found;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expression[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expression.len(), |length| start + length);
        if boundary {
            let mut name = &expression[start..end];
            for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    name = base;
                    break;
                }
            }
            names.push(name.to_owned());
        }
        index = end;
    }
    names
}

/// The metric names of a server's `/metrics`.
fn exported(metrics: &str) -> BTreeSet<&str> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect()
}

/// Checks that every metric the dashboard `name` queries is in `metrics`; returns them.
fn check_dashboard(name: &str, metrics: &str) -> BTreeSet<String> {
    let exported = exported(metrics);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/grafana/dashboards")
        .join(format!("{name}.json"));
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("readable")).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty(), "{name} has panels");
    let mut queried = BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "{name}: {} queries something",
            panel["title"]
        );
        for target in targets {
            let expression = target["expr"].as_str().expect("a PromQL expression");
            let names = metric_names(expression);
            assert!(!names.is_empty(), "{name}: {expression} names a metric");
            for metric in names {
                assert!(
                    exported.contains(metric.as_str()),
                    "{name}: panel {} queries {metric}, which the server does not export",
                    panel["title"]
                );
                queried.insert(metric);
            }
        }
    }
    queried
}

fn send(server: &ServerProcess, method: &str, path: &str, body: &[u8]) -> u16 {
    request(
        server.address,
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
    )
    .expect("server answers")
    .status
}

#[test]
fn the_overview_and_gateway_dashboards_query_only_metrics_an_embedded_server_exports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, &dir.path().join("data"), &[], &[]);
    assert_eq!(get(server.address, "/v1/merchants?limit=5").status, 200);
    // An accepted and a rejected record; a published and a rejected event.
    let line = r#"{"ts":"2026-12-01T10:00:00Z","merchant":"m0","api":"/v1/payments","status":200,"latency_ms":5,"corr_id":"c1"}"#;
    assert_eq!(
        send(
            &server,
            "POST",
            "/v1/ingest",
            format!("{line}\n{{\"merchant\": 1}}\n").as_bytes()
        ),
        207
    );
    let definition = json!({
        "owning_application": "refunds",
        "category": "business",
        "schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
    });
    assert_eq!(
        send(
            &server,
            "PUT",
            "/v1/event-types/order.paid",
            definition.to_string().as_bytes()
        ),
        201
    );
    let events = json!([
        {"metadata": {"eid": "00000000-0000-4000-8000-000000000001", "occurred_at": "2026-12-01T10:00:00Z"}, "id": "a"},
        {"metadata": {"eid": "00000000-0000-4000-8000-000000000002", "occurred_at": "2026-12-01T10:00:00Z"}, "id": 1}
    ]);
    assert_eq!(
        send(
            &server,
            "POST",
            "/v1/event-types/order.paid/events",
            events.to_string().as_bytes()
        ),
        207
    );
    let metrics = String::from_utf8(get(server.address, "/metrics").body).expect("UTF-8");
    // Requests are timed per declared route.
    assert!(
        metrics.contains(
            r#"mm_http_request_seconds_count{route="/v1/merchants",method="GET",status="2xx"} 1"#
        ),
        "{metrics}"
    );
    // The accepted batch is durable: the checkpoint-lag panel has a position to work from.
    assert!(
        mm_testkit::metric_value(&metrics, "mm_wal_durable_lsn").is_some_and(|lsn| lsn >= 1.0),
        "{metrics}"
    );
    let overview = check_dashboard("overview", &metrics);
    assert!(
        overview.contains("mm_http_request_seconds") && overview.contains("mm_ingest_rejected")
    );
    let gateway = check_dashboard("gateway", &metrics);
    assert!(gateway.contains("mm_gateway_rejected_events"));
}

#[test]
fn the_cluster_dashboard_queries_only_metrics_a_cluster_mode_server_exports() {
    let broker = Broker::in_memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = support::write_config(dir.path(), &broker, "dash");
    let server = ServerProcess::start(EXE, &dir.path().join("a"), &["--config", &config], &[]);
    // A good record and a poison one (a dead letter) on the input topic.
    let producer = support::producer(&broker);
    let mut records = support::records(&support::events(7, 20, 2));
    records.push(("poison".into(), b"{\"merchant\": ".to_vec()));
    support::produce(&producer, "calls", &records);
    let metrics = eventually(Duration::from_secs(60), || {
        let metrics = String::from_utf8(get(server.address, "/metrics").body).ok()?;
        (metrics.contains("mm_kafka_dead_letters_total{")
            && metrics.contains("mm_kafka_consumer_lag{"))
        .then_some(metrics)
    })
    .expect("a dead letter counted and consumer lag reported");
    let cluster = check_dashboard("cluster", &metrics);
    assert!(cluster.contains("mm_kafka_consumer_lag") && cluster.contains("mm_kafka_dead_letters"));
}

#[test]
fn metric_names_are_read_out_of_promql_with_their_sample_suffixes_taken_off() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(mm_wal_fsync_seconds_bucket[5m]))) / mm_x_total + xmm_y"#
        ),
        ["mm_wal_fsync_seconds", "mm_x"]
    );
}
