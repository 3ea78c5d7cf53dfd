//! Shared fixtures for Merchant Monitor's integration tests: start the real binary as a child
//! process, talk HTTP to it, and compute expected rollups with a plain fold. Two Kafka-protocol
//! clusters to run it against: the tansu [`Broker`], and librdkafka's mock cluster
//! ([`MockKafka`]) for broker restarts.

mod broker;
mod disk;
mod mock_kafka;

pub use broker::Broker;
pub use disk::SmallDisk;
pub use mock_kafka::MockKafka;

/// A Kafka-protocol cluster a test's clients can reach.
pub trait KafkaCluster {
    /// `host:port[,host:port…]`, as `bootstrap.servers` takes it.
    fn bootstrap(&self) -> String;
}

impl KafkaCluster for Broker {
    fn bootstrap(&self) -> String {
        Broker::bootstrap(self)
    }
}

impl KafkaCluster for MockKafka {
    fn bootstrap(&self) -> String {
        MockKafka::bootstrap(self)
    }
}

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mm_model::ApiCall;
use mm_model::rollup::{MERCHANT_TOTAL_API, Rollup, WindowKey};
use mm_model::time::minute_of;

/// A server started as a child process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub address: SocketAddr,
    pub data_dir: PathBuf,
    stderr: Option<std::process::ChildStderr>,
}

impl ServerProcess {
    /// Starts `executable serve --listen 127.0.0.1:0 --data-dir DIR ARGS...` and waits until it
    /// prints its address.
    pub fn start(executable: &str, data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_command(executable, "serve", data_dir, args, env)
    }

    /// Like [`ServerProcess::start`], keeping the JSON lines the server logs (`--log-json`)
    /// as they come; other lines go to the test's stderr.
    pub fn start_logged(
        executable: &str,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (
        Self,
        std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    ) {
        let mut server = Self::spawn(executable, "serve", data_dir, args, env, Stdio::piped());
        let stderr = server.stderr.take().expect("stderr is piped");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(value) => collected.lock().expect("log lines").push(value),
                    Err(_) => eprintln!("{line}"),
                }
            }
        });
        (server, lines)
    }

    /// Like [`ServerProcess::start`] with another command that serves (`demo`).
    pub fn start_command(
        executable: &str,
        subcommand: &str,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(
            executable,
            subcommand,
            data_dir,
            args,
            env,
            Stdio::inherit(),
        )
    }

    fn spawn(
        executable: &str,
        subcommand: &str,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Self {
        let mut command = Command::new(executable);
        command
            .args([subcommand, "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            // MM_TEST_LOG=info shows the servers' logs in a failing test's output.
            .env(
                "MM_LOG",
                std::env::var("MM_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("server starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("server prints its address");
        let address = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .parse()
            .expect("address parses");
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let stderr = child.stderr.take();
        Self {
            child,
            address,
            data_dir: data_dir.to_owned(),
            stderr,
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited with success.
    pub fn terminate(mut self) -> bool {
        #[allow(unsafe_code)]
        // SAFETY: sending a signal to our own child process id has no memory-safety impact.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        false
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`; `Err` when the connection fails.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = input.windows(2).position(|window| window == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&input[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&input[start..(start + size).min(input.len())]);
        input = &input[(start + size + 2).min(input.len())..];
    }
    out
}

/// `GET path`, panicking on connection failure.
pub fn get(address: SocketAddr, path: &str) -> Response {
    request(address, "GET", path, &[], b"").expect("server answers")
}

/// `POST /v1/ingest` with an NDJSON body.
pub fn ingest(address: SocketAddr, body: &[u8]) -> std::io::Result<Response> {
    request(
        address,
        "POST",
        "/v1/ingest",
        &[("Content-Type", "application/x-ndjson")],
        body,
    )
}

/// Expected rollups: a plain fold over the events, API series and merchant-wide series.
pub fn oracle<'a>(events: impl IntoIterator<Item = &'a ApiCall>) -> BTreeMap<WindowKey, Rollup> {
    let mut expected = BTreeMap::new();
    for event in events {
        for api in [event.api.as_str(), MERCHANT_TOTAL_API] {
            let key = WindowKey {
                merchant: event.merchant.clone(),
                api: api.to_owned(),
                minute: minute_of(event.ts_us),
            };
            expected
                .entry(key)
                .or_insert_with(Rollup::default)
                .record(event.status, event.latency_ms);
        }
    }
    expected
}

pub use mm_model::time::now_us;

/// An event as an NDJSON line in the default field names.
pub fn ndjson_line(event: &ApiCall) -> String {
    let mut line = serde_json::json!({
        "ts": mm_model::time::format_rfc3339(event.ts_us),
        "merchant": event.merchant,
        "api": event.api,
        "status": event.status,
        "latency_ms": event.latency_ms,
        "corr_id": event.corr_id,
    })
    .to_string();
    line.push('\n');
    line
}

/// The value of one sample in a Prometheus text exposition: the line that starts with exactly
/// `name_with_labels` (labels as the server renders them, e.g.
/// `mm_ingest_rejected_total{reason="invalid_json"}`) followed by a space. `None` when no
/// such line exists, so `mm_x 1` never matches `mm_x 10` or `mm_x_total 1`.
pub fn metric_value(text: &str, name_with_labels: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name_with_labels)?.strip_prefix(' '))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// Calls the merchant ranking counts (default period: the last hour, top 100 merchants).
pub fn ranked_calls(address: SocketAddr) -> u64 {
    get(address, "/v1/merchants?limit=100").json()["merchants"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| row["calls"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small seeded generator of API calls around `now_us`, spread over `span_minutes` back.
pub fn calls(
    seed: u64,
    count: usize,
    merchants: usize,
    apis: &[&str],
    now: i64,
    span_minutes: i64,
) -> Vec<ApiCall> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let statuses = [
        200u16, 200, 200, 200, 201, 204, 400, 404, 429, 500, 502, 503,
    ];
    (0..count)
        .map(|index| {
            let back = (next() as i64 % (span_minutes * 60_000)) * 1000;
            ApiCall {
                ts_us: now - back,
                merchant: format!("m{}", next() as usize % merchants),
                api: apis[next() as usize % apis.len()].to_owned(),
                status: statuses[next() as usize % statuses.len()],
                latency_ms: f64::from(next() % 2_000_000) / 1000.0,
                corr_id: format!("c-{seed}-{index}"),
                partner: None,
                method: None,
                path: None,
                host: None,
                region: None,
                attributes: None,
            }
        })
        .collect()
}

/// A tiny xorshift generator: seeded, so a test can print its seed and a failure can be
/// replayed, and varied per run when seeded from the clock.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn metric_value_reads_exactly_the_named_sample() {
        let text = "# HELP mm_x_total A counter.\n# TYPE mm_x_total counter\nmm_x_total 10\n\
                    mm_x_total_more 1\nmm_y{kind=\"a b\"} 2.5 1700000000\nmm_z NaN\n";
        assert_eq!(metric_value(text, "mm_x_total"), Some(10.0));
        assert_eq!(metric_value(text, "mm_x"), None);
        assert_eq!(metric_value(text, "mm_y{kind=\"a b\"}"), Some(2.5));
        assert_eq!(metric_value(text, "mm_y"), None);
        assert!(metric_value(text, "mm_z").is_some_and(f64::is_nan));
        assert_eq!(metric_value(text, "mm_w"), None);
    }
}
