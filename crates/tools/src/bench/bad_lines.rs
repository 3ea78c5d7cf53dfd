//! `bench --only bad-lines`: 64 clients send a 16 MiB body of unparseable lines (`x\n`) in a
//! loop to a child server; reports the server's resident memory before, at its peak and after
//! the burst, against the configured request-memory bound, and what the clients were answered.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::BenchArgs;
use super::child::ChildServer;

const CLIENTS: usize = 64;
const BODY_BYTES: usize = 16 * 1024 * 1024;
/// The server's default `[http] max_request_memory_bytes`.
const BOUND_MIB: u64 = 512;

pub(super) fn bench_bad_lines(args: &BenchArgs, work_dir: &Path) -> anyhow::Result<()> {
    let data_dir = work_dir.join("bad-lines-data");
    let _ = std::fs::remove_dir_all(&data_dir);
    let server = ChildServer::start(&data_dir, None)?;
    std::thread::sleep(Duration::from_secs(1));
    let before = server.rss_kib().unwrap_or(0);
    let body: Arc<Vec<u8>> = Arc::new(b"x\n".repeat(BODY_BYTES / 2));
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let largest_answer = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (body, stop, answers, largest) = (
                body.clone(),
                stop.clone(),
                answers.clone(),
                largest_answer.clone(),
            );
            let address = server.address;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, length) = send(address, &body).unwrap_or((0, 0));
                    largest.fetch_max(length, Ordering::Relaxed);
                    if let Ok(mut answers) = answers.lock() {
                        *answers.entry(status).or_default() += 1;
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut peak = before;
    while started.elapsed() < Duration::from_secs(args.ingest_seconds) {
        peak = peak.max(server.rss_kib().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    std::thread::sleep(Duration::from_secs(5));
    let after = server.rss_kib().unwrap_or(0);
    let high_water = server.peak_rss_kib().unwrap_or(peak);
    server.stop()?;
    let answers = answers
        .lock()
        .map(|answers| answers.clone())
        .unwrap_or_default();
    println!(
        "bad-lines: {CLIENTS} clients × 16 MiB bodies of `x\\n` for {} s; request-memory bound {BOUND_MIB} MiB; server RSS before {} MiB, peak {} MiB (high-water mark {} MiB), 5 s after {} MiB; largest answer {} bytes; answers by status {answers:?} (0: connection failed)",
        args.ingest_seconds,
        before / 1024,
        peak / 1024,
        high_water / 1024,
        after / 1024,
        largest_answer.load(Ordering::Relaxed),
    );
    Ok(())
}

/// One POST /v1/ingest; the status and the answer's length.
fn send(address: SocketAddr, body: &[u8]) -> std::io::Result<(u16, u64)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let head = format!(
        "POST /v1/ingest HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    // A server that refuses early closes before the whole body is sent: read its answer.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let status = String::from_utf8_lossy(&answer[..answer.len().min(32)])
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, answer.len() as u64))
}
