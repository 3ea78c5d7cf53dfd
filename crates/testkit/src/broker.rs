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
    /// Working directory of the broker process (an SQLite path is relative to it).
    dir: Option<PathBuf>,
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
        Self::try_in_memory().unwrap_or_else(|error| panic!("{error}"))
    }

    /// A broker keeping everything in memory, or why it could not be started.
    pub fn try_in_memory() -> Result<Self, String> {
        Self::try_start("memory://tansu/".to_owned(), None)
    }

    /// A broker keeping topics and committed offsets in an SQLite file under `dir`, so that
    /// they survive [`Broker::restart`].
    pub fn persistent(dir: &Path) -> Self {
        // tansu reads the SQLite path relative to its working directory.
        Self::start("sqlite://tansu.db".to_owned(), Some(dir.to_owned()))
    }

    fn start(storage: String, dir: Option<PathBuf>) -> Self {
        Self::try_start(storage, dir).unwrap_or_else(|error| panic!("{error}"))
    }

    fn try_start(storage: String, dir: Option<PathBuf>) -> Result<Self, String> {
        let address = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("no free loopback port for a broker: {error}"))?;
        let mut broker = Self {
            child: None,
            address,
            storage,
            dir,
        };
        broker.try_spawn()?;
        Ok(broker)
    }

    fn spawn(&mut self) {
        self.try_spawn().unwrap_or_else(|error| panic!("{error}"));
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let url = format!("tcp://{}", self.address);
        let mut command = Command::new(tansu());
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        let child = command
            .args(["broker", "--storage-engine", &self.storage])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(match &self.dir {
                Some(dir) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("tansu.log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
                None => Stdio::null(),
            })
            .spawn()
            .map_err(|error| {
                format!(
                    "cannot start the tansu broker `{}` ({error}); `.ci/run` installs it",
                    tansu().display()
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&self.address, Duration::from_millis(200)).is_err() {
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "tansu did not listen on {} within 30 s",
                    self.address
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
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

    /// Stops the broker the way an operator does (SIGTERM, waiting for it to exit).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on the pid of a child this fixture started and has not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGCONT);
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing answers, as in a
    /// network partition or a long pause.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen broker run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on the pid of a child this fixture started and has not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Restarts it on the same address and storage: stopped gracefully, then started again.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
