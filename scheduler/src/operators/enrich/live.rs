//! A table as the pipeline holds it while running: the snapshot in use,
//! swapped whole by a reload (the file changed, SIGHUP, Flight
//! `reload-table`) or an upsert (Flight DoPut), and the figures of each.
//!
//! The operator takes the current snapshot once per batch, so a swap
//! lands between two batches. Loads run on the caller's thread (the
//! watcher, a signal handler's, a Flight handler's), never the operator's;
//! reloads and upserts are serialised so none is lost to another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arrow_array::RecordBatch;
use arrow_schema::FieldRef;

use super::load::stamp;
use super::spec::{EnrichError, EnrichSpec};
use super::table::Table;
use crate::metrics::{OperatorStats, PipelineMetrics};
use crate::operators::OperatorKind;

/// A table and the snapshot in use.
pub struct LiveTable {
    spec: EnrichSpec,
    current: RwLock<Arc<Table>>,
    /// The first snapshot's columns and key type: what every later one
    /// must keep (the pipeline's output schema is fixed).
    fields: Vec<FieldRef>,
    key_is_int: bool,
    /// Held while a new snapshot is built and swapped in; the file stamp
    /// last loaded (or tried).
    writing: Mutex<Option<(u64, std::time::SystemTime, u64)>>,
    metrics: Arc<PipelineMetrics>,
    loads: AtomicU64,
    load_failures: AtomicU64,
    upserts: AtomicU64,
    /// Events that found no row (null key, unknown key, before the first version).
    pub(super) unmatched: AtomicU64,
}

impl LiveTable {
    /// Loads the table for the first time; an error here stops the
    /// pipeline from starting.
    pub fn open(spec: &EnrichSpec, metrics: Arc<PipelineMetrics>) -> Result<Self, EnrichError> {
        let before = stamp(&spec.table);
        let table = Table::load(spec)?;
        let live = Self {
            spec: spec.clone(),
            fields: table.fields().to_vec(),
            key_is_int: table.key_is_int(),
            current: RwLock::new(Arc::new(table)),
            writing: Mutex::new(before),
            metrics,
            loads: AtomicU64::new(1),
            load_failures: AtomicU64::new(0),
            upserts: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
        };
        live.publish();
        Ok(live)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &EnrichSpec {
        &self.spec
    }

    /// The snapshot in use.
    pub fn current(&self) -> Arc<Table> {
        self.current.read().expect("not poisoned").clone()
    }

    /// Reads the file again and swaps the new snapshot in; a table that
    /// fails to load (or would change the output schema) is refused and
    /// the current one stays. Upserts not also in the file are gone after
    /// a reload. Returns the new snapshot's version.
    pub fn reload(&self) -> Result<Arc<str>, EnrichError> {
        let mut writing = self.writing.lock().expect("not poisoned");
        *writing = stamp(&self.spec.table);
        let result = Table::load(&self.spec).and_then(|t| self.fits(t));
        self.swap(result, &self.loads)
    }

    /// Reloads when the file's stamp changed since the last load or try.
    pub fn reload_if_changed(&self) -> Option<Result<Arc<str>, EnrichError>> {
        let now = stamp(&self.spec.table);
        let last = *self.writing.lock().expect("not poisoned");
        (now != last).then(|| self.reload())
    }

    /// Upserts `batch`'s rows into a new snapshot and swaps it in.
    pub fn upsert(&self, batch: &RecordBatch) -> Result<Arc<str>, EnrichError> {
        let _writing = self.writing.lock().expect("not poisoned");
        let result = self.current().upsert(&self.spec, batch);
        self.swap(result, &self.upserts)
    }

    fn fits(&self, table: Table) -> Result<Table, EnrichError> {
        let origin = self.spec.table.display().to_string();
        if table.key_is_int() != self.key_is_int {
            return Err(EnrichError::SchemaChanged {
                table: origin,
                column: self.spec.key.clone(),
                found: if table.key_is_int() {
                    "an integer"
                } else {
                    "a string"
                }
                .into(),
                expected: if self.key_is_int {
                    "an integer"
                } else {
                    "a string"
                }
                .into(),
            });
        }
        let names = |f: &[FieldRef]| f.iter().map(|f| f.name().clone()).collect::<Vec<_>>();
        if names(table.fields()) != names(&self.fields) {
            return Err(EnrichError::SchemaChanged {
                table: origin,
                column: "(the columns)".into(),
                found: names(table.fields()).join(", "),
                expected: names(&self.fields).join(", "),
            });
        }
        for (new, old) in table.fields().iter().zip(&self.fields) {
            if new.data_type() != old.data_type() {
                return Err(EnrichError::SchemaChanged {
                    table: origin,
                    column: new.name().clone(),
                    found: new.data_type().to_string(),
                    expected: old.data_type().to_string(),
                });
            }
        }
        Ok(table)
    }

    fn swap(
        &self,
        result: Result<Table, EnrichError>,
        count: &AtomicU64,
    ) -> Result<Arc<str>, EnrichError> {
        let out = match result {
            Ok(table) => {
                let version = table.version().clone();
                *self.current.write().expect("not poisoned") = Arc::new(table);
                count.fetch_add(1, Ordering::Relaxed);
                Ok(version)
            }
            Err(e) => {
                self.load_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        };
        self.publish();
        out
    }

    /// Events that joined no row so far.
    pub fn unmatched(&self) -> u64 {
        self.unmatched.load(Ordering::Relaxed)
    }

    /// Sets the operator's figures in the pipeline's metrics.
    pub(super) fn publish(&self) {
        let table = self.current();
        self.metrics.set_operator_stats(OperatorStats {
            kind: OperatorKind::Enrich.name(),
            name: self.spec.name.clone(),
            keys_held: table.keys() as u64,
            state_bytes: table.bytes() as u64,
            table_rows: table.rows() as u64,
            table_loads: self.loads.load(Ordering::Relaxed),
            table_load_failures: self.load_failures.load(Ordering::Relaxed),
            table_upserts: self.upserts.load(Ordering::Relaxed),
            events_unmatched: self.unmatched.load(Ordering::Relaxed),
            ..Default::default()
        });
    }
}
