//! Real Prometheus (Debian's `prometheus` package; `.ci/run` installs it) scrapes a running
//! server, and PromQL through its HTTP API returns the ingest rate the test drove.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mm_testkit::{ServerProcess, eventually, ingest};

const EXE: &str = env!("CARGO_BIN_EXE_merchant-monitor");
/// Events per batch, and the pause between batches: 200 events/s.
const BATCH: usize = 100;
const EVERY: Duration = Duration::from_millis(500);
const BATCHES: usize = 24;

/// The Prometheus server, stopped when dropped.
struct Prometheus {
    child: Child,
    address: SocketAddr,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: merchant-monitor\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("config written");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts (Debian's package; .ci/run installs it)");
        Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The first sample of an instant query at `at` (unix seconds), if there is one.
    fn query(&self, promql: &str, at: f64) -> Option<f64> {
        let mut encoded = String::new();
        for byte in promql.bytes() {
            if byte.is_ascii_alphanumeric() || b"_-.".contains(&byte) {
                encoded.push(byte as char);
            } else {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        }
        let answer = mm_testkit::request(
            self.address,
            "GET",
            &format!("/api/v1/query?query={encoded}&time={at:.3}"),
            &[],
            b"",
        )
        .ok()?;
        if answer.status != 200 {
            return None;
        }
        let body = answer.json();
        body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|value| value.parse().ok())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[test]
fn prometheus_scrapes_the_server_and_promql_returns_the_ingest_rate_it_was_driven_at() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(EXE, &dir.path().join("data"), &[], &[]);
    let prometheus = Prometheus::start(dir.path(), server.address);
    // Prometheus has scraped the server once before the load starts.
    eventually(Duration::from_secs(60), || {
        prometheus.query("mm_ingest_events_total", unix_now())
    })
    .expect("Prometheus scrapes the server");

    // Drive 200 events/s, recording when each batch was acknowledged.
    let mut acknowledged: Vec<f64> = Vec::new();
    let started = Instant::now();
    for batch in 0..BATCHES {
        let at = mm_model::time::format_rfc3339(mm_model::time::now_us());
        let body: String = (0..BATCH)
            .map(|index| {
                format!(
                    "{{\"ts\":\"{at}\",\"merchant\":\"m{}\",\"api\":\"/v1/payments\",\"status\":200,\"latency_ms\":5,\"corr_id\":\"c{batch}-{index}\"}}\n",
                    index % 7
                )
            })
            .collect();
        let answer = ingest(server.address, body.as_bytes()).expect("ingest answers");
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        acknowledged.push(unix_now());
        if let Some(pause) = (EVERY * (batch as u32 + 1)).checked_sub(started.elapsed()) {
            std::thread::sleep(pause);
        }
    }
    let total = (BATCH * BATCHES) as f64;
    let counted = eventually(Duration::from_secs(60), || {
        prometheus
            .query("mm_ingest_events_total", unix_now())
            .filter(|counted| *counted == total)
    });
    assert_eq!(counted, Some(total), "the counter Prometheus holds");

    // The rate over the middle of the run, against what the test acknowledged in that window.
    let (from, to) = (acknowledged[4], acknowledged[BATCHES - 4]);
    let window = (to - from).round().max(1.0);
    let driven = acknowledged
        .iter()
        .filter(|at| **at > to - window && **at <= to)
        .count() as f64
        * BATCH as f64
        / window;
    let rate = prometheus
        .query(&format!("rate(mm_ingest_events_total[{window}s])"), to)
        .expect("a rate");
    assert!(
        (rate - driven).abs() <= driven * 0.3,
        "PromQL rate {rate:.1}/s, driven {driven:.1}/s over {window} s"
    );
}
