//! What `roo-bench all` measures, and how it is written out: every figure
//! is a [`Measurement`] (events/s, CPU-ns per event, latency, peak RSS,
//! cost per billion events), grouped by scenario, with peers pointing at
//! the roo measurement they are compared with. [`Report`] renders it as
//! Markdown, JSON and two SVG plots. [`say!`] prints a scenario's detail
//! lines above the progress bar and keeps them for the Markdown report.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency quantiles in milliseconds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn from_us(h: &Histogram<u64>) -> Self {
        let q = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        Self {
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
        }
    }

    pub fn from_s(p50: f64, p99: f64, p999: f64) -> Self {
        Self {
            p50_ms: p50 * 1e3,
            p99_ms: p99 * 1e3,
            p999_ms: p999 * 1e3,
        }
    }
}

/// One figure of one system in one scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    /// What ran, e.g. `roo, tcp -> score -> file, 50% of peak`.
    pub name: String,
    /// `roo`, or the peer: the library or pipeline a team would use instead.
    pub system: String,
    pub roo: bool,
    pub events: f64,
    pub wall_s: f64,
    /// The measured process's (or thread's) own CPU time over the events;
    /// `None` where the CPU is another process's that is not measured.
    pub cpu_s: Option<f64>,
    pub events_per_s: f64,
    pub cpu_ns_per_event: Option<f64>,
    pub latency: Option<Latency>,
    pub peak_rss_mib: Option<f64>,
    /// The rate the sender offered (open loop); `None`: flat out.
    pub offered_per_s: Option<f64>,
    /// Filled in by the report from `cpu_ns_per_event` and the price.
    pub dollars_per_billion: Option<f64>,
    /// For a peer: the `name` of the roo measurement it is compared with.
    pub against: Option<String>,
    /// The measured process's CPU seconds by thread role, where known
    /// (the daemon's: reader, scorer, sink…).
    pub cpu_by_thread_s: Option<std::collections::BTreeMap<String, f64>>,
}

impl Measurement {
    pub fn roo(name: impl Into<String>, events: f64, wall_s: f64, cpu_s: Option<f64>) -> Self {
        Self::new(name.into(), "roo".into(), true, events, wall_s, cpu_s)
    }

    pub fn peer(
        name: impl Into<String>,
        system: impl Into<String>,
        events: f64,
        wall_s: f64,
        cpu_s: Option<f64>,
    ) -> Self {
        Self::new(name.into(), system.into(), false, events, wall_s, cpu_s)
    }

    fn new(
        name: String,
        system: String,
        roo: bool,
        events: f64,
        wall_s: f64,
        cpu_s: Option<f64>,
    ) -> Self {
        Self {
            name,
            system,
            roo,
            events,
            wall_s,
            cpu_s,
            events_per_s: events / wall_s,
            cpu_ns_per_event: cpu_s.map(|c| c * 1e9 / events),
            latency: None,
            peak_rss_mib: None,
            offered_per_s: None,
            dollars_per_billion: None,
            against: None,
            cpu_by_thread_s: None,
        }
    }

    pub fn latency(mut self, l: Latency) -> Self {
        self.latency = Some(l);
        self
    }

    pub fn rss(mut self, mib: Option<f64>) -> Self {
        self.peak_rss_mib = mib;
        self
    }

    pub fn offered(mut self, rate: Option<f64>) -> Self {
        self.offered_per_s = rate;
        self
    }

    pub fn threads(mut self, by_role: std::collections::BTreeMap<String, f64>) -> Self {
        self.cpu_by_thread_s = Some(by_role);
        self
    }

    pub fn against(mut self, roo_name: &str) -> Self {
        self.against = Some(roo_name.to_string());
        self
    }
}

/// One scenario's figures, what they mean, and its detail lines.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Section {
    pub scenario: String,
    pub title: String,
    /// How to read the figures: what latency and CPU mean here.
    pub notes: Vec<String>,
    pub measurements: Vec<Measurement>,
    /// Why the scenario did not run (no GPU adapter), if it did not.
    pub skipped: Option<String>,
    /// The scenario's own text tables, as printed while it ran.
    pub detail: Vec<String>,
}

impl Section {
    pub fn new(scenario: &str, title: &str) -> Self {
        Self {
            scenario: scenario.into(),
            title: title.into(),
            ..Self::default()
        }
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn push(&mut self, m: Measurement) {
        self.measurements.push(m);
    }

    pub fn find(&self, name: &str) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.name == name)
    }
}

/// A headline target and what this run measured against it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Headline {
    pub target: String,
    pub measured: String,
    /// The measured ratio, in the direction the target states.
    pub ratio: f64,
    pub goal: f64,
    pub met: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub isa: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or("unknown".to_string(), |s| s.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".to_string(), |s| s.trim().to_string());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: mem_kib / (1024.0 * 1024.0),
            kernel,
            isa: roo_kernels::cpu::Isa::detect().name().to_string(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub quick: bool,
    pub machine: Machine,
    pub dollars_per_core_hour: f64,
    pub price_source: String,
    pub headline: Vec<Headline>,
    pub sections: Vec<Section>,
}

/// The default price of a core-hour, and where it comes from.
pub const PRICE_SOURCE: &str =
    "AWS EC2 c7i.large on demand, us-east-1: $0.08925 an hour for 2 vCPUs \
     (list price as of 2024), so $0.0446 per vCPU-hour";

impl Report {
    /// Fills in every measurement's cost per billion events.
    pub fn price(&mut self) {
        let per_core_hour = self.dollars_per_core_hour;
        for m in self
            .sections
            .iter_mut()
            .flat_map(|s| s.measurements.iter_mut())
        {
            // ns per event × 1e9 events = s per billion; / 3600 = core-hours.
            m.dollars_per_billion = m.cpu_ns_per_event.map(|ns| ns / 3600.0 * per_core_hour);
        }
    }

    pub fn section(&self, scenario: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.scenario == scenario && s.skipped.is_none())
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        crate::plot::throughput_latency(self, &dir.join("throughput-latency.svg"))?;
        crate::plot::cost(self, &dir.join("cost.svg"))?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "# roo-bench report\n");
        let _ = writeln!(
            s,
            "- **Date:** {}\n- **Command:** `{}`{}\n- **Machine:** {} ({} cores, {:.0} GiB, kernel {}, roo kernels: {})\n\
             - **Price:** ${} per core-hour ({})",
            self.date,
            self.command,
            if self.quick {
                " (quick: small inputs and short phases; for a smoke check, not for quoting)"
            } else {
                ""
            },
            m.cpu,
            m.cores,
            m.memory_gib,
            m.kernel,
            m.isa,
            self.dollars_per_core_hour,
            self.price_source
        );
        let _ = writeln!(
            s,
            "- **CPU-ns/event:** the measured process's own CPU time (user + system) over the events it handled; \
             **$/billion:** that CPU time for a billion events at the price above; **compared with roo's:** for a \
             peer, the roo figure it is set against, with roo's CPU per event as a share of the peer's and roo's \
             events/s over the peer's.\n"
        );
        let _ = writeln!(s, "## Headline\n");
        let _ = writeln!(s, "| target | measured | met |\n|---|---|---|");
        for h in &self.headline {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                h.target,
                h.measured,
                if h.met { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(
            s,
            "\n![throughput vs p99 latency](throughput-latency.svg)\n![cost per billion events](cost.svg)\n"
        );
        for sec in &self.sections {
            let _ = writeln!(s, "## {}\n", sec.title);
            if let Some(why) = &sec.skipped {
                let _ = writeln!(s, "Skipped: {why}\n");
                continue;
            }
            for n in &sec.notes {
                let _ = writeln!(s, "- {n}");
            }
            let _ = writeln!(
                s,
                "\n| measurement | system | events/s | CPU-ns/event | p50 ms | p99 ms | p999 ms | peak RSS MiB | $/billion | compared with roo's |\n\
                 |---|---|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            for m in &sec.measurements {
                let l = m.latency;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    m.name,
                    m.system,
                    rate(m.events_per_s),
                    opt(m.cpu_ns_per_event, 0),
                    opt(l.map(|l| l.p50_ms), 2),
                    opt(l.map(|l| l.p99_ms), 2),
                    opt(l.map(|l| l.p999_ms), 2),
                    opt(m.peak_rss_mib, 0),
                    opt(m.dollars_per_billion, 4),
                    ratio(sec, m)
                );
            }
            if !sec.detail.is_empty() {
                let _ = writeln!(s, "\n```\n{}\n```", sec.detail.join("\n"));
            }
            let _ = writeln!(s);
        }
        s
    }
}

pub const DEFAULT_PRICE: f64 = 0.0446;

// Names the headline looks up.
pub const TCP_PEAK: &str = "roo, tcp -> score -> file, flat out";
pub const FILE_ONE_CORE: &str = "roo, file -> score -> file, 1 core (threads = 1)";
pub const FILE_TWO_CORES: &str = "roo, file -> score -> file, 2 cores (threads = 2)";
pub const FILE_TWO_CORES_READER: &str =
    "roo, file -> score -> file, 2 cores, parsed on the reading thread alone";
pub const PY_BATCH: &str = "Python batch: pyarrow.csv -> XGBoost -> Parquet";
pub const PY_STREAM: &str = "Python stream: socket, pyarrow.csv micro-batches, XGBoost";
pub const PY_STREAM_LINES: &str = "Python stream: socket, line-by-line parse, XGBoost";
pub const KERNEL_ONE: &str = ", 1 core";
pub const KERNEL_ALL: &str = ", all cores";

/// For a row compared with a roo figure: "NAME: 1/x of the CPU per event,
/// y x the events/s" — the roo figure's CPU per event as a share of this
/// row's, and its events/s over this row's.
fn ratio(sec: &Section, m: &Measurement) -> String {
    let Some(roo) = m.against.as_deref().and_then(|n| sec.find(n)) else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let (Some(r), Some(p)) = (roo.cpu_ns_per_event, m.cpu_ns_per_event) {
        parts.push(format!("1/{:.1} of the CPU per event", p / r));
    }
    parts.push(format!(
        "{:.2}x the events/s",
        roo.events_per_s / m.events_per_s
    ));
    format!("{}: {}", roo.name, parts.join(", "))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("—".to_string(), |v| format!("{v:.digits$}"))
}

pub fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// Process CPU seconds so far (user + system, every thread).
pub fn process_cpu_s() -> f64 {
    rusage_cpu_s(&rusage())
}

/// User + system seconds of a rusage.
pub fn rusage_cpu_s(u: &libc::rusage) -> f64 {
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// User + system seconds from a /proc `stat` file (a process's or a
/// thread's), with the name inside its parentheses: (name, seconds).
pub fn proc_stat_cpu_s(path: &Path) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let mut fields = stat[close + 1..].split_whitespace().skip(11);
    let ticks = fields.next()?.parse::<f64>().ok()? + fields.next()?.parse::<f64>().ok()?;
    // SAFETY: sysconf with a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((stat[open + 1..close].to_string(), ticks / hz))
}

/// One timed run: its wall time and the process's CPU time over it.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub wall_s: f64,
    pub cpu_s: f64,
}

impl Run {
    /// No run yet: any run is better.
    pub const NONE: Run = Run {
        wall_s: f64::INFINITY,
        cpu_s: f64::INFINITY,
    };

    pub fn time<T>(f: impl FnOnce() -> T) -> (Run, T) {
        let (t, c) = (std::time::Instant::now(), process_cpu_s());
        let out = f();
        let run = Run {
            wall_s: t.elapsed().as_secs_f64(),
            cpu_s: process_cpu_s() - c,
        };
        (run, out)
    }

    /// Keeps the faster of the two (by wall time).
    pub fn keep_best(&mut self, other: Run) {
        if other.wall_s < self.wall_s {
            *self = other;
        }
    }
}

/// This process's peak resident set since the last [`reset_peak_rss`], MiB.
pub fn process_peak_rss_mib() -> f64 {
    peak_rss_mib("self").unwrap_or(f64::NAN)
}

/// A process's peak resident set (VmHWM), MiB; `pid` is a number or `self`.
pub fn peak_rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Starts this process's peak resident set again from its current one, so
/// a scenario's peak is its own (Linux: `5` to /proc/self/clear_refs).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage writes one rusage we own.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    }
}

/// The progress bar `roo-bench all` draws, and where `say!` lines go.
static OUTPUT: Mutex<Option<Output>> = Mutex::new(None);

struct Output {
    bar: indicatif::ProgressBar,
    lines: Vec<String>,
}

/// Starts the progress bar over `steps` steps; detail lines go above it.
pub fn progress_start(steps: u64) {
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
        )
        .expect("a valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    *OUTPUT.lock().expect("output") = Some(Output {
        bar,
        lines: Vec::new(),
    });
}

/// Moves the bar one step on and says what runs now.
pub fn step(what: &str) {
    if let Some(o) = OUTPUT.lock().expect("output").as_mut() {
        if o.bar
            .length()
            .is_some_and(|len| o.bar.position() + 1 >= len)
        {
            o.bar.inc_length(1);
        }
        o.bar.inc(1);
        o.bar.set_message(what.to_string());
    }
}

pub fn progress_finish() {
    if let Some(o) = OUTPUT.lock().expect("output").as_mut() {
        o.bar.finish_and_clear();
    }
}

/// The detail lines said since the last call.
pub fn take_lines() -> Vec<String> {
    OUTPUT
        .lock()
        .expect("output")
        .as_mut()
        .map(|o| std::mem::take(&mut o.lines))
        .unwrap_or_default()
}

/// Prints a detail line (above the progress bar when there is one) and
/// keeps it for the report.
pub fn say(line: String) {
    match OUTPUT.lock().expect("output").as_mut() {
        Some(o) => {
            o.bar.suspend(|| println!("{line}"));
            o.lines.push(line);
        }
        None => println!("{line}"),
    }
}

/// Diagnostics (a peer's stderr): above the bar, not kept.
pub fn say_err(text: &str) {
    if text.is_empty() {
        return;
    }
    match OUTPUT.lock().expect("output").as_mut() {
        Some(o) => o.bar.suspend(|| eprint!("{text}")),
        None => eprint!("{text}"),
    }
}

macro_rules! say {
    ($($t:tt)*) => { $crate::report::say(format!($($t)*)) };
}
