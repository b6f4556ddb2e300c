//! `roo-bench`: measures roo beside what a team would otherwise use.
//!
//! `roo-bench all` runs every scenario — kernels, ingest, file → score →
//! file, a TCP stream at a series of offered loads, Flight DoExchange and
//! the CPU/GPU crossover — with the peers on the same events and model
//! files in the same run, and writes a Markdown report, JSON and SVG plots
//! (`--quick`: small inputs, short phases, under two minutes). Each
//! scenario also runs alone (`roo-bench kernels`, …) and prints its tables.

#[macro_use]
mod report;
mod audit;
mod chaos;
mod daemon;
mod enrich;
mod features;
mod flight;
mod gpu;
mod headline;
mod ingest;
mod kafka;
mod kernels;
mod online;
mod pipeline;
mod plot;
mod score;
mod topk;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::report::{Report, Section, DEFAULT_PRICE};

#[derive(Parser)]
#[command(name = "roo-bench", about = "roo's throughput benchmark suite")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

/// What every scenario needs.
#[derive(Args, Clone)]
struct Common {
    /// Python with the peers' libraries: pip install -r bench/python/requirements.txt
    /// -r appliance/tests/python/requirements.txt
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where generated data and trained models are cached.
    #[arg(long, default_value = "bench/.cache")]
    cache: PathBuf,
}

/// The size of an operator scenario (features, enrich): events, keys, and
/// the prefix the Python peers run on.
#[derive(Args, Clone)]
struct OperatorRun {
    /// Events in all.
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Distinct keys (cards; the table's keys).
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
    /// Events the peers (and roo beside them) run on: a prefix of the same stream.
    #[arg(long, default_value_t = 1_000_000)]
    peer_events: usize,
    /// Skip the Python peers.
    #[arg(long)]
    no_peers: bool,
    #[command(flatten)]
    common: Common,
}

impl OperatorRun {
    fn python(&self) -> Option<&str> {
        (!self.no_peers).then_some(self.common.python.as_str())
    }
}

#[derive(Subcommand)]
enum Bench {
    /// Every scenario, with the peers, into a Markdown report, JSON and SVG
    /// plots (build roo first: cargo build --release -p roo-appliance -p roo-bench).
    All {
        /// Small inputs and short phases (under two minutes): a smoke check
        /// of the whole suite, not figures to quote.
        #[arg(long)]
        quick: bool,
        /// Where report.md, report.json and the plots go.
        #[arg(long, default_value = "bench/report")]
        out: PathBuf,
        /// The price of one core for an hour, for the cost per billion
        /// events (default: AWS c7i.large on demand, us-east-1, $0.08925 an
        /// hour for 2 vCPUs, list price as of 2024).
        #[arg(long, default_value_t = DEFAULT_PRICE)]
        dollars_per_core_hour: f64,
        /// Only these scenarios (comma-separated): kernels, ingest, pipeline, flight, gpu.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Writes the report again from a report.json (`roo-bench all`'s): the
    /// Markdown and the plots, priced again if --dollars-per-core-hour is given.
    Render {
        /// The report.json to read.
        json: PathBuf,
        /// Where report.md, report.json and the plots go.
        #[arg(long, default_value = "bench/report")]
        out: PathBuf,
        /// Price the figures at this $/core-hour instead of the run's.
        #[arg(long)]
        dollars_per_core_hour: Option<f64>,
    },
    /// CPU scoring kernels vs XGBoost, LightGBM, numpy and ONNX Runtime on one core.
    Kernels {
        /// Evaluation rows.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Timed runs per measurement; the best is reported.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Rounds of {peers, roo}; each figure is the best over all rounds, so
        /// both sides get the same chances at a quiet moment on a shared machine.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[command(flatten)]
        common: Common,
    },
    /// The daemon end to end: file -> score -> file, TCP -> score -> file at
    /// peak and at offered loads below it (build roo first: cargo build --release -p roo-appliance).
    Pipeline {
        #[arg(long, default_value_t = 500_000)]
        rows: usize,
        /// Seconds per TCP phase.
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
        /// Offered loads, as shares of the flat-out rate (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.8,0.95")]
        loads: Vec<f64>,
        /// The file sink's format (parquet, arrow or csv) for every phase;
        /// by default parquet for the file pipeline and arrow for TCP, the
        /// formats the Python batch job and streams write.
        #[arg(long)]
        sink: Option<String>,
        /// Skip the Python batch and stream pipelines.
        #[arg(long)]
        no_peers: bool,
        /// TCP phases with `parse_in_pieces = false`: each connection
        /// parsed on the source's thread alone.
        #[arg(long)]
        parse_on_reader: bool,
        #[arg(long, default_value_t = DEFAULT_PRICE)]
        dollars_per_core_hour: f64,
        #[command(flatten)]
        common: Common,
    },
    /// Per-key rolling features: the operator alone on one core over
    /// Zipf-keyed events, beside pandas and a per-event Python stream.
    Features(OperatorRun),
    /// Enrichment: the table join alone on one core (integer and string
    /// keys, as-of and latest row), beside pandas merge_asof and merge.
    Enrich(OperatorRun),
    /// Sliding-window top-K: the aggregate alone on one core counting
    /// Zipf hashtags (5-minute windows every 10 s, top 10), beside a Python
    /// Counter stream and pandas groupby per window.
    Topk(OperatorRun),
    /// The audit log at scale: written by `roo serve`, one id found with
    /// `roo audit show`, every record re-scored with `roo replay` on one core.
    Audit {
        /// Records in the log.
        #[arg(long, default_value_t = 10_000_000)]
        records: u64,
        /// Skip the pyarrow and XGBoost peers.
        #[arg(long)]
        no_peers: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Crash safety: the checkpoint cost (none, every 10 s, 1 s, 0.1 s; fsyncs
    /// per checkpoint), a run SIGKILLed at random moments checked row by row
    /// (rows, audit records, windows, dead letters) against an uninterrupted
    /// one, and the same over Flight with a resuming put (build roo first:
    /// cargo build --release -p roo-appliance).
    Chaos {
        /// Events in the file.
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
        /// SIGKILLs at random moments.
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Runs of each checkpoint setting; the least CPU is kept.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Online decisions: one event per request over V2 REST and gRPC, roo
    /// beside MLServer (one worker, its XGBoost runtime), the server on one
    /// core (build roo first: cargo build --release -p roo-appliance).
    Online {
        /// Seconds per figure.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[command(flatten)]
        common: Common,
    },
    /// Kafka in → score → Kafka out against a local broker (roo-dev-broker),
    /// CSV messages of one event and Arrow messages of 1,024, beside a
    /// Python confluent-kafka consumer scoring with XGBoost (build roo
    /// first: cargo build --release -p roo-appliance).
    Kafka {
        /// Events in each topic (at most ~250,000: the mock broker holds
        /// about 5 MiB per partition).
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Skip the Python consumer.
        #[arg(long)]
        no_peers: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Flight DoExchange at batch sizes 1 … 65536 from Rust and pyarrow,
    /// beside a Python HTTP server calling XGBoost per request (build roo
    /// first: cargo build --release -p roo-appliance).
    Flight {
        /// Seconds per client and batch size.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[command(flatten)]
        common: Common,
    },
    /// The GPU scorer (wgpu) vs the CPU scorer on one core and all cores,
    /// per model and batch size, and where the GPU overtakes each.
    Gpu {
        /// Batch sizes, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1000,4096,10000,100000,1000000"
        )]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Only the models whose name contains this.
        #[arg(long)]
        only: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Sources and parsers on one core vs a plain read, arrow-csv and pyarrow.
    Ingest {
        /// Rows of the generated data (id + 30 float columns).
        #[arg(long, default_value_t = 400_000)]
        rows: u64,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        #[command(flatten)]
        common: Common,
    },
    /// `roo score --threads 1`, the whole process, beside XGBoost's
    /// inplace_predict alone (build roo first).
    Score {
        #[arg(long, default_value_t = 200_000)]
        rows: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Skip the Python peer.
        #[arg(long)]
        no_peers: bool,
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> Result<()> {
    let section = match Cli::parse().command {
        Bench::All {
            quick,
            out,
            dollars_per_core_hour,
            only,
            common,
        } => return all(quick, &out, dollars_per_core_hour, &only, &common),
        Bench::Render {
            json,
            out,
            dollars_per_core_hour,
        } => return render(&json, &out, dollars_per_core_hour),
        Bench::Kernels {
            rows,
            repeats,
            rounds,
            common,
        } => kernels::run(rows, repeats, rounds, &common.python, &common.cache, false)?,
        Bench::Ingest {
            rows,
            repeats,
            common,
        } => ingest::run(rows, repeats, &common.python, &common.cache)?,
        Bench::Score {
            rows,
            repeats,
            no_peers,
            common,
        } => score::run(
            rows,
            repeats,
            (!no_peers).then_some(common.python.as_str()),
            &common.cache,
        )?,
        Bench::Pipeline {
            rows,
            seconds,
            loads,
            sink,
            no_peers,
            parse_on_reader,
            dollars_per_core_hour,
            common,
        } => pipeline::run(&pipeline::Options {
            parse_on_reader,
            rows,
            seconds,
            loads,
            file_sink: sink.clone().unwrap_or_else(|| "parquet".into()),
            stream_sink: sink.unwrap_or_else(|| "arrow".into()),
            scaling_copies: 4,
            cache: common.cache,
            python: (!no_peers).then_some(common.python),
            dollars_per_core_hour,
        })?,
        Bench::Flight { seconds, common } => flight::run(seconds, &common.python, &common.cache)?,
        Bench::Online { seconds, common } => online::run(seconds, &common.python, &common.cache)?,
        Bench::Kafka {
            events,
            no_peers,
            common,
        } => kafka::run(
            events,
            (!no_peers).then_some(common.python.as_str()),
            &common.cache,
        )?,
        Bench::Features(r) => {
            features::run(r.events, r.keys, r.peer_events, r.python(), &r.common.cache)?
        }
        Bench::Enrich(r) => {
            enrich::run(r.events, r.keys, r.peer_events, r.python(), &r.common.cache)?
        }
        Bench::Topk(r) => topk::run(r.events, r.keys, r.peer_events, r.python(), &r.common.cache)?,
        Bench::Audit {
            records,
            no_peers,
            common,
        } => audit::run(
            records,
            (!no_peers).then_some(common.python.as_str()),
            &common.cache,
        )?,
        Bench::Chaos {
            events,
            kills,
            repeats,
            common,
        } => chaos::run(
            events,
            kills,
            repeats,
            Some(common.python.as_str()),
            &common.cache,
        )?,
        Bench::Gpu {
            sizes,
            repeats,
            only,
            common,
        } => gpu::run(
            &sizes,
            repeats,
            only.as_deref(),
            &common.python,
            &common.cache,
            false,
        )?,
    };
    if let Some(why) = section.skipped {
        println!("skipped: {why}");
    }
    Ok(())
}

const SCENARIOS: [&str; 13] = [
    "kernels", "ingest", "pipeline", "score", "flight", "gpu", "features", "enrich", "topk",
    "audit", "online", "kafka", "chaos",
];

/// Every scenario (or `only` those), then the report.
fn all(quick: bool, out: &Path, price: f64, only: &[String], common: &Common) -> Result<()> {
    for o in only {
        if !SCENARIOS.contains(&o.as_str()) {
            bail!("--only {o}: expected some of {}", SCENARIOS.join(", "));
        }
    }
    let price_source = price_source(price)?;
    let wanted = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let (python, cache) = (common.python.as_str(), common.cache.as_path());
    let started = std::time::Instant::now();
    // The steps each scenario announces (the bar grows if one says more).
    let steps: u64 = [
        ("kernels", if quick { 3 } else { 6 }),
        ("ingest", 4),
        ("pipeline", if quick { 10 } else { 12 }),
        ("score", 2),
        ("flight", 6),
        ("gpu", 6),
        ("features", 5),
        ("enrich", 3),
        ("topk", 5),
        ("audit", 4),
        ("online", 3),
        ("kafka", 5),
        ("chaos", 3),
    ]
    .iter()
    .filter(|(s, _)| wanted(s))
    .map(|(_, n)| n)
    .sum();
    report::progress_start(steps);
    let mut sections: Vec<Section> = Vec::new();
    let result = (|| -> Result<()> {
        if wanted("kernels") {
            let (rows, repeats, rounds) = if quick {
                (20_000, 1, 1)
            } else {
                (100_000, 3, 2)
            };
            sections.push(kernels::run(rows, repeats, rounds, python, cache, quick)?);
        }
        if wanted("ingest") {
            let (rows, repeats) = if quick { (40_000, 1) } else { (400_000, 3) };
            sections.push(ingest::run(rows, repeats, python, cache)?);
        }
        if wanted("pipeline") {
            sections.push(pipeline::run(&pipeline::Options {
                parse_on_reader: false,
                rows: if quick { 40_000 } else { 500_000 },
                seconds: if quick { 1.0 } else { 6.0 },
                loads: if quick {
                    vec![0.5, 0.8]
                } else {
                    vec![0.25, 0.5, 0.8, 0.95]
                },
                file_sink: "parquet".into(),
                stream_sink: "arrow".into(),
                scaling_copies: if quick { 1 } else { 4 },
                cache: cache.to_path_buf(),
                python: Some(python.to_string()),
                dollars_per_core_hour: price,
            })?);
        }
        if wanted("score") {
            let (rows, repeats) = if quick { (20_000, 1) } else { (200_000, 3) };
            sections.push(score::run(rows, repeats, Some(python), cache)?);
        }
        if wanted("flight") {
            sections.push(flight::run(if quick { 0.3 } else { 3.0 }, python, cache)?);
        }
        if wanted("gpu") {
            // A software adapter (lavapipe) loses at every size and takes
            // minutes over a million rows: stop at 100k there.
            let software =
                roo_kernels::gpu::GpuContext::shared().is_ok_and(|ctx| ctx.adapter().is_software());
            let (sizes, repeats): (&[usize], usize) = if quick {
                (&[1000, 16384], 2)
            } else if software {
                (&[1000, 4096, 10000, 100_000], 3)
            } else {
                (&[1000, 4096, 10000, 100_000, 1_000_000], 3)
            };
            sections.push(gpu::run(sizes, repeats, None, python, cache, quick)?);
        }
        if wanted("features") {
            let (events, keys, peer_events) = if quick {
                (200_000, 20_000, 50_000)
            } else {
                (10_000_000, 1_000_000, 1_000_000)
            };
            sections.push(features::run(
                events,
                keys,
                peer_events,
                Some(python),
                cache,
            )?);
        }
        if wanted("enrich") {
            let (events, keys, peer_events) = if quick {
                (200_000, 20_000, 50_000)
            } else {
                (10_000_000, 1_000_000, 1_000_000)
            };
            sections.push(enrich::run(events, keys, peer_events, Some(python), cache)?);
        }
        if wanted("topk") {
            let (events, keys, peer_events) = if quick {
                (200_000, 20_000, 50_000)
            } else {
                (10_000_000, 1_000_000, 1_000_000)
            };
            sections.push(topk::run(events, keys, peer_events, Some(python), cache)?);
        }
        if wanted("audit") {
            sections.push(audit::run(
                if quick { 200_000 } else { 10_000_000 },
                Some(python),
                cache,
            )?);
        }
        if wanted("online") {
            sections.push(online::run(if quick { 0.4 } else { 5.0 }, python, cache)?);
        }
        if wanted("kafka") {
            sections.push(kafka::run(
                if quick { 50_000 } else { 200_000 },
                Some(python),
                cache,
            )?);
        }
        if wanted("chaos") {
            let (events, kills, repeats) = if quick {
                (100_000, 3, 1)
            } else {
                (2_000_000, 20, 3)
            };
            sections.push(chaos::run(events, kills, repeats, Some(python), cache)?);
        }
        Ok(())
    })();
    report::progress_finish();
    result?;
    let mut report = Report {
        date: date_utc(),
        command: std::env::args()
            .map(|a| if a.contains(' ') { format!("{a:?}") } else { a })
            .collect::<Vec<_>>()
            .join(" "),
        quick,
        machine: report::Machine::detect(),
        dollars_per_core_hour: price,
        price_source,
        headline: Vec::new(),
        sections,
    };
    report.price();
    report.headlines();
    report.write(out)?;
    println!("\n## Headline ({:.0} s)\n", started.elapsed().as_secs_f64());
    println!("| target | measured | met |\n|---|---|---|");
    for h in &report.headline {
        println!(
            "| {} | {} | {} |",
            h.target,
            h.measured,
            if h.met { "yes" } else { "no" }
        );
    }
    println!(
        "\nreport: {0}/report.md, {0}/report.json, {0}/throughput-latency.svg, {0}/cost.svg",
        out.display()
    );
    Ok(())
}

/// Where a price comes from (the default's source, or the flag), once it
/// is checked to be a price.
fn price_source(price: f64) -> Result<String> {
    if !(price.is_finite() && price > 0.0) {
        bail!("--dollars-per-core-hour {price}: expected a positive price");
    }
    Ok(if (price - DEFAULT_PRICE).abs() < 1e-12 {
        report::PRICE_SOURCE.to_string()
    } else {
        "set with --dollars-per-core-hour".to_string()
    })
}

fn render(json: &Path, out: &Path, price: Option<f64>) -> Result<()> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let mut report: Report = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a roo-bench report (expected roo-bench all's report.json)",
            json.display()
        )
    })?;
    if let Some(price) = price {
        report.price_source = price_source(price)?;
        report.dollars_per_core_hour = price;
        report.price();
    }
    report.headlines();
    report.write(out)?;
    println!(
        "report: {0}/report.md, {0}/report.json, {0}/throughput-latency.svg, {0}/cost.svg",
        out.display()
    );
    Ok(())
}

/// Now, UTC, as YYYY-MM-DD HH:MM.
fn date_utc() -> String {
    civil_utc(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as i64,
    )
}

/// Seconds since the epoch as YYYY-MM-DD HH:MM UTC (no date crate).
fn civil_utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// A script in bench/python/.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Runs `python peers.py ARGS`.
fn run_python(python: &str, args: &[&str]) -> Result<String> {
    run_script(python, "peers.py", args)
}

/// Runs `python bench/python/NAME ARGS` with every library on one thread;
/// returns its stdout.
pub(crate) fn run_script(python: &str, name: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(python)
        .arg(script(name))
        .args(args)
        // One thread for every library; and unset this machine's OpenBLAS
        // core-type override, which slows a current numpy (env notes).
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .with_context(|| format!("running {python} {}", script(name).display()))?;
    if !out.status.success() {
        bail!(
            "{} {:?} failed: {}",
            script(name).display(),
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    report::say_err(&String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Machine, Measurement};

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(civil_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(civil_utc(951_782_400 + 3_660), "2000-02-29 01:01 UTC");
        assert_eq!(civil_utc(1_798_761_599), "2026-12-31 23:59 UTC");
    }

    fn report(sections: Vec<Section>) -> Report {
        let mut r = Report {
            date: String::new(),
            command: String::new(),
            quick: false,
            machine: Machine::detect(),
            dollars_per_core_hour: 0.036,
            price_source: String::new(),
            headline: Vec::new(),
            sections,
        };
        r.price();
        r.headlines();
        r
    }

    #[test]
    fn the_headline_comes_from_the_figures() {
        let mut p = Section::new("pipeline", "p");
        // 1000 events in 1 s on 1 ms of CPU: 1000 ns/event.
        p.push(Measurement::roo(report::TCP_PEAK, 1000.0, 1.0, Some(0.001)));
        p.push(
            Measurement::peer(report::PY_BATCH, "py", 1000.0, 1.0, Some(0.012))
                .against(report::TCP_PEAK),
        );
        p.push(
            Measurement::peer(report::PY_STREAM, "py", 1000.0, 1.0, Some(0.02))
                .against(report::TCP_PEAK),
        );
        p.push(Measurement::roo(
            report::FILE_ONE_CORE,
            1000.0,
            2.0,
            Some(2.0),
        ));
        p.push(Measurement::roo(
            report::FILE_TWO_CORES,
            1000.0,
            1.0,
            Some(2.0),
        ));
        let r = report(vec![p]);
        let find = |needle: &str| {
            r.headline
                .iter()
                .find(|h| h.target.contains(needle))
                .unwrap_or_else(|| panic!("no {needle}"))
        };
        let batch = find("Python batch");
        assert!((batch.ratio - 12.0).abs() < 1e-9 && batch.met, "{batch:?}");
        let stream = find("micro-batches");
        assert!(
            (stream.ratio - 20.0).abs() < 1e-9 && !stream.met,
            "{stream:?}"
        );
        let cores = find("2 cores");
        assert!((cores.ratio - 2.0).abs() < 1e-9 && cores.met, "{cores:?}");
        // The line-by-line stream did not run: no row claims it.
        assert!(!r.headline.iter().any(|h| h.target.contains("line-by-line")));
        // Priced: 1000 ns/event at $0.036 per core-hour = $0.01 per billion.
        let roo = &r.sections[0].measurements[0];
        assert!((roo.dollars_per_billion.unwrap() - 0.01).abs() < 1e-12);
        let md = r.markdown();
        assert!(md.contains("| 1.0 k | 1000 |"), "{md}");
        assert!(md.contains("1/12.0 of the CPU per event"), "{md}");
    }

    #[test]
    fn a_skipped_scenario_says_why_and_claims_nothing() {
        let mut g = Section::new("gpu", "GPU");
        g.skipped = Some("no GPU adapter: none found".into());
        let r = report(vec![g]);
        assert!(r.headline.is_empty());
        assert!(r.markdown().contains("Skipped: no GPU adapter: none found"));
    }

    #[test]
    fn thread_roles_drop_pipeline_and_pool_suffixes() {
        use crate::daemon::role;
        assert_eq!(role("roo-sink-bench"), "roo-sink");
        assert_eq!(role("roo-score-1"), "roo-score");
        assert_eq!(role("roo-read"), "roo-read");
        assert_eq!(role("roo"), "roo");
    }
}
