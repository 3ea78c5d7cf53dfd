//! A Kafka-protocol cluster whose brokers can be restarted with their log kept, for tests that
//! tansu cannot serve (it does not survive a restart with clients attached): librdkafka's mock
//! cluster, hosted by the `mm-mock-kafka` helper process (`src/bin/mm-mock-kafka.rs` has its
//! protocol and what the mock keeps across a restart).
//!
//! Cargo builds binaries only for the tests of their own package (and not those of
//! dependencies), so the server's tests cannot name the helper with `CARGO_BIN_EXE_…`.
//! [`MockKafka::start`] has cargo build it into the target directory and profile the running
//! test was built in (`<target>/<profile>/`, the parent of the test executable's `deps/`),
//! with the test's own package selected too: dependencies then resolve to the features the
//! test build compiled them with, so librdkafka is not built a second time (minutes on two
//! cores). When the helper is up to date this takes a second or two. `MM_MOCK_KAFKA` names a
//! prebuilt helper instead.

use std::io::{BufRead, BufReader, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const HELPER: &str = "mm-mock-kafka";

/// A running mock cluster (the helper process); dropping it ends the process.
#[derive(Debug)]
pub struct MockKafka {
    child: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
    bootstrap: String,
    brokers: i32,
}

impl MockKafka {
    /// Starts a cluster of `brokers` brokers (ids `1..=brokers`).
    pub fn start(brokers: i32) -> Self {
        let helper = helper();
        let mut child = Command::new(&helper)
            .arg(brokers.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {} ({error})", helper.display()));
        let commands = child.stdin.take().expect("stdin is piped");
        let mut answers = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        answers
            .read_line(&mut line)
            .expect("the mock cluster prints its bootstrap servers");
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap ")
            .unwrap_or_else(|| panic!("no bootstrap servers in {line:?}"))
            .to_owned();
        Self {
            child,
            commands,
            answers,
            bootstrap,
            brokers,
        }
    }

    /// `host:port,…`, as `bootstrap.servers` takes it.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// The broker ids.
    pub fn brokers(&self) -> RangeInclusive<i32> {
        1..=self.brokers
    }

    /// Creates a topic, its partitions' leaders spread over the brokers.
    pub fn create_topic(&mut self, name: &str, partitions: u32, replication: i32) {
        self.command(&format!("topic {name} {partitions} {replication}"));
    }

    /// Takes a broker down (`-1`: every broker): its connections close and new ones are
    /// refused; its partitions keep their leader, so they wait for it.
    pub fn broker_down(&mut self, broker: i32) {
        self.command(&format!("down {broker}"));
    }

    /// Brings a broker back on the same port, with everything the cluster held.
    pub fn broker_up(&mut self, broker: i32) {
        self.command(&format!("up {broker}"));
    }

    fn command(&mut self, command: &str) {
        writeln!(self.commands, "{command}")
            .and_then(|()| self.commands.flush())
            .unwrap_or_else(|error| panic!("sending {command:?} to the mock cluster: {error}"));
        let mut answer = String::new();
        self.answers
            .read_line(&mut answer)
            .unwrap_or_else(|error| panic!("the mock cluster's answer to {command:?}: {error}"));
        assert_eq!(
            answer.trim(),
            "ok",
            "the mock cluster's answer to {command:?}"
        );
    }
}

impl Drop for MockKafka {
    fn drop(&mut self) {
        let _ = writeln!(self.commands, "quit");
        let _ = self.commands.flush();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The helper's path, built first (see the module documentation).
fn helper() -> PathBuf {
    if let Some(path) = std::env::var_os("MM_MOCK_KAFKA") {
        return PathBuf::from(path);
    }
    let test_executable = std::env::current_exe().expect("the test executable's path");
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = test_executable
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in <target>/<profile>/deps");
    let path = profile_dir.join(HELPER);
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev",
        Some(name) => name,
    };
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "--quiet",
        "--package",
        "mm-testkit",
        "--bin",
        HELPER,
    ]);
    // Cargo (and nextest) tell a test which package it belongs to.
    if let Ok(package) = std::env::var("CARGO_PKG_NAME") {
        command.args(["--package", &package]);
    }
    let built = command
        .args(["--profile", profile, "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir)
        .status();
    match built {
        Ok(status) if status.success() => {}
        // Without cargo (tests run from an archive, say) a helper built earlier still does.
        _ if path.exists() => eprintln!("could not build {HELPER}; using {}", path.display()),
        outcome => {
            panic!("building {HELPER} (`cargo build -p mm-testkit --bin {HELPER}`): {outcome:?}")
        }
    }
    path
}
