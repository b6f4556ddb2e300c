//! The daemon as a measured process: `roo serve` started beside the bench,
//! waited for through its ready file, its `/metrics` read, its CPU time
//! split by thread role. The pipeline and Flight scenarios share it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The `roo` binary beside this one (the same build).
pub(crate) fn roo_binary() -> Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("roo");
    if !path.exists() {
        bail!(
            "{} not found; build it first: cargo build --release -p roo-appliance",
            path.display()
        );
    }
    Ok(path)
}

/// A `roo serve` process; stopped with SIGTERM by [`Daemon::stop`].
pub(crate) struct Daemon {
    child: Child,
    ready_file: PathBuf,
}

/// The addresses a daemon bound, from its `--ready-file`.
pub(crate) struct Ready {
    pub(crate) metrics: Option<String>,
    pub(crate) flight: Option<String>,
    /// The first pipeline's TCP source.
    pub(crate) tcp: Option<String>,
    /// The online V2 REST and gRPC endpoints.
    pub(crate) online_http: Option<String>,
    pub(crate) online_grpc: Option<String>,
}

impl Daemon {
    /// Starts `roo serve` on `config`; its ready file goes beside it.
    pub(crate) fn start(config: &Path) -> Result<Self> {
        Self::start_on(config, None)
    }

    /// The same, with the daemon's threads on CPU `cpu` only (when given).
    pub(crate) fn start_on(config: &Path, cpu: Option<usize>) -> Result<Self> {
        let ready_file = config.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready_file);
        let mut command = Command::new(roo_binary()?);
        command
            .args(["serve", "--config"])
            .arg(config)
            .arg("--ready-file")
            .arg(&ready_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(cpu) = cpu {
            pin_child(&mut command, cpu);
        }
        let child = command.spawn()?;
        Ok(Self { child, ready_file })
    }

    /// Waits until the daemon has started every pipeline and bound every
    /// listener (its ready file), up to 60 s.
    pub(crate) fn ready(&mut self) -> Result<Ready> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&self.ready_file) {
                break text;
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the daemon exited ({status}) before it was ready");
            }
            if Instant::now() > deadline {
                bail!("the daemon was not ready after 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let text_of = |v: &serde_json::Value| v.as_str().map(str::to_string);
        Ok(Ready {
            metrics: text_of(&v["metrics"]),
            flight: text_of(&v["flight"]),
            tcp: v["pipelines"]
                .as_array()
                .and_then(|p| p.iter().find_map(|p| text_of(&p["tcp"]))),
            online_http: text_of(&v["online_http"]),
            online_grpc: text_of(&v["online_grpc"]),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds used so far (utime + stime from /proc).
    pub(crate) fn cpu_s(&self) -> Result<f64> {
        let stat = format!("/proc/{}/stat", self.child.id());
        crate::report::proc_stat_cpu_s(Path::new(&stat))
            .map(|(_, secs)| secs)
            .with_context(|| format!("reading {stat}"))
    }

    /// The process's peak resident set so far, in MiB (VmHWM).
    pub(crate) fn peak_rss_mib(&self) -> Result<f64> {
        crate::report::peak_rss_mib(&self.child.id().to_string())
            .with_context(|| format!("reading /proc/{}/status", self.child.id()))
    }

    pub(crate) fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the daemon exited with {status}");
        }
        Ok(())
    }
}

/// A scenario that fails midway does not leave its daemon running.
impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn metrics_text(addr: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    // One request; the server closes the connection after the reply.
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: roo\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

pub(crate) fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU seconds by thread role, from /proc/PID/task/*/stat: where a
/// pipeline's time goes (the reader and parser, the scorer, the sink…).
/// Threads are grouped by name, pipeline and pool suffixes dropped.
#[derive(Clone, Debug, Default)]
pub(crate) struct ThreadCpu(pub(crate) std::collections::BTreeMap<String, f64>);

impl ThreadCpu {
    pub(crate) fn read(pid: u32) -> Option<Self> {
        Some(Self::from_samples(&Self::tasks(pid)?))
    }

    /// Each live thread's role and CPU seconds, by thread id.
    fn tasks(pid: u32) -> Option<std::collections::HashMap<u64, (String, f64)>> {
        let mut tasks = std::collections::HashMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let task = task.ok()?;
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            // A thread that ended between the listing and the read is skipped.
            let Some((name, secs)) = crate::report::proc_stat_cpu_s(&task.path().join("stat"))
            else {
                continue;
            };
            tasks.insert(tid, (role(&name), secs));
        }
        Some(tasks)
    }

    /// Samples `pid`'s threads: call until it exits; threads that ended
    /// keep their last sample.
    pub(crate) fn sample(pid: u32, seen: &mut std::collections::HashMap<u64, (String, f64)>) {
        if let Some(now) = Self::tasks(pid) {
            seen.extend(now);
        }
    }

    pub(crate) fn from_samples(seen: &std::collections::HashMap<u64, (String, f64)>) -> Self {
        let mut by_role = std::collections::BTreeMap::new();
        for (role, secs) in seen.values() {
            *by_role.entry(role.clone()).or_insert(0.0) += secs;
        }
        Self(by_role)
    }

    /// `self - before`, role by role.
    pub(crate) fn since(&self, before: &ThreadCpu) -> ThreadCpu {
        ThreadCpu(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0)))
                .collect(),
        )
    }

    /// "roo-read 1275 ns, roo-sink 445 ns, …" per event, busiest first;
    /// roles under 1% of the total left out.
    pub(crate) fn per_event(&self, events: f64) -> String {
        let total: f64 = self.0.values().sum();
        let mut roles: Vec<(&String, &f64)> =
            self.0.iter().filter(|(_, &s)| s > total * 0.01).collect();
        roles.sort_by(|a, b| b.1.total_cmp(a.1));
        roles
            .iter()
            .map(|(k, s)| format!("{k} {:.0} ns", *s * 1e9 / events))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A thread's role from its name: `roo-sink-bench` → `roo-sink`,
/// `roo-score-1` → `roo-score`.
pub(crate) fn role(name: &str) -> String {
    let name = name.strip_suffix("-bench").unwrap_or(name);
    match name.rsplit_once('-') {
        Some((head, tail)) if tail.chars().all(|c| c.is_ascii_digit()) => head.to_string(),
        _ => name.to_string(),
    }
}

/// Runs `command`'s process on CPU `cpu` only (set between fork and exec).
pub(crate) fn pin_child(command: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: sched_setaffinity is async-signal-safe; the set is built on
    // the stack before the call.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Pins the calling thread to `cpus`; returns the set it had.
pub(crate) fn pin_self(cpus: &[usize]) -> Option<libc::cpu_set_t> {
    // SAFETY: plain calls on a zeroed cpu_set_t for this thread (tid 0).
    unsafe {
        let mut before: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut before) != 0 {
            return None;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        Some(before)
    }
}

/// Restores what [`pin_self`] returned.
pub(crate) fn unpin_self(before: Option<libc::cpu_set_t>) {
    if let Some(set) = before {
        // SAFETY: the set read by sched_getaffinity.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// CPU seconds of `pid` and every process below it (a server that forks
/// workers), from /proc.
pub(crate) fn tree_cpu_s(pid: u32) -> f64 {
    let mut total = 0.0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Some((_, secs)) =
            crate::report::proc_stat_cpu_s(Path::new(&format!("/proc/{p}/stat")))
        {
            total += secs;
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(t.path().join("children")) {
                    stack.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
    }
    total
}
