//! The tracing benchmark: HTTP ingest and event publishing against a child server with traces
//! off, exported at a sampling ratio of 0.01 and at 1.0, alternating in one run. The spans go
//! over OTLP/HTTP to a sink in this process that reads and acknowledges every export, so the
//! server pays the export as it would to a collector. Each workload's block of runs starts with
//! an unmeasured one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::child::ChildServer;
use super::publish::{client, ingest_batches, post_workload, publish_batches};
use super::{BenchArgs, median};

/// The modes compared: traces off, then exported at each ratio.
const MODES: [Option<f64>; 3] = [None, Some(0.01), Some(1.0)];

/// An OTLP/HTTP endpoint that acknowledges every export and counts the bytes.
struct Sink {
    port: u16,
    bytes: Arc<AtomicU64>,
    exports: Arc<AtomicU64>,
}

impl Sink {
    fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let bytes = Arc::new(AtomicU64::new(0));
        let exports = Arc::new(AtomicU64::new(0));
        let (counted, exported) = (bytes.clone(), exports.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (counted, exported) = (counted.clone(), exported.clone());
                std::thread::spawn(move || serve(stream, &counted, &exported));
            }
        });
        Ok(Self {
            port,
            bytes,
            exports,
        })
    }
}

/// Answers each request of a keep-alive connection with an empty 200.
fn serve(stream: TcpStream, bytes: &AtomicU64, exports: &AtomicU64) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut lines = 0;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            lines += 1;
            if line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        if lines <= 1 {
            return;
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        bytes.fetch_add(length as u64, Ordering::Relaxed);
        exports.fetch_add(1, Ordering::Relaxed);
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

fn label(mode: Option<f64>) -> String {
    match mode {
        None => "off".into(),
        Some(ratio) => format!("sampling {ratio}"),
    }
}

pub(super) fn bench_tracing(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let events = args.events;
    let publish_bodies = Arc::new(publish_batches(events));
    let ingest_bodies = Arc::new(ingest_batches(work_dir, events)?);
    let sink = Sink::start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = client();
    // (workload, mode) → rates.
    let mut rates: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); MODES.len()]; 2];
    for round in 0..args.runs.max(1) {
        for (workload, publishing) in [false, true].into_iter().enumerate() {
            // Each round starts with another mode, so no mode always follows the same one, and
            // with an unmeasured run: the first run after the other workload is slower whatever
            // its mode (the disk is still writing the last one back).
            for step in 0..=MODES.len() {
                let warm_up = step == 0;
                let index = (round + step.max(1) - 1) % MODES.len();
                let mode = MODES[index];
                let data_dir = work_dir.join("tracing-data");
                let _ = std::fs::remove_dir_all(&data_dir);
                let config = work_dir.join("tracing.toml");
                let telemetry = match mode {
                    None => String::new(),
                    Some(ratio) => format!(
                        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}\"\nsampling_ratio = {ratio}\n",
                        sink.port
                    ),
                };
                std::fs::write(&config, telemetry)?;
                let exported_before = sink.bytes.load(Ordering::Relaxed);
                let server = ChildServer::start(&data_dir, Some(&config))?;
                let elapsed = runtime.block_on(post_workload(
                    &client,
                    &server.url,
                    publishing,
                    &publish_bodies,
                    &ingest_bodies,
                ))?;
                // A graceful stop exports what is buffered.
                server.stop()?;
                let rate = events as f64 / elapsed.as_secs_f64();
                if warm_up {
                    println!(
                        "tracing: round {}: {} warm-up ({}): {rate:.0} events/s, not counted",
                        round + 1,
                        if publishing { "publish" } else { "ingest" },
                        label(mode)
                    );
                    continue;
                }
                let exported = sink.bytes.load(Ordering::Relaxed) - exported_before;
                println!(
                    "tracing: round {}: {} with traces {}: {events} events in {:.2} s: {rate:.0} events/s ({exported} bytes of spans exported)",
                    round + 1,
                    if publishing { "publish" } else { "ingest" },
                    label(mode),
                    elapsed.as_secs_f64()
                );
                rates[workload][index].push(rate);
            }
        }
    }
    for (workload, name) in ["ingest", "publish"].into_iter().enumerate() {
        let medians: Vec<f64> = rates[workload]
            .iter_mut()
            .map(|rates| median(rates))
            .collect();
        let off = medians[0];
        let report: Vec<String> = MODES
            .into_iter()
            .zip(&medians)
            .map(|(mode, rate)| format!("{} {rate:.0} events/s ({:.2})", label(mode), rate / off))
            .collect();
        println!(
            "tracing: {name}, {events} events in batches of 500, medians of {} rounds (ratio to off): {}",
            args.runs.max(1),
            report.join("; ")
        );
    }
    println!(
        "tracing: the sink received {} exports, {} bytes in all",
        sink.exports.load(Ordering::Relaxed),
        sink.bytes.load(Ordering::Relaxed)
    );
    Ok(())
}
