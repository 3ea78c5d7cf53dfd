//! A Kafka-protocol cluster whose brokers can be restarted with their log kept: librdkafka's
//! own mock cluster (the rdkafka crate's `MockCluster`), hosted in a process of its own, as
//! the tansu broker is, for tests (through `mm_testkit::MockKafka`) whose clients (a server
//! under test, the test's own) reach it over TCP.
//!
//! `mm-mock-kafka [BROKERS]` (default 3) prints `bootstrap HOST:PORT,…` on stdout, then reads
//! one command a line on stdin and answers each with one line, `ok` or `error MESSAGE`:
//!
//! - `topic NAME PARTITIONS REPLICATION`: creates a topic (the mock brokers do not implement
//!   the CreateTopics API, so clients cannot);
//! - `down ID` / `up ID`: takes broker `ID` (1..=BROKERS, or -1 for every broker) down, closing
//!   its connections and refusing new ones, or brings it back on the same port. Topics, their
//!   records, committed offsets, groups and idempotent-producer state live in the cluster, not
//!   in a broker, so they are kept (group sessions keep expiring meanwhile); partition
//!   leadership does not move;
//! - `quit`, or the end of stdin (the test process is gone): exits.

use std::io::{BufRead, Write};

use rdkafka::mocking::MockCluster;

fn main() {
    let brokers: i32 = match std::env::args().nth(1) {
        Some(count) => count.parse().unwrap_or_else(|_| {
            eprintln!("usage: mm-mock-kafka [BROKERS]");
            std::process::exit(2)
        }),
        None => 3,
    };
    let cluster = MockCluster::new(brokers).unwrap_or_else(|error| {
        eprintln!("cannot create the mock cluster: {error}");
        std::process::exit(1)
    });
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "bootstrap {}", cluster.bootstrap_servers());
    let _ = stdout.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["quit"] => break,
            [] => continue,
            command => run(&cluster, command),
        };
        let reply = match answer {
            Ok(()) => "ok".to_owned(),
            Err(message) => format!("error {message}"),
        };
        if writeln!(stdout, "{reply}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
}

fn run<C: rdkafka::ClientContext>(
    cluster: &MockCluster<'_, C>,
    command: &[&str],
) -> Result<(), String> {
    let number = |text: &str| -> Result<i32, String> {
        text.parse().map_err(|_| format!("not a number: {text}"))
    };
    let done = match command {
        ["topic", name, partitions, replication] => {
            cluster.create_topic(name, number(partitions)?, number(replication)?)
        }
        ["down", broker] => cluster.broker_down(number(broker)?),
        ["up", broker] => cluster.broker_up(number(broker)?),
        _ => return Err(format!("unknown command: {}", command.join(" "))),
    };
    done.map_err(|error| error.to_string())
}
