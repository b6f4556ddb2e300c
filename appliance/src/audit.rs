//! `roo audit show`, `roo audit query` and `roo replay`: a pipeline's
//! audit log read back (through the scheduler's `audit` module, the one
//! owner of its layout).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use clap::{Args, Subcommand};
use roo_ingest::FileFormat;
use roo_kernels::{load_model, Model};
use roo_scheduler::audit::{
    conform, format_us, parse_time_us, replay, AuditError, AuditLog, Candidate, ReplayOptions,
    TimeRange, DEFINITIONS, DEVICE, EVENT_TIME, ID, INGEST_TIME,
};
use roo_scheduler::FileSink;
use serde_json::{json, Map, Value};

use crate::{format_for, FormatArg};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// What the model saw for one event, and what it said.
    Show {
        /// The pipeline's audit directory (`[pipeline.audit] dir`).
        #[arg(long)]
        dir: PathBuf,
        /// The event id (the `id` column's value, or SOURCE#N).
        #[arg(long)]
        id: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The records of a range of event time, as a file.
    Query {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        range: RangeArgs,
        /// Parquet, Arrow IPC or CSV, written whole or not at all.
        #[arg(long)]
        output: PathBuf,
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
    },
}

/// A range of event time: `from <= t < to`, either side open.
#[derive(Args)]
pub struct RangeArgs {
    /// From this event time on (RFC 3339, a date, or µs since the epoch).
    #[arg(long)]
    from: Option<String>,
    /// Up to this event time, excluded.
    #[arg(long)]
    to: Option<String>,
}

impl RangeArgs {
    fn range(&self) -> Result<TimeRange> {
        let from_us = self
            .from
            .as_deref()
            .map(parse_time_us)
            .transpose()?
            .unwrap_or(i64::MIN);
        let to_us = self
            .to
            .as_deref()
            .map(parse_time_us)
            .transpose()?
            .unwrap_or(i64::MAX);
        if from_us >= to_us {
            bail!(
                "--from {} is not before --to {}",
                format_us(from_us),
                format_us(to_us)
            );
        }
        Ok(TimeRange { from_us, to_us })
    }
}

#[derive(Args)]
pub struct ReplayArgs {
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    range: RangeArgs,
    /// A candidate model: its scores beside the recorded ones. Without it,
    /// each record is scored again by the version that scored it.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The decision threshold: a score at or above it is positive.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// The Markdown report; the JSON one is written beside it (FILE.json).
    #[arg(long)]
    report: PathBuf,
    /// How many of the largest disagreements the report lists.
    #[arg(long, default_value_t = 20)]
    top: usize,
}

pub fn run(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Show { dir, id, json } => show(&dir, &id, json),
        AuditCommand::Query {
            dir,
            range,
            output,
            format,
        } => {
            let range = range.range()?;
            let format = format_for(&output, format, "output")?;
            let n = query(&dir, range, &output, format)?;
            eprintln!("roo: {n} records written to {}", output.display());
            Ok(())
        }
    }
}

fn show(dir: &Path, id: &str, as_json: bool) -> Result<()> {
    let log = AuditLog::open(dir)?;
    let found = log.find(id)?;
    let records: Vec<Value> = found
        .iter()
        .map(|b| record_json(&log, b))
        .collect::<Result<_>>()?;
    let mut newest = records
        .into_iter()
        .next()
        .expect("find returns one at least");
    if found.len() > 1 {
        newest["duplicates"] = json!(found.len() - 1);
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&newest)?);
    } else {
        print!("{}", record_text(&newest));
    }
    Ok(())
}

/// One record as the JSON `roo audit show --json` prints.
pub fn record_json(log: &AuditLog, batch: &RecordBatch) -> Result<Value> {
    let schema = batch.schema();
    let get = |name: &str| -> Value {
        batch
            .column_by_name(name)
            .map_or(Value::Null, |c| value_json(c, 0))
    };
    let version = get("model_version");
    let version_text = version.as_str().unwrap_or_default().to_string();
    let model: Option<Model> = log.model(&version_text).ok();
    let mut inputs = Map::new();
    // A JSON object has no order: the model's feature order beside it.
    let mut order = Vec::new();
    let mut outputs = Map::new();
    match &model {
        Some(m) => {
            let columns = roo_kernels::FeatureBinding::feature_columns(m, &schema)
                .context("the record does not hold every feature its model reads")?;
            for (feature, &c) in m.feature_names.iter().zip(&columns) {
                inputs.insert(feature.clone(), value_json(batch.column(c), 0));
                order.push(feature.clone());
            }
            for o in m.output_names() {
                outputs.insert(o.clone(), get(&o));
            }
        }
        None => {
            outputs.insert("score".into(), get("score"));
        }
    }
    let mut shadows = Map::new();
    let mut snapshots = Map::new();
    let mut record = Map::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let name = f.name();
        record.insert(name.clone(), value_json(batch.column(i), 0));
        if let Some(shadow) = name.strip_prefix("model_version_") {
            shadows.insert(
                shadow.to_string(),
                json!({
                    "model_version": value_json(batch.column(i), 0),
                    "score": get(&format!("score_{shadow}")),
                }),
            );
        } else if name.ends_with("_version") && name != "model_version" {
            snapshots.insert(name.clone(), value_json(batch.column(i), 0));
        }
    }
    let definitions = get(DEFINITIONS);
    Ok(json!({
        "id": get(ID),
        "event_time": get(EVENT_TIME),
        "ingest_time": get(INGEST_TIME),
        "model_version": version,
        "model_stored": model.is_some(),
        "device": get(DEVICE),
        "definitions": definitions,
        "definitions_text": definitions.as_str().and_then(|h| log.definitions(h)),
        "score": outputs.values().next().cloned().unwrap_or(Value::Null),
        "outputs": outputs,
        "shadows": shadows,
        "snapshots": snapshots,
        "inputs": inputs,
        "feature_order": order,
        "record": record,
    }))
}

fn record_text(r: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let _ = writeln!(s, "id           {}", text(&r["id"]));
    let _ = writeln!(s, "event time   {}", text(&r["event_time"]));
    let _ = writeln!(s, "ingest time  {}", text(&r["ingest_time"]));
    let _ = writeln!(
        s,
        "model        {}{}",
        text(&r["model_version"]),
        if r["model_stored"] == json!(true) {
            " (in the model store)"
        } else {
            " (NOT in the model store)"
        }
    );
    let _ = writeln!(s, "scored on    {}", text(&r["device"]));
    let _ = writeln!(s, "definitions  {}", text(&r["definitions"]));
    for (k, v) in r["outputs"].as_object().into_iter().flatten() {
        let _ = writeln!(s, "{k:<12} {}", text(v));
    }
    for (k, v) in r["shadows"].as_object().into_iter().flatten() {
        let _ = writeln!(
            s,
            "shadow {k}: score {} ({})",
            text(&v["score"]),
            text(&v["model_version"])
        );
    }
    for (k, v) in r["snapshots"].as_object().into_iter().flatten() {
        let _ = writeln!(s, "snapshot     {k} = {}", text(v));
    }
    let _ = writeln!(s, "what the model read, in its feature order:");
    for k in r["feature_order"].as_array().into_iter().flatten() {
        let k = k.as_str().unwrap_or_default();
        let _ = writeln!(s, "  {k:<28} {}", text(&r["inputs"][k]));
    }
    if let Some(n) = r.get("duplicates") {
        let _ = writeln!(s, "({n} more records have this id; this is the newest)");
    }
    s
}

/// One value of a column as JSON: numbers as numbers (an f32 by its
/// shortest decimal, so it reads back to the same f32), times as RFC 3339.
fn value_json(column: &ArrayRef, row: usize) -> Value {
    if column.is_null(row) {
        return Value::Null;
    }
    let float = |v: f64| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
    match column.data_type() {
        DataType::Float32 => {
            let v = column.as_primitive::<Float32Type>().value(row);
            float(format!("{v}").parse().unwrap_or(f64::NAN))
        }
        DataType::Float64 => float(column.as_primitive::<Float64Type>().value(row)),
        DataType::Int8 => json!(column.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => json!(column.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => json!(column.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => json!(column.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => json!(column.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => json!(column.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => json!(column.as_primitive::<UInt64Type>().value(row)),
        DataType::Boolean => json!(column.as_boolean().value(row)),
        DataType::Utf8 => json!(column.as_string::<i32>().value(row)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            json!(format_us(
                column.as_primitive::<TimestampMicrosecondType>().value(row)
            ))
        }
        _ => match arrow_cast::cast(&column.slice(row, 1), &DataType::Utf8) {
            Ok(text) => json!(text.as_string::<i32>().value(0)),
            Err(_) => Value::Null,
        },
    }
}

/// Writes the records of `range` to `output`; returns how many.
fn query(dir: &Path, range: TimeRange, output: &Path, format: FileFormat) -> Result<u64> {
    let log = AuditLog::open(dir)?;
    let (from, to) = range.describe();
    let no_records = || AuditError::NoRecords {
        dir: dir.display().to_string(),
        from: from.clone(),
        to: to.clone(),
    };
    let union = log.schema(range)?.ok_or_else(no_records)?;
    // Each segment has its own dictionaries; an Arrow IPC file holds one
    // per column and CSV none: those get the values' type.
    let schema = if format == FileFormat::Parquet {
        union.clone()
    } else {
        plain_schema(&union)
    };
    let mut sink = FileSink::create(output, format, schema.clone())?;
    let n = log.read_range(range, None, &mut |b| {
        let b = conform(&b, &union)?;
        let columns = b
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| arrow_cast::cast(c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|c| RecordBatch::try_new(schema.clone(), c))
            .map_err(|e| AuditError::Arrow {
                what: "records without dictionaries".into(),
                message: e.to_string(),
            })?;
        sink.write(&columns).map_err(|e| AuditError::Arrow {
            what: format!("writing {}", output.display()),
            message: roo_scheduler::error::chain(&e),
        })
    })?;
    if n == 0 {
        return Err(no_records().into());
    }
    sink.finish()?;
    Ok(n)
}

/// Dictionary columns as their values' type.
fn plain_schema(schema: &arrow_schema::SchemaRef) -> arrow_schema::SchemaRef {
    let fields: Vec<arrow_schema::Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, v) => f.as_ref().clone().with_data_type(v.as_ref().clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(arrow_schema::Schema::new(fields))
}

pub fn replay_command(args: ReplayArgs) -> Result<()> {
    let log = AuditLog::open(&args.dir)?;
    let candidate = match &args.model {
        Some(path) => Some(Candidate {
            model: load_model(path)?,
            origin: path.display().to_string(),
        }),
        None => None,
    };
    let options = ReplayOptions {
        range: args.range.range()?,
        candidate,
        threshold: args.threshold,
        top: args.top,
    };
    let report = replay(&log, &options)?;
    let json_path = json_beside(&args.report);
    write_report(&args.report, report.markdown().as_bytes())?;
    write_report(
        &json_path,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    eprintln!(
        "roo: replayed {} records in {:.2} s ({:.0}/s): {} mismatches{}; report {} and {}",
        report.records,
        report.seconds,
        report.records_per_s,
        report.mismatches,
        match (report.flips_up, report.flips_down) {
            (Some(u), Some(d)) => format!(
                ", candidate flips {u} up and {d} down at {}",
                args.threshold
            ),
            _ => String::new(),
        },
        args.report.display(),
        json_path.display()
    );
    if report.mismatches > 0 {
        bail!(
            "{} recorded scores were not reproduced (listed in {})",
            report.mismatches,
            args.report.display()
        );
    }
    Ok(())
}

/// `report.md` → `report.json`; another name gets `.json` appended.
fn json_beside(report: &Path) -> PathBuf {
    if report.extension().is_some_and(|e| e == "md") {
        report.with_extension("json")
    } else {
        let mut name = report.as_os_str().to_owned();
        name.push(".json");
        PathBuf::from(name)
    }
}

fn write_report(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
