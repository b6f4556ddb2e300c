//! `roo`: the appliance's command line.
//!
//! `roo score` scores a file with a model; `roo serve` runs the daemon on a
//! config file (`roo check-config` validates one); `roo inspect` describes
//! a model; `roo devices` lists the GPU adapters roo can score on.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc: the online path allocates small Arrow arrays per request,
/// where glibc's malloc cost a fifth of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audit;
mod config;
mod flight;
mod http;
mod online;
mod serve;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use roo_ingest::FileFormat;
use roo_kernels::{load_model, ModelSummary};
use roo_scheduler::{score_file, BatchJob, Device};

#[derive(Parser)]
#[command(
    name = "roo",
    version,
    about = "Score live and batch data with the models you already trained"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score every row of a file: the output holds the input columns plus
    /// `score` (or `score_0` … `score_{k-1}` for multiclass probabilities).
    Score(ScoreArgs),
    /// Run the pipelines of a config file until SIGTERM or SIGINT (SIGHUP
    /// reloads the models).
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Once every pipeline has started and every listener is bound,
        /// write this JSON file (atomically): the addresses bound (useful
        /// with port 0), for a supervisor or a test to wait on.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Check a config file: parse it, load every model and bind it to its
    /// source's columns. Starts nothing.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Describe a model: family, objective, trees, depth, features, version.
    Inspect {
        #[arg(long)]
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the GPU adapters wgpu finds (Vulkan, Metal), best first: the
    /// one `--device gpu` and `device = "gpu"` use is the first.
    Devices,
    /// Read a pipeline's audit log: one event (`show`), a time range (`query`).
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Score the audit log's recorded inputs again: with the model version
    /// that scored each (bit for bit on the CPU; exit status 1 on any
    /// mismatch), or with a candidate (`--model`) beside the recorded scores.
    Replay(audit::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // A decoder refusing a corrupt file or a hostile client's message
    // panics inside a guard: said as an error where it is handled, not
    // reported as a crash.
    roo_ingest::guard::quiet_guarded_panics();
    private_runtime_dir();
    let result = match cli.command {
        Command::Score(args) => score(args),
        Command::Inspect { model, json } => inspect(&model, json),
        Command::Serve { config, ready_file } => serve::serve(&config, ready_file.as_deref()),
        Command::CheckConfig { config } => serve::check_config(&config),
        Command::Devices => devices(),
        Command::Audit { command } => audit::run(command),
        Command::Replay(args) => audit::replay_command(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at the level in `ROO_LOG` (error, warn, info, debug,
/// trace; default info).
fn init_logging() {
    let level = std::env::var("ROO_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Mesa's Vulkan drivers complain on stderr when `XDG_RUNTIME_DIR` is
/// unset (as under systemd services and in containers); roo draws no
/// windows, so a private 0700 directory silences them. Runs before any
/// thread starts.
fn private_runtime_dir() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("roo-runtime-{uid}"));
    let made = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let private = std::fs::metadata(&dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0);
    if (made.is_ok() || dir.is_dir()) && private {
        // SAFETY: no other thread exists yet to read the environment.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

#[cfg(not(feature = "gpu"))]
fn devices() -> Result<()> {
    bail!("this roo was built without GPU support (cargo feature `gpu`): it scores on the CPU only")
}

#[cfg(feature = "gpu")]
fn devices() -> Result<()> {
    let adapters = roo_kernels::gpu::adapters();
    if adapters.is_empty() {
        bail!(
            "no GPU adapter found (on Linux: is a Vulkan driver installed, e.g. mesa-vulkan-drivers \
             and libvulkan1, or the GPU vendor's?)"
        );
    }
    for (i, a) in adapters.iter().enumerate() {
        println!(
            "{}{a}; largest storage binding {} MiB{}",
            if i == 0 { "* " } else { "  " },
            a.max_binding_bytes >> 20,
            if a.is_software() {
                "; software: device = \"auto\" keeps to the CPU"
            } else {
                ""
            }
        );
    }
    Ok(())
}

#[derive(Args)]
struct ScoreArgs {
    /// XGBoost JSON/UBJSON, LightGBM text, ONNX, or roo linear-model JSON.
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    model: Option<PathBuf>,
    /// Run a pipeline of this config file over the input instead: its
    /// whole operator chain (features, the model, shadows) in file order,
    /// as the daemon would on the same events.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The pipeline of `--config` to run (needed when it has several).
    #[arg(long, requires = "config")]
    pipeline: Option<String>,
    /// With `--config`: leave the model out and write the features alone
    /// (a training set).
    #[arg(long, requires = "config")]
    no_model: bool,
    /// CSV with a header, NDJSON, raw little-endian f32 rows (`.f32`, one
    /// column per model feature), Parquet, or Arrow IPC (file or stream).
    #[arg(long)]
    input: PathBuf,
    /// Parquet, Arrow IPC or CSV; written whole or not at all.
    #[arg(long)]
    output: PathBuf,
    /// Input format when the extension does not say.
    #[arg(long, value_enum)]
    input_format: Option<FormatArg>,
    /// Output format when the extension does not say (csv, parquet or arrow).
    #[arg(long, value_enum)]
    output_format: Option<FormatArg>,
    /// Scoring threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Rows read, scored and written per batch.
    #[arg(long, default_value_t = roo_ingest::BATCH_ROWS_DEFAULT)]
    batch_rows: usize,
    /// Where records that cannot be read go, as NDJSON (default: the
    /// output path with `.deadletters.ndjson` appended). Created only when
    /// there are any.
    #[arg(long)]
    dead_letters: Option<PathBuf>,
    /// Read text inputs through io_uring when the kernel allows (auto), or
    /// with plain reads (off).
    #[arg(long, value_enum, default_value_t = IoUringArg::Auto)]
    io_uring: IoUringArg,
    /// Score on the CPU, the GPU (every batch; a batch the GPU fails is
    /// scored again on the CPU), or the cheaper per batch by measured cost
    /// (auto; a software adapter such as lavapipe is never chosen).
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Csv,
    Ndjson,
    F32,
    Parquet,
    Arrow,
}

impl From<FormatArg> for FileFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Csv => FileFormat::Csv,
            FormatArg::Ndjson => FileFormat::Ndjson,
            FormatArg::F32 => FileFormat::RawF32,
            FormatArg::Parquet => FileFormat::Parquet,
            FormatArg::Arrow => FileFormat::ArrowIpc,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum IoUringArg {
    Auto,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeviceArg {
    Cpu,
    Gpu,
    Auto,
}

impl From<DeviceArg> for Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Gpu => Device::Gpu,
            DeviceArg::Auto => Device::Auto,
        }
    }
}

fn format_for(path: &Path, given: Option<FormatArg>, role: &str) -> Result<FileFormat> {
    match given {
        Some(f) => Ok(f.into()),
        None => FileFormat::from_path(path).with_context(|| {
            format!(
                "{role} {}: cannot tell the format from the extension; expected .csv, .ndjson, \
                 .f32, .parquet or .arrow, or say --{role}-format",
                path.display()
            )
        }),
    }
}

/// Upper bounds on the knobs: a batch is held in memory whole, and each
/// thread is a real OS thread.
const BATCH_ROWS_MAX: usize = 1 << 24;
const THREADS_MAX: usize = 1024;

fn score(args: ScoreArgs) -> Result<()> {
    if !(1..=BATCH_ROWS_MAX).contains(&args.batch_rows) {
        bail!(
            "--batch-rows {}: expected 1 to {BATCH_ROWS_MAX}",
            args.batch_rows
        );
    }
    if args.threads > THREADS_MAX {
        bail!(
            "--threads {}: expected 0 (one per core) to {THREADS_MAX}",
            args.threads
        );
    }
    let input_format = format_for(&args.input, args.input_format, "input")?;
    let output_format = format_for(&args.output, args.output_format, "output")?;
    let dead_letters = args.dead_letters.clone().unwrap_or_else(|| {
        let mut name = args.output.clone().into_os_string();
        name.push(".deadletters.ndjson");
        PathBuf::from(name)
    });
    let read = roo_ingest::ReadOptions {
        io_uring: if args.io_uring == IoUringArg::Off {
            roo_ingest::IoUringMode::Off
        } else {
            roo_ingest::IoUringMode::Auto
        },
        ..Default::default()
    };
    let Some(model_path) = &args.model else {
        let config = args.config.as_deref().expect("clap: --model or --config");
        return score_with_config(
            &args,
            config,
            input_format,
            output_format,
            dead_letters,
            read,
        );
    };
    let model = load_model(model_path)?;
    let report = score_file(&BatchJob {
        model: &model,
        input: args.input.clone(),
        input_format,
        output: args.output.clone(),
        output_format,
        batch_rows: args.batch_rows,
        threads: args.threads,
        device: args.device.into(),
        dead_letters: dead_letters.clone(),
        read,
    })?;
    let secs = report.elapsed.as_secs_f64();
    eprintln!(
        "roo: scored {} rows in {} batches with {} ({}) in {:.1} ms ({:.0} rows/s; scoring {:.1} ms) -> {}",
        report.rows,
        report.batches,
        model_path.display(),
        model.version,
        secs * 1e3,
        report.rows as f64 / secs.max(1e-9),
        report.scoring.as_secs_f64() * 1e3,
        args.output.display()
    );

    eprintln!(
        "roo: scored on {}{}",
        report.device,
        if report.gpu_batches > 0 || report.cpu_retries > 0 {
            format!(
                "; {} batches on the GPU, {} retried on the CPU after a GPU error",
                report.gpu_batches, report.cpu_retries
            )
        } else {
            String::new()
        }
    );
    if report.dead_letters > 0 {
        eprintln!(
            "roo: {} records could not be read; they are in {}",
            report.dead_letters,
            dead_letters.display()
        );
    }
    Ok(())
}

/// `roo score --config F [--pipeline P] [--no-model]`: the pipeline's chain
/// over the input file.
fn score_with_config(
    args: &ScoreArgs,
    config_path: &Path,
    input_format: FileFormat,
    output_format: FileFormat,
    dead_letters: PathBuf,
    read: roo_ingest::ReadOptions,
) -> Result<()> {
    let config = config::read(config_path)?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    let mut specs = config.specs(base)?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let index = match &args.pipeline {
        Some(p) => names.iter().position(|n| n == p).with_context(|| {
            format!(
                "--pipeline {p:?}: config {} has no such pipeline; it has {}",
                config_path.display(),
                names.join(", ")
            )
        })?,
        None if names.len() == 1 => 0,
        None => bail!(
            "config {} has {} pipelines ({}); say which with --pipeline",
            config_path.display(),
            names.len(),
            names.join(", ")
        ),
    };
    let mut spec = specs.swap_remove(index);
    spec.device = args.device.into();
    let report = roo_scheduler::run_chain_over_file(roo_scheduler::ChainJob {
        spec,
        input: args.input.clone(),
        input_format,
        output: args.output.clone(),
        output_format,
        no_model: args.no_model,
        threads: args.threads,
        dead_letters: dead_letters.clone(),
        read,
    })?;
    let secs = report.elapsed.as_secs_f64();
    eprintln!(
        "roo: pipeline {}: {} events through [{}] in {:.1} ms ({:.0} events/s), {} rows -> {}; {} keys held at the end",
        names[index],
        report.rows_in,
        report.operators.join(", "),
        secs * 1e3,
        report.rows_in as f64 / secs.max(1e-9),
        report.rows_out + report.results_out,
        args.output.display(),
        report.keys_held
    );
    if report.aggregated > 0 {
        eprintln!(
            "roo: {} events aggregated into {} window rows",
            report.aggregated, report.results_out
        );
    }
    if report.dead_letters > 0 {
        eprintln!(
            "roo: {} events were refused; they are in {}",
            report.dead_letters,
            dead_letters.display()
        );
    }
    Ok(())
}

fn inspect(path: &Path, json: bool) -> Result<()> {
    let model = load_model(path)?;
    let s: ModelSummary = model.summary();
    if json {
        let doc = InspectDoc {
            model: path.display().to_string(),
            format: s.format.to_string(),
            family: s.family,
            objective: &s.objective,
            features: &model.feature_names,
            bound_by: if s.named_features { "name" } else { "position" },
            outputs: &s.outputs,
            version: s.version.to_string(),
            trees: s.trees.as_ref().map(|t| InspectTrees {
                trees: t.trees,
                groups: t.groups,
                max_depth: t.max_depth,
                leaves: t.leaves,
                nodes: t.nodes,
                categorical_nodes: t.categorical_nodes,
            }),
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("model      {}", path.display());
    println!("format     {}", s.format);
    println!("family     {}", s.family);
    println!("objective  {}", s.objective);
    if let Some(t) = &s.trees {
        println!(
            "trees      {} in {} output group{}, max depth {}, {} leaves, {} nodes, {} categorical splits",
            t.trees,
            t.groups,
            if t.groups == 1 { "" } else { "s" },
            t.max_depth,
            t.leaves,
            t.nodes,
            t.categorical_nodes
        );
    }
    let shown: Vec<&str> = model
        .feature_names
        .iter()
        .take(8)
        .map(String::as_str)
        .collect();
    let more = model.n_features().saturating_sub(shown.len());
    println!(
        "features   {} bound by {}: {}{}",
        s.features,
        if s.named_features { "name" } else { "position" },
        shown.join(", "),
        if more > 0 {
            format!(", … {more} more")
        } else {
            String::new()
        }
    );
    println!("outputs    {}", s.outputs.join(", "));
    println!("version    {}", s.version);
    Ok(())
}

/// `roo inspect --json`.
#[derive(serde::Serialize)]
struct InspectDoc<'a> {
    model: String,
    format: String,
    family: &'a str,
    objective: &'a str,
    features: &'a [String],
    bound_by: &'static str,
    outputs: &'a [String],
    version: String,
    trees: Option<InspectTrees>,
}

#[derive(serde::Serialize)]
struct InspectTrees {
    trees: usize,
    groups: usize,
    max_depth: usize,
    leaves: usize,
    nodes: usize,
    categorical_nodes: usize,
}
