//! A server started as a child process for the HTTP benchmarks, and its memory.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A child `serve` process on a loopback port.
pub struct ChildServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub address: std::net::SocketAddr,
}

impl ChildServer {
    /// Starts this executable's `serve` on `data_dir`, with `config` when given.
    pub fn start(data_dir: &Path, config: Option<&Path>) -> anyhow::Result<Self> {
        let executable = std::env::current_exe().context("locating this executable")?;
        let mut command = Command::new(executable);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("MM_LOG", "warn")
            .stdout(Stdio::piped());
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command.spawn().context("starting the server")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut reader = std::io::BufReader::new(stdout);
        let mut first_line = String::new();
        reader
            .read_line(&mut first_line)
            .context("reading the server's address")?;
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let url = first_line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .context("server did not print its address")?
            .to_owned();
        let address = url
            .trim_start_matches("http://")
            .parse()
            .context("server address")?;
        Ok(Self {
            child,
            url,
            address,
        })
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        status_field(self.child.id(), "VmRSS:")
    }

    /// Peak resident memory so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_field(self.child.id(), "VmHWM:")
    }

    /// SIGTERM for a graceful drain (30 s at most), then kill.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
