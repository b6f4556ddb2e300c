//! `roo-bench enrich`: the enrich operator alone on one core, joining
//! events with a table of `keys` keys (one to four versions each) three
//! ways — integer keys as of each event's time, string keys as of it, and
//! integer keys without versions — beside pandas `merge_asof(by=key)` and
//! `merge` on a prefix of the same events and the same table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use roo_scheduler::operators::enrich::{EnrichOperator, EnrichSpec, LiveTable, Missing};
use roo_scheduler::PipelineMetrics;

use crate::features::{prefix, time_batches, write_ipc};
use crate::report::{process_peak_rss_mib, reset_peak_rss, Measurement, Run, Section};

/// The three joins, named as the report shows them.
pub const CASES: [Case; 3] = [
    Case {
        id: "int_asof",
        text: false,
        as_of: true,
        roo: "roo, enrich, integer keys, as-of, one core",
        peer: "pandas merge_asof(by=key), integer keys",
    },
    Case {
        id: "text_asof",
        text: true,
        as_of: true,
        roo: "roo, enrich, string keys, as-of, one core",
        peer: "pandas merge_asof(by=key), string keys",
    },
    Case {
        id: "int_plain",
        text: false,
        as_of: false,
        roo: "roo, enrich, integer keys, latest row, one core",
        peer: "pandas merge(how=left), integer keys",
    },
];

/// Suffix of roo's figure on the peers' events.
pub const PREFIX: &str = ", the peers' events";

pub struct Case {
    pub id: &'static str,
    pub text: bool,
    pub as_of: bool,
    pub roo: &'static str,
    pub peer: &'static str,
}

const BATCH_ROWS: usize = 8192;
const START: i64 = 1_790_000_000_000_000;
const SPAN_US: i64 = 30 * 86_400_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        (((self.next() >> 11) as u128 * n as u128) >> 53) as u64
    }
}

fn key_array(keys: impl Iterator<Item = i64>, text: bool) -> ArrayRef {
    if text {
        Arc::new(StringArray::from_iter_values(
            keys.map(|k| format!("card-{k:08}")),
        ))
    } else {
        Arc::new(Int64Array::from_iter_values(keys))
    }
}

/// The table: every key but one in ten, one to four versions, valid from
/// times over the 30 days the events span (the first version before them
/// for most keys). Rows in valid_from order (every key's versions increase).
fn table(keys: usize, text: bool, as_of: bool) -> RecordBatch {
    let mut r = Rng(0x5851_f42d_4c95_7f2d);
    let mut rows: Vec<(i64, i64)> = Vec::new();
    for k in 0..keys as i64 {
        if k % 10 == 9 {
            continue;
        }
        let versions = if as_of { 1 + r.below(4) } else { 1 };
        let mut t = START - SPAN_US / 10 + r.below(SPAN_US as u64 / 4) as i64;
        for _ in 0..versions {
            rows.push((t, k));
            t += 1 + r.below(SPAN_US as u64 / 3) as i64;
        }
    }
    rows.sort_unstable();
    let n = rows.len();
    let mut fields = vec![Field::new(
        "card_id",
        if text {
            DataType::Utf8
        } else {
            DataType::Int64
        },
        false,
    )];
    let mut columns = vec![key_array(rows.iter().map(|r| r.1), text)];
    if as_of {
        fields.push(Field::new("valid_from", DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.0),
        )));
    }
    fields.push(Field::new("credit_limit", DataType::Float64, true));
    columns.push(Arc::new(Float64Array::from_iter_values(
        (0..n).map(|_| (r.below(200) * 100) as f64),
    )));
    fields.push(Field::new("account_age_days", DataType::Int64, true));
    columns.push(Arc::new(Int64Array::from_iter_values(
        (0..n).map(|_| r.below(4000) as i64),
    )));
    fields.push(Field::new("home_country", DataType::Utf8, true));
    columns.push(Arc::new(StringArray::from_iter_values(
        (0..n).map(|_| ["PT", "DE", "US", "BR", "IN", "FR"][r.below(6) as usize]),
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("built to the schema")
}

fn event_schema(text: bool) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "card_id",
            if text {
                DataType::Utf8
            } else {
                DataType::Int64
            },
            false,
        ),
        Field::new("ts", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
    ]))
}

/// Events in time order over the 30 days, keys uniform over every key and
/// a tenth more (one in ten events has no row: missing, or before its
/// key's first version).
fn generate(n: usize, keys: usize, text: bool) -> Vec<RecordBatch> {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut batches = Vec::new();
    let mut at = 0;
    while at < n {
        let m = BATCH_ROWS.min(n - at);
        let key: Vec<i64> = (0..m).map(|_| r.below(keys as u64) as i64).collect();
        let ts = Int64Array::from_iter_values(
            (at..at + m).map(|i| START + (i as i128 * SPAN_US as i128 / n as i128) as i64),
        );
        let amount = Float64Array::from_iter_values((0..m).map(|_| r.below(50_000) as f64 / 100.0));
        batches.push(
            RecordBatch::try_new(
                event_schema(text),
                vec![
                    key_array(key.into_iter(), text),
                    Arc::new(ts),
                    Arc::new(amount),
                ],
            )
            .expect("built to the schema"),
        );
        at += m;
    }
    batches
}

pub fn run(
    events: usize,
    keys: usize,
    peer_events: usize,
    python: Option<&str>,
    cache: &Path,
) -> Result<Section> {
    let mut section = Section::new(
        "enrich",
        "Enrichment: the table join on one core, beside pandas merge_asof and merge",
    );
    section.note(format!(
        "A table of {keys} keys (one key in ten absent; one to four versions each for the as-of \
         joins) with three columns (credit_limit, account_age_days, home_country); events in time \
         order over 30 days, keys uniform. roo: the enrich operator alone on one thread over \
         in-memory Arrow batches of 8,192 events, the table loaded from an Arrow IPC file \
         (load time not counted); CPU time of the process over the loop. Peers: pandas \
         merge_asof(by=key, direction=backward) and merge(how=left) on the first events of the \
         same stream and the same table, one thread, from data in memory (the table pre-sorted by \
         valid_from, as merge_asof needs, not timed)."
    ));
    std::fs::create_dir_all(cache)?;
    let peer_events = peer_events.min(events);
    for case in &CASES {
        crate::report::step(&format!("enrich: {}", case.id));
        let table_path: PathBuf = cache.join(format!("enrich_table_{}_{keys}.arrow", case.id));
        let table = table(keys, case.text, case.as_of);
        write_ipc(&table_path, std::slice::from_ref(&table))?;
        drop(table);
        let spec = EnrichSpec {
            name: "profile".into(),
            table: table_path.clone(),
            key: "card_id".into(),
            columns: None,
            valid_from: case.as_of.then(|| "valid_from".to_string()),
            missing: Missing::Null,
            table_bytes_max: 16 << 30,
        };
        reset_peak_rss();
        let rss_before = process_peak_rss_mib();
        let (load, live) =
            Run::time(|| LiveTable::open(&spec, Arc::new(PipelineMetrics::default())));
        let live = Arc::new(live?);
        let t = live.current();
        let (rows, table_keys, bytes) = (t.rows(), t.keys(), t.bytes());
        drop(t);
        let batches = generate(events, keys, case.text);
        let mut op = EnrichOperator::new(live.clone(), Some(1), &event_schema(case.text))?;
        let (run, _) = time_batches(&mut op, &batches)?;
        let rss = process_peak_rss_mib();
        say!(
            "  {}: {:.2} M lookups/s on one core, {:.0} CPU-ns/event, {} of {events} events joined a row; \
             table {rows} rows, {table_keys} keys, {:.1} MiB ({:.0} bytes/row), loaded in {:.2} s; \
             peak RSS {rss:.0} MiB (+{:.0} MiB)",
            case.roo,
            events as f64 / run.wall_s / 1e6,
            run.cpu_s * 1e9 / events as f64,
            events as u64 - live.unmatched(),
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / rows as f64,
            load.wall_s,
            rss - rss_before
        );
        section.push(
            Measurement::roo(case.roo, events as f64, run.wall_s, Some(run.cpu_s)).rss(Some(rss)),
        );
        let Some(python) = python else { continue };
        let first = prefix(&batches, peer_events);
        drop(batches);
        let before = live.unmatched();
        let (roo_prefix, _) = time_batches(&mut op, &first)?;
        let roo_matched = peer_events as u64 - (live.unmatched() - before);
        let roo_name = format!("{}{PREFIX}", case.roo);
        section.push(Measurement::roo(
            &roo_name,
            peer_events as f64,
            roo_prefix.wall_s,
            Some(roo_prefix.cpu_s),
        ));
        let events_path = cache.join(format!("enrich_events_{}_{peer_events}.arrow", case.id));
        write_ipc(&events_path, &first)?;
        drop(first);
        let out = crate::run_script(
            python,
            "enrich_peers.py",
            &[
                events_path.to_str().context("path")?,
                table_path.to_str().context("path")?,
                if case.as_of { "asof" } else { "plain" },
            ],
        )?;
        let p: serde_json::Value = serde_json::from_str(out.trim())?;
        let cpu = p["cpu_s"].as_f64().context("enrich_peers.py: cpu_s")?;
        let wall = p["wall_s"].as_f64().context("enrich_peers.py: wall_s")?;
        let matched = p["matched"].as_u64().context("enrich_peers.py: matched")?;
        // The same join: the same events found a row (a null credit_limit never occurs here).
        anyhow::ensure!(
            matched == roo_matched,
            "{}: pandas joined {matched} events, roo {roo_matched}",
            case.peer
        );
        say!(
            "  {}: {:.2} M events/s, {:.0} CPU-ns/event ({:.1}x roo's {:.0}); {matched} of {peer_events} events joined a row",
            case.peer,
            peer_events as f64 / wall / 1e6,
            cpu * 1e9 / peer_events as f64,
            cpu / roo_prefix.cpu_s,
            roo_prefix.cpu_s * 1e9 / peer_events as f64
        );
        section.push(
            Measurement::peer(case.peer, "pandas", peer_events as f64, wall, Some(cpu))
                .rss(p["peak_rss_mib"].as_f64())
                .against(&roo_name),
        );
    }
    section.detail = crate::report::take_lines();
    Ok(section)
}
