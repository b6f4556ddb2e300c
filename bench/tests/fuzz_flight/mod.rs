//! The Flight target of the fuzz test: mutated sequences of `FlightData`
//! messages sent by DoPut and DoExchange to a live `roo serve` (a real
//! gRPC server: the bytes pass tonic's decoding, then roo's descriptor,
//! schema and record-batch decoding). An input is the messages, each
//! protobuf-encoded behind a little-endian u32 length; a mutation that
//! breaks a message's protobuf drops that message (tonic would refuse it
//! before roo sees it). Each case must end in an OK call or an error
//! status within 30 s; the daemon must stay up, and print no panic.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Float32Array, RecordBatch};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightData, FlightDescriptor};
use arrow_schema::{DataType, Field, Schema};
use futures::{StreamExt, TryStreamExt};
use prost::Message;

use super::{kind, Outcome, Target};

/// Messages sent per case at most.
const MESSAGES_MAX: usize = 64;
/// How long one call may take before the case counts as a hang.
const CALL_SECS: u64 = 30;

/// A `roo serve` with a Flight endpoint, killed when dropped.
struct Live {
    child: Child,
    addr: String,
    log: PathBuf,
    /// How far the log has been read for panics.
    seen: u64,
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Live {
    fn start(roo: &Path, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("model.json"),
            r#"{"kind": "linear", "features": ["x", "y"], "weights": [1.0, 2.0], "bias": 0.5}"#,
        )
        .unwrap();
        // Checkpoints every 0.05 s: a named stream's call (a descriptor
        // mutated to two elements) ends once its rows are durable.
        std::fs::write(
            dir.join("roo.toml"),
            r#"[server]
threads = 1
state_dir = "state"
checkpoint_secs = 0.05

[flight]
listen = "127.0.0.1:0"
idle_secs = 5

[[pipeline]]
name = "p"
model = "model.json"
device = "cpu"
max_rows = 64

[pipeline.source]
kind = "flight"
columns = ["x", "y"]

[[pipeline.sink]]
kind = "files"
dir = "out"
format = "arrow"
"#,
        )
        .unwrap();
        let ready = dir.join("ready.json");
        let log = dir.join("roo.log");
        let child = Command::new(roo)
            .current_dir(dir)
            .args(["serve", "--config", "roo.toml", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut live = Self {
            child,
            addr: String::new(),
            log,
            seen: 0,
        };
        while !ready.exists() {
            assert!(
                live.child.try_wait().unwrap().is_none(),
                "roo serve exited: {}",
                std::fs::read_to_string(&live.log).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "roo serve not ready in 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ready: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
        live.addr = ready["flight"].as_str().unwrap().to_string();
        live
    }

    /// Panics (the case fails) when the daemon has died or logged a panic
    /// since the last look.
    fn check(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "roo serve died ({status}): {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let mut file = std::fs::File::open(&self.log).unwrap();
        let mut text = String::new();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(self.seen)).unwrap();
        file.read_to_string(&mut text).unwrap();
        self.seen += text.len() as u64;
        assert!(!text.contains("panicked at"), "roo serve panicked: {text}");
    }
}

fn batch(rows: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float32, true),
        Field::new("y", DataType::Float32, true),
    ]));
    let x: Vec<f32> = (0..rows).map(|i| i as f32 * 0.5).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Float32Array::from(x.clone())),
            Arc::new(Float32Array::from(x)),
        ],
    )
    .unwrap()
}

/// The messages as an input: each protobuf-encoded behind its u32 length.
fn framed(messages: &[FlightData]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        let bytes = m.encode_to_vec();
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// The messages of an input (a length past the end takes the rest; one
/// that is not protobuf is dropped).
fn messages(mut input: &[u8]) -> Vec<FlightData> {
    let mut out = Vec::new();
    while input.len() >= 4 && out.len() < MESSAGES_MAX {
        let len = u32::from_le_bytes(input[..4].try_into().unwrap()) as usize;
        let end = (4 + len).min(input.len());
        if let Ok(m) = FlightData::decode(&input[4..end]) {
            out.push(m);
        }
        input = &input[end..];
    }
    out
}

fn seeds(rt: &tokio::runtime::Runtime) -> Vec<Vec<u8>> {
    let encode = |path: Vec<&str>, batches: Vec<RecordBatch>| {
        let stream = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(
                path.into_iter().map(String::from).collect(),
            )))
            .build(futures::stream::iter(batches.into_iter().map(Ok)));
        let data: Vec<FlightData> = rt.block_on(stream.try_collect()).unwrap();
        framed(&data)
    };
    vec![
        encode(vec!["p"], vec![batch(3), batch(100)]),
        encode(vec!["p", "fuzz-stream"], vec![batch(10)]),
        encode(vec!["p"], vec![batch(1)]),
    ]
}

/// One case: DoPut or DoExchange (by the input's length) of its messages.
async fn call(addr: &str, messages: Vec<FlightData>, exchange: bool) -> Outcome {
    let channel = match tonic::transport::Endpoint::new(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
    {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to roo serve: {e}"),
    };
    let mut client = FlightServiceClient::new(channel);
    let input = futures::stream::iter(messages);
    let replies = if exchange {
        client
            .do_exchange(input)
            .await
            .map(|r| r.into_inner().map_ok(|_| ()).boxed())
    } else {
        client
            .do_put(input)
            .await
            .map(|r| r.into_inner().map_ok(|_| ()).boxed())
    };
    let mut replies = match replies {
        Ok(r) => r,
        Err(status) => return Outcome::Refused(kind(&status.message())),
    };
    loop {
        match replies.try_next().await {
            Ok(Some(())) => continue,
            Ok(None) => return Outcome::Read,
            Err(status) => return Outcome::Refused(kind(&status.message())),
        }
    }
}

pub(super) fn target(roo: &Path, dir: &Path, cases: usize) -> Target {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seeds = seeds(&rt);
    let live = Mutex::new(Live::start(roo, &dir.join("flight")));
    Target {
        name: "flight messages (live roo serve)",
        seeds,
        run: Box::new(move |input| {
            let mut live = live.lock().unwrap_or_else(|p| p.into_inner());
            let exchange = input.len() % 2 == 1;
            let outcome = rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(CALL_SECS),
                    call(&live.addr, messages(input), exchange),
                )
                .await
            });
            live.check();
            outcome.unwrap_or_else(|_| panic!("a call took over {CALL_SECS} s"))
        }),
        cases,
    }
}
