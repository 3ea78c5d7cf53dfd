//! A real Kafka-protocol broker for tests: `tansu`, started as a child process on a free
//! loopback port. `.ci/run` installs it when it is missing; a test that needs it fails (it is
//! not skipped) when it cannot be started.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    pub address: SocketAddr,
    storage: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

fn tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    let cargo_bin = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cargo/bin/tansu"))
        .filter(|path| path.exists());
    cargo_bin.unwrap_or_else(|| PathBuf::from("tansu"))
}

impl Broker {
    /// A broker keeping everything in memory.
    pub fn in_memory() -> Self {
        Self::start("memory://tansu/".to_owned())
    }

    /// A broker keeping topics and committed offsets in an SQLite file under `dir`, so that
    /// they survive [`Broker::restart`].
    pub fn persistent(dir: &Path) -> Self {
        Self::start(format!("sqlite://{}", dir.join("tansu.db").display()))
    }

    fn start(storage: String) -> Self {
        let address: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let mut broker = Self {
            child: None,
            address,
            storage,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let url = format!("tcp://{}", self.address);
        let child = Command::new(tansu())
            .args(["broker", "--storage-engine", &self.storage])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start the tansu broker ({error}); `.ci/run` installs it")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&self.address, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.address
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `host:port`, as `--kafka-brokers` takes it.
    pub fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://{}", self.address)])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create runs");
        assert!(status.success(), "creating topic {name}");
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
