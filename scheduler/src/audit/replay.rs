//! Replay: the recorded inputs scored again.
//!
//! Without a candidate, each record is scored by the model version that
//! scored it (from the audit log's model store) on this machine's CPU: a
//! record scored on the CPU must come out bit for bit (every output's f32
//! bits; two NaNs agree), and each that does not is a mismatch. Records
//! scored on a GPU are replayed too, but as another device family: their
//! largest difference is reported, not counted as mismatches.
//!
//! With a candidate model, its score beside the recorded decision
//! (`score`): the distribution of `candidate − recorded`, and the
//! decisions it flips at the threshold — a decision is "positive" when
//! `score >= threshold` (a NaN score is not); `flips_up` are records the
//! recorded model scored below it and the candidate at or above,
//! `flips_down` the reverse — and the records they disagree on most.

use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, Float32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Schema};
use roo_kernels::cpu::CpuScorer;
use roo_kernels::{FeatureBinding, Model};
use serde::Serialize;

use super::layout::MODELS;
use super::read::{AuditLog, TimeRange};
use super::record::{DEVICE, ID};
use super::AuditError;

/// Mismatches listed one by one in a report (all are counted).
const MISMATCHES_LISTED: usize = 100;
/// The difference histogram: this many bins over [-1, 1] (a bin is
/// 1e-4 wide), values outside clamped into the end bins; quantiles are
/// read from it (min, max and mean are exact).
const DIFF_BINS: usize = 20_000;

/// A model to score the recorded inputs beside the recorded decisions.
pub struct Candidate {
    pub model: Model,
    /// Where it came from (a path).
    pub origin: String,
}

pub struct ReplayOptions {
    pub range: TimeRange,
    pub candidate: Option<Candidate>,
    /// The decision threshold for flips.
    pub threshold: f32,
    /// How many of the largest disagreements to list.
    pub top: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Mismatch {
    pub id: String,
    pub model_version: String,
    pub output: String,
    pub recorded: f32,
    pub replayed: f32,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Disagreement {
    pub id: String,
    pub recorded: f32,
    pub candidate: f32,
    pub diff: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct VersionCount {
    pub model_version: String,
    pub records: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DiffSummary {
    pub min: f64,
    pub p01: f64,
    pub p05: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    pub mean_abs: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CandidateReport {
    pub model: String,
    pub model_version: String,
    pub threshold: f32,
    /// Records whose recorded decision was positive, and the candidate's.
    pub positive_recorded: u64,
    pub positive_candidate: u64,
    pub diff: Option<DiffSummary>,
    pub disagreements: Vec<Disagreement>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub dir: String,
    pub from: String,
    pub to: String,
    pub records: u64,
    /// Records scored on the CPU, replayed bit for bit.
    pub compared: u64,
    pub mismatches: u64,
    pub mismatched: Vec<Mismatch>,
    /// Records scored on another device family (a GPU).
    pub other_device: u64,
    pub other_device_max_abs_diff: f64,
    pub versions: Vec<VersionCount>,
    pub flips_up: Option<u64>,
    pub flips_down: Option<u64>,
    pub candidate: Option<CandidateReport>,
    pub seconds: f64,
    pub records_per_s: f64,
}

/// A stored model version, its scorer compiled when a record needs it
/// (the store keeps every version ever used; a range meets a few).
struct Loaded {
    model: Model,
    scorer: std::sync::OnceLock<CpuScorer>,
}

struct Tally {
    records: u64,
    compared: u64,
    mismatches: u64,
    mismatched: Vec<Mismatch>,
    other_device: u64,
    other_max: f64,
    versions: HashMap<String, u64>,
    flips_up: u64,
    flips_down: u64,
    positive_recorded: u64,
    positive_candidate: u64,
    bins: Vec<u64>,
    diffs: u64,
    diff_sum: f64,
    diff_abs_sum: f64,
    diff_min: f64,
    diff_max: f64,
    top: BinaryHeap<Ranked>,
}

/// A disagreement ranked by |diff|, smallest first out of the heap.
struct Ranked(f32, Disagreement);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: the heap's top is the smallest kept.
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| self.1.id.cmp(&other.1.id))
    }
}

/// Replays `options.range` of `log`.
pub fn replay(log: &AuditLog, options: &ReplayOptions) -> Result<ReplayReport, AuditError> {
    let started = Instant::now();
    let mut models: HashMap<String, Loaded> = HashMap::new();
    // Every stored version, loaded once: their features decide which
    // columns are read.
    let store = log.dir().join(MODELS);
    let entries = std::fs::read_dir(&store).map_err(AuditError::io(&store))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let version = format!("sha256:{name}");
        let model = log.model(&version)?;
        models.insert(
            version,
            Loaded {
                model,
                scorer: std::sync::OnceLock::new(),
            },
        );
    }
    let candidate = match &options.candidate {
        Some(c) => {
            if c.model.n_outputs() != 1 {
                return Err(AuditError::Replay(format!(
                    "the candidate {} has {} outputs; flips compare one score",
                    c.origin,
                    c.model.n_outputs()
                )));
            }
            Some((c, CpuScorer::new(&c.model)))
        }
        None => None,
    };
    let mut wanted: Vec<&Model> = models.values().map(|l| &l.model).collect();
    if let Some((c, _)) = &candidate {
        wanted.push(&c.model);
    }
    let pick = |schema: &Schema| -> Vec<usize> {
        let mut cols = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            let n = f.name();
            if n == ID || n == DEVICE || n == "model_version" || n.starts_with("score") {
                cols.push(i);
            }
        }
        for m in &wanted {
            if let Ok(c) = FeatureBinding::feature_columns(m, schema) {
                cols.extend(c);
            }
        }
        cols
    };
    let mut t = Tally {
        records: 0,
        compared: 0,
        mismatches: 0,
        mismatched: Vec::new(),
        other_device: 0,
        other_max: 0.0,
        versions: HashMap::new(),
        flips_up: 0,
        flips_down: 0,
        positive_recorded: 0,
        positive_candidate: 0,
        bins: vec![0; DIFF_BINS],
        diffs: 0,
        diff_sum: 0.0,
        diff_abs_sum: 0.0,
        diff_min: f64::INFINITY,
        diff_max: f64::NEG_INFINITY,
        top: BinaryHeap::new(),
    };
    let mut each = |batch: RecordBatch| -> Result<(), AuditError> {
        replay_batch(&batch, &models, candidate.as_ref(), options, &mut t)
    };
    log.read_range(options.range, Some(&pick), &mut each)?;
    let (from, to) = options.range.describe();
    if t.records == 0 {
        return Err(AuditError::NoRecords {
            dir: log.dir().display().to_string(),
            from,
            to,
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut versions: Vec<VersionCount> = t
        .versions
        .into_iter()
        .map(|(model_version, records)| VersionCount {
            model_version,
            records,
        })
        .collect();
    versions.sort_by(|a, b| a.model_version.cmp(&b.model_version));
    let candidate = candidate.map(|(c, _)| {
        let mut disagreements: Vec<Disagreement> = std::mem::take(&mut t.top)
            .into_iter()
            .map(|r| r.1)
            .collect();
        disagreements.sort_by(|a, b| {
            b.diff
                .abs()
                .total_cmp(&a.diff.abs())
                .then_with(|| a.id.cmp(&b.id))
        });
        CandidateReport {
            model: c.origin.clone(),
            model_version: c.model.version.to_string(),
            threshold: options.threshold,
            positive_recorded: t.positive_recorded,
            positive_candidate: t.positive_candidate,
            diff: (t.diffs > 0).then(|| {
                summary(
                    &t.bins,
                    t.diffs,
                    t.diff_min,
                    t.diff_max,
                    t.diff_sum,
                    t.diff_abs_sum,
                )
            }),
            disagreements,
        }
    });
    Ok(ReplayReport {
        dir: log.dir().display().to_string(),
        from,
        to,
        records: t.records,
        compared: t.compared,
        mismatches: t.mismatches,
        mismatched: t.mismatched,
        other_device: t.other_device,
        other_device_max_abs_diff: t.other_max,
        versions,
        flips_up: candidate.as_ref().map(|_| t.flips_up),
        flips_down: candidate.as_ref().map(|_| t.flips_down),
        candidate,
        seconds,
        records_per_s: t.records as f64 / seconds.max(1e-9),
    })
}

/// Each row's model version, as (distinct versions, index per row).
fn versions_of(batch: &RecordBatch) -> Result<(Vec<String>, Vec<u32>), AuditError> {
    let column = batch
        .column_by_name("model_version")
        .ok_or_else(|| AuditError::Replay("a record has no model_version column".into()))?;
    match column.data_type() {
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            let d = column.as_dictionary::<Int32Type>();
            let values = d.values().as_string::<i32>();
            let names = (0..values.len())
                .map(|i| values.value(i).to_string())
                .collect();
            Ok((names, d.keys().values().iter().map(|&k| k as u32).collect()))
        }
        DataType::Utf8 => {
            let s = column.as_string::<i32>();
            let mut names: Vec<String> = Vec::new();
            let mut keys = Vec::with_capacity(s.len());
            for i in 0..s.len() {
                let v = s.value(i);
                let k = match names.iter().position(|n| n == v) {
                    Some(k) => k,
                    None => {
                        names.push(v.to_string());
                        names.len() - 1
                    }
                };
                keys.push(k as u32);
            }
            Ok((names, keys))
        }
        other => Err(AuditError::Replay(format!(
            "model_version is {other}; expected text"
        ))),
    }
}

/// A model's scores over `batch` (every row), as one f32 column per output.
fn score(
    model: &Model,
    scorer: &CpuScorer,
    batch: &RecordBatch,
) -> Result<Vec<Vec<f32>>, AuditError> {
    let outputs: Vec<String> = (0..model.n_outputs())
        .map(|i| format!("roo_replay_{i}"))
        .collect();
    let binding = FeatureBinding::with_outputs(model, &batch.schema(), &outputs, "roo.replay")
        .map_err(|source| AuditError::Bind {
            model: model.version.to_string(),
            source,
        })?;
    let arrays = binding
        .feature_arrays(batch)
        .map_err(|e| AuditError::Arrow {
            what: "the recorded features as f32".into(),
            message: e.to_string(),
        })?;
    let features: Vec<&[f32]> = arrays.iter().map(|a| a.values().as_ref()).collect();
    let rows = batch.num_rows();
    let mut out = vec![vec![0f32; rows]; model.n_outputs()];
    {
        let mut slices: Vec<&mut [f32]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
        scorer.score(&features, &mut slices);
    }
    Ok(out)
}

fn f32_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Float32Array, AuditError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Float32Array>())
        .ok_or_else(|| AuditError::Replay(format!("a record has no float32 column {name:?}")))
}

fn replay_batch(
    batch: &RecordBatch,
    models: &HashMap<String, Loaded>,
    candidate: Option<&(&Candidate, CpuScorer)>,
    options: &ReplayOptions,
    t: &mut Tally,
) -> Result<(), AuditError> {
    let rows = batch.num_rows();
    t.records += rows as u64;
    let ids = batch
        .column_by_name(ID)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| AuditError::Replay(format!("a record has no {ID} column")))?;
    let on_cpu: Vec<bool> = match batch.column_by_name(DEVICE) {
        // A dictionary: each value judged once, then looked up by key.
        Some(c) if matches!(c.data_type(), DataType::Dictionary(k, _) if **k == DataType::Int32) => {
            let d = c.as_dictionary::<Int32Type>();
            let values =
                arrow_cast::cast(d.values(), &DataType::Utf8).map_err(|e| AuditError::Arrow {
                    what: DEVICE.into(),
                    message: e.to_string(),
                })?;
            let values = values.as_string::<i32>();
            let cpu: Vec<bool> = (0..values.len())
                .map(|i| values.value(i).starts_with("cpu"))
                .collect();
            d.keys().values().iter().map(|&k| cpu[k as usize]).collect()
        }
        Some(c) => {
            let text = arrow_cast::cast(c, &DataType::Utf8).map_err(|e| AuditError::Arrow {
                what: DEVICE.into(),
                message: e.to_string(),
            })?;
            let text = text.as_string::<i32>();
            (0..rows)
                .map(|i| text.value(i).starts_with("cpu"))
                .collect()
        }
        None => vec![true; rows],
    };
    let (names, keys) = versions_of(batch)?;
    for (k, version) in names.iter().enumerate() {
        let mine: Vec<usize> = (0..rows).filter(|&r| keys[r] as usize == k).collect();
        if mine.is_empty() {
            continue;
        }
        *t.versions.entry(version.clone()).or_default() += mine.len() as u64;
        let loaded = models
            .get(version)
            .ok_or_else(|| AuditError::ModelMissing {
                dir: "the audit log".into(),
                version: version.clone(),
                path: format!("{MODELS}/{}", version.trim_start_matches("sha256:")),
            })?;
        let scorer = loaded.scorer.get_or_init(|| CpuScorer::new(&loaded.model));
        // One version (the usual batch): every row as it is; several (a
        // reload inside the batch): each version scores its own rows.
        let replayed = if mine.len() == rows {
            score(&loaded.model, scorer, batch)?
        } else {
            let indices =
                arrow_array::UInt32Array::from_iter_values(mine.iter().map(|&r| r as u32));
            let own = arrow_select::take::take_record_batch(batch, &indices).map_err(|e| {
                AuditError::Arrow {
                    what: "one model version's records".into(),
                    message: e.to_string(),
                }
            })?;
            score(&loaded.model, scorer, &own)?
        };
        for (o, name) in loaded.model.output_names().iter().enumerate() {
            let recorded = f32_column(batch, name)?;
            // `replayed` holds `mine`'s rows in order (all of them when
            // the batch has one version).
            for (j, &r) in mine.iter().enumerate() {
                let (a, b) = (recorded.value(r), replayed[o][j]);
                let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
                if on_cpu[r] {
                    if !same {
                        t.mismatches += 1;
                        if t.mismatched.len() < MISMATCHES_LISTED {
                            t.mismatched.push(Mismatch {
                                id: ids.value(r).to_string(),
                                model_version: version.clone(),
                                output: name.clone(),
                                recorded: a,
                                replayed: b,
                            });
                        }
                    }
                } else if !same {
                    t.other_max = t.other_max.max(f64::from((a - b).abs()));
                }
            }
        }
        for &r in &mine {
            if on_cpu[r] {
                t.compared += 1;
            } else {
                t.other_device += 1;
            }
        }
    }
    if let Some((c, scorer)) = candidate {
        let theirs = score(&c.model, scorer, batch)?;
        let recorded = f32_column(batch, "score")?;
        let thr = options.threshold;
        for (r, &b) in theirs[0].iter().enumerate() {
            let a = recorded.value(r);
            let (pa, pb) = (a >= thr, b >= thr);
            t.positive_recorded += u64::from(pa);
            t.positive_candidate += u64::from(pb);
            t.flips_up += u64::from(!pa && pb);
            t.flips_down += u64::from(pa && !pb);
            let d = b - a;
            if d.is_nan() {
                continue;
            }
            let df = f64::from(d);
            t.diffs += 1;
            t.diff_sum += df;
            t.diff_abs_sum += df.abs();
            t.diff_min = t.diff_min.min(df);
            t.diff_max = t.diff_max.max(df);
            let bin = (((df + 1.0) / 2.0 * DIFF_BINS as f64).floor() as i64)
                .clamp(0, DIFF_BINS as i64 - 1);
            t.bins[bin as usize] += 1;
            if options.top > 0 {
                let kept_min = t.top.peek().map(|k| k.0);
                if t.top.len() < options.top || kept_min.is_some_and(|m| d.abs() > m) {
                    t.top.push(Ranked(
                        d.abs(),
                        Disagreement {
                            id: ids.value(r).to_string(),
                            recorded: a,
                            candidate: b,
                            diff: d,
                        },
                    ));
                    if t.top.len() > options.top {
                        t.top.pop();
                    }
                }
            }
        }
    }
    Ok(())
}

fn summary(bins: &[u64], n: u64, min: f64, max: f64, sum: f64, abs_sum: f64) -> DiffSummary {
    let q = |p: f64| -> f64 {
        let target = ((p * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, &c) in bins.iter().enumerate() {
            seen += c;
            if seen >= target {
                // The bin's centre, held within the exact extremes.
                let centre = (i as f64 + 0.5) / DIFF_BINS as f64 * 2.0 - 1.0;
                return centre.clamp(min, max);
            }
        }
        max
    };
    DiffSummary {
        min,
        p01: q(0.01),
        p05: q(0.05),
        p50: q(0.50),
        p95: q(0.95),
        p99: q(0.99),
        max,
        mean: sum / n as f64,
        mean_abs: abs_sum / n as f64,
    }
}

impl ReplayReport {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Replay of {}\n", self.dir);
        let _ = writeln!(
            s,
            "Event time from {} to {} (end excluded).\n",
            self.from, self.to
        );
        let _ = writeln!(s, "| figure | value |\n|---|---|");
        let _ = writeln!(s, "| records | {} |", self.records);
        let _ = writeln!(
            s,
            "| replayed bit for bit (scored on the CPU) | {} |",
            self.compared
        );
        let _ = writeln!(s, "| mismatches | {} |", self.mismatches);
        let _ = writeln!(
            s,
            "| scored on another device family | {} (largest difference {:.3e}) |",
            self.other_device, self.other_device_max_abs_diff
        );
        let _ = writeln!(
            s,
            "| time | {:.2} s ({:.0} records/s) |\n",
            self.seconds, self.records_per_s
        );
        let _ = writeln!(s, "## Model versions\n\n| version | records |\n|---|---|");
        for v in &self.versions {
            let _ = writeln!(s, "| `{}` | {} |", v.model_version, v.records);
        }
        if !self.mismatched.is_empty() {
            let _ = writeln!(
                s,
                "\n## Mismatches (first {})\n\n| id | version | output | recorded | replayed |\n|---|---|---|---|---|",
                self.mismatched.len()
            );
            for m in &self.mismatched {
                let _ = writeln!(
                    s,
                    "| {} | `{}` | {} | {:?} | {:?} |",
                    m.id, m.model_version, m.output, m.recorded, m.replayed
                );
            }
        }
        if let Some(c) = &self.candidate {
            let _ = writeln!(
                s,
                "\n## Candidate {} (`{}`)\n\nDecision: score >= {}.\n",
                c.model, c.model_version, c.threshold
            );
            let _ = writeln!(s, "| figure | value |\n|---|---|");
            let _ = writeln!(s, "| positive, recorded | {} |", c.positive_recorded);
            let _ = writeln!(s, "| positive, candidate | {} |", c.positive_candidate);
            let _ = writeln!(
                s,
                "| flips up (recorded below, candidate at or above) | {} |",
                self.flips_up.unwrap_or(0)
            );
            let _ = writeln!(
                s,
                "| flips down (recorded at or above, candidate below) | {} |",
                self.flips_down.unwrap_or(0)
            );
            if let Some(d) = &c.diff {
                let _ = writeln!(
                    s,
                    "\nCandidate − recorded: min {:.4}, p1 {:.4}, p5 {:.4}, median {:.4}, p95 {:.4}, p99 {:.4}, max {:.4}; mean {:.5}, mean |diff| {:.5} (quantiles to 1e-4).",
                    d.min, d.p01, d.p05, d.p50, d.p95, d.p99, d.max, d.mean, d.mean_abs
                );
            }
            if !c.disagreements.is_empty() {
                let _ = writeln!(
                    s,
                    "\n### Largest disagreements\n\n| id | recorded | candidate | diff |\n|---|---|---|---|"
                );
                for d in &c.disagreements {
                    let _ = writeln!(
                        s,
                        "| {} | {:.6} | {:.6} | {:+.6} |",
                        d.id, d.recorded, d.candidate, d.diff
                    );
                }
            }
        }
        s
    }
}
