//! What the daemon tests share: the example's files, the binary, and a
//! running daemon whose stderr is collected.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::RecordBatch;

pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/fraud")
        .join(name)
}

pub fn roo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_roo"))
}

/// A running daemon whose stderr lines are collected on a thread.
pub struct Daemon {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    ready_dir: tempfile::TempDir,
    ready: Option<Ready>,
}

/// What the daemon's `--ready-file` says: the addresses it bound.
#[derive(Clone, Debug)]
pub struct Ready {
    pub metrics: Option<String>,
    pub flight: Option<String>,
    /// The online V2 REST and gRPC endpoints.
    pub online_http: Option<String>,
    pub online_grpc: Option<String>,
    /// Pipeline name → its TCP source's address.
    pub tcp: HashMap<String, String>,
}

impl Daemon {
    pub fn start(config: &Path, stdout: Stdio) -> Self {
        let ready_dir = tempfile::tempdir().unwrap();
        let ready_file = ready_dir.path().join("ready.json");
        let mut child = roo()
            .args(["serve", "--config", config.to_str().unwrap()])
            .arg("--ready-file")
            .arg(&ready_file)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .env("ROO_LOG", "info")
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            ready_dir,
            ready: None,
        }
    }

    /// Waits until the daemon has written its ready file (every pipeline
    /// started, every listener bound) and, with a metrics endpoint, until
    /// `/healthz` answers; returns what the file says.
    pub fn ready(&mut self) -> Ready {
        if let Some(r) = &self.ready {
            return r.clone();
        }
        let file = self.ready_dir.path().join("ready.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                break text;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
                    self.seen.push(line);
                }
                panic!(
                    "the daemon exited ({status}) before it was ready:\n{}",
                    self.seen.join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon is not ready after 60 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let text_of = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let ready = Ready {
            metrics: text_of(&v["metrics"]),
            flight: text_of(&v["flight"]),
            online_http: text_of(&v["online_http"]),
            online_grpc: text_of(&v["online_grpc"]),
            tcp: v["pipelines"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| Some((text_of(&p["name"])?, text_of(&p["tcp"])?)))
                .collect(),
        };
        if let Some(addr) = &ready.metrics {
            let (status, body) = http_get(addr, "/healthz");
            assert_eq!((status, body.as_str()), (200, "ok\n"));
        }
        self.ready = Some(ready.clone());
        ready
    }

    /// A metric from `/metrics`, summed over its series (every pipeline).
    pub fn metric(&mut self, name: &str) -> f64 {
        let addr = self.ready().metrics.expect("a metrics endpoint");
        if let Some(status) = self.child.try_wait().unwrap() {
            while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
                self.seen.push(line);
            }
            panic!("the daemon exited ({status}):\n{}", self.seen.join("\n"));
        }
        let (status, text) = http_get(&addr, "/metrics");
        assert_eq!(status, 200);
        metric_in(&text, name)
    }

    /// Waits until a metric reaches `at_least`; returns its value.
    pub fn wait_metric(&mut self, name: &str, at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.metric(name);
            if v >= at_least {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {v}, not {at_least}, after 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits for a line `… PREFIX ADDRESS`; returns the address.
    pub fn address(&mut self, prefix: &str) -> String {
        let line = self.wait_for(prefix);
        line[line.find(prefix).unwrap() + prefix.len()..]
            .trim()
            .to_string()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for exit; returns (status code, every stderr line).
    pub fn finish(mut self) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.code(), std::mem::take(&mut self.seen))
    }
}

/// A test that fails midway does not leave its daemon running.
impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every batch of the Arrow IPC files in `dir`, in file-name order; no
/// partial file may be left.
pub fn read_ipc_dir(dir: &Path) -> Vec<RecordBatch> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files
            .iter()
            .all(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.')),
        "a partial file was left: {files:?}"
    );
    files
        .iter()
        .flat_map(|f| {
            arrow_ipc::reader::FileReader::try_new(std::fs::File::open(f).unwrap(), None)
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A metric's value in an exposition, summed over its series.
pub fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET over HTTP/1.1 with a plain socket: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: roo\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The `score` column of every batch, in order.
pub fn scores(batches: &[RecordBatch]) -> Vec<f32> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("score")
                .unwrap()
                .as_primitive::<Float32Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// `roo score --device DEVICE` on the bundled sample into `output` (Arrow
/// IPC): its scores.
pub fn score_sample(device: &str, output: &Path) -> Vec<f32> {
    let run = roo()
        .args(["score", "--device", device, "--model"])
        .arg(example("model.json"))
        .arg("--input")
        .arg(example("transactions.csv"))
        .arg("--output")
        .arg(output)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let file = std::fs::File::open(output).unwrap();
    let batches: Vec<RecordBatch> = arrow_ipc::reader::FileReader::try_new(file, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    scores(&batches)
}

/// The Python the tests drive clients with (`ROO_PYTHON`, else `python3`),
/// if it can import `modules` (comma-separated); without it the caller
/// skips, loudly, unless `ROO_REQUIRE_PYARROW` is set (as CI sets).
pub fn python(modules: &str) -> Option<String> {
    let python = std::env::var("ROO_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(python);
    }
    if std::env::var_os("ROO_REQUIRE_PYARROW").is_some() {
        panic!("ROO_REQUIRE_PYARROW is set but {python} cannot import {modules}");
    }
    eprintln!("SKIPPED: {python} cannot import {modules}; set ROO_PYTHON to a Python that can");
    None
}

/// `roo check-config` on `text` written beside the example's model (as
/// `model.json`).
fn check_config_output(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example("model.json"), dir.path().join("model.json")).unwrap();
    let path = dir.path().join("roo.toml");
    std::fs::write(&path, text).unwrap();
    roo()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap()
}

/// `roo check-config` on `text`: it must accept.
pub fn check_config_accepted(text: &str) {
    let out = check_config_output(text);
    assert!(
        out.status.success(),
        "{text}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every published file of a sink directory, read back in name order; a
/// partial file left there fails.
pub fn read_published(dir: &Path) -> Vec<RecordBatch> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.'),
            "a partial file is left in {}: {name}",
            dir.display()
        );
        let schema = std::sync::Arc::new(arrow_schema::Schema::empty());
        roo_scheduler::sinks::layout::read_output_file(&f, &schema, &mut |b| {
            out.push(b);
            true
        })
        .unwrap();
    }
    out
}

/// Rows (columns from `first` on) as text lines, floats by their bits,
/// with the count of each line: a multiset to compare runs by.
pub fn row_multiset(batches: &[RecordBatch], first: &str) -> BTreeMap<String, usize> {
    let columns = columns_as_text(batches, first);
    let n = columns.first().map_or(0, |(_, v)| v.len());
    let mut out = BTreeMap::new();
    for r in 0..n {
        let line: Vec<&str> = columns.iter().map(|(_, v)| v[r].as_str()).collect();
        *out.entry(line.join(",")).or_insert(0) += 1;
    }
    out
}

/// `roo check-config` on `text` written beside the example's model (as
/// `model.json`): it must refuse; returns what it said on stderr.
pub fn check_config_refused(text: &str) -> String {
    let out = check_config_output(text);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every column from `first` on, as text (floats by their bits, so a
/// comparison is bit for bit), with its name.
pub fn columns_as_text(batches: &[RecordBatch], first: &str) -> Vec<(String, Vec<String>)> {
    use arrow_array::Array;
    let schema = batches[0].schema();
    let first = schema.index_of(first).unwrap();
    (first..schema.fields().len())
        .map(|c| {
            let values = batches
                .iter()
                .flat_map(|b| {
                    let col = b.column(c);
                    (0..col.len()).map(move |r| {
                        if col.is_null(r) {
                            "null".to_string()
                        } else if let Some(f) =
                            col.as_any().downcast_ref::<arrow_array::Float64Array>()
                        {
                            format!("{:016x}", f.value(r).to_bits())
                        } else {
                            arrow_cast::display::array_value_to_string(col, r).unwrap()
                        }
                    })
                })
                .collect();
            (schema.field(c).name().clone(), values)
        })
        .collect()
}

/// `roo score --config CONFIG --input INPUT --output OUTPUT` (an Arrow IPC
/// file); it must succeed. Returns the output's batches and what it said.
pub fn score_config(config: &Path, input: &Path, output: &Path) -> (Vec<RecordBatch>, String) {
    let run = roo()
        .args(["score", "--config"])
        .arg(config)
        .args(["--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{said}");
    let file = std::fs::File::open(output).unwrap();
    let batches = arrow_ipc::reader::FileReader::try_new(file, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (batches, said)
}

/// Runs `tests/python/SCRIPT` with `args` under `python`; it must exit 0.
/// Returns what it printed (stdout, then stderr).
pub fn run_python(python: &str, script: &str, args: &[&std::ffi::OsStr]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new(python).arg(path).args(args).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script}: {said}");
    said
}

/// The roo binary under test, as an argument.
pub fn roo_path() -> &'static std::ffi::OsStr {
    std::ffi::OsStr::new(env!("CARGO_BIN_EXE_roo"))
}

/// A process's resident memory, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}
