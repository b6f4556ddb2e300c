//! `roo-dev-broker`: a Kafka broker for tests, examples and the bench, on
//! one machine with nothing installed.
//!
//! It hosts librdkafka's mock cluster (`rdkafka::mocking::MockCluster`):
//! the Kafka wire protocol on real TCP sockets, with produce and fetch,
//! consumer groups (join, sync, heartbeats, session timeouts), offset
//! commits and idempotent producers, all in memory. It is not a production
//! broker (no disk, no replication): roo's tests use it because it is the
//! real client library's own protocol implementation, builds with roo in a
//! minute, and starts in milliseconds.
//!
//! On start it creates the `--topic NAME:PARTITIONS` topics and prints one
//! line, the bootstrap servers, on stdout. Then it reads commands on stdin,
//! one per line, answering each with `ok` or `error: ...`:
//!
//! - `topic NAME PARTITIONS`: create a topic;
//! - `down`: every broker drops its connections and refuses new ones (a
//!   broker outage; the data, groups and offsets stay);
//! - `up`: the brokers accept connections again;
//! - `quit`: exit.
//!
//! End of input does not stop it (run it with stdin closed and it serves
//! until killed).

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Parser;
use rdkafka::mocking::MockCluster;

#[derive(Parser)]
#[command(
    name = "roo-dev-broker",
    about = "A Kafka mock cluster for tests and examples"
)]
struct Cli {
    /// Brokers in the cluster.
    #[arg(long, default_value_t = 1)]
    brokers: i32,
    /// A topic to create, as NAME:PARTITIONS (repeatable).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    topics: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cluster = match MockCluster::new(cli.brokers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roo-dev-broker: starting the mock cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    for topic in &cli.topics {
        let created = topic
            .rsplit_once(':')
            .ok_or_else(|| "expected NAME:PARTITIONS".to_string())
            .and_then(|(name, parts)| create(&cluster, name, parts));
        if let Err(e) = created {
            eprintln!("roo-dev-broker: --topic {topic}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("{}", cluster.bootstrap_servers());
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            [] => continue,
            ["topic", name, parts] => create(&cluster, name, parts),
            ["down"] => cluster.broker_down(-1).map_err(|e| e.to_string()),
            ["up"] => cluster.broker_up(-1).map_err(|e| e.to_string()),
            ["quit"] => return ExitCode::SUCCESS,
            _ => Err(format!(
                "unknown command {line:?}: expected `topic NAME PARTITIONS`, `down`, `up` or `quit`"
            )),
        };
        match answer {
            Ok(()) => println!("ok"),
            Err(e) => println!("error: {e}"),
        }
        let _ = std::io::stdout().flush();
    }
    // Stdin closed: serve until killed.
    loop {
        std::thread::park();
    }
}

fn create<C: rdkafka::ClientContext>(
    cluster: &MockCluster<'_, C>,
    name: &str,
    partitions: &str,
) -> Result<(), String> {
    let partitions: i32 = partitions
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("partitions {partitions:?}: expected a positive integer"))?;
    cluster
        .create_topic(name, partitions, 1)
        .map_err(|e| format!("creating topic {name}: {e}"))
}
