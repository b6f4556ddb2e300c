//! What the daemon tests share: the example's files, the binary, and a
//! running daemon whose stderr is collected.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
}

impl Daemon {
    pub fn start(config: &Path, stdout: Stdio) -> Self {
        let mut child = roo()
            .args(["serve", "--config", config.to_str().unwrap()])
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
        (status.code(), self.seen)
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
