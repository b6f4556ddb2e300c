//! The live tables over Flight: DoPut with descriptor `["tables", NAME]`
//! upserts rows into every pipeline's table NAME (new versions when the
//! table has valid_from), acknowledged once the new snapshot is in place
//! (the next batch joins it); the `reload-table` action reads a table's
//! file again. Upserts last until the next reload of the file.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::{FlightData, PutResult};
use bytes::Bytes;
use roo_scheduler::error::chain;
use roo_scheduler::operators::enrich::LiveTable;
use roo_scheduler::Pipeline;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::streams::{refuse, Incoming, Stopped};
use super::{invalid, Shared};
use crate::serve::list;

/// The table a DoPut descriptor names: `["tables", NAME]`.
pub(super) fn table_path(path: &[String]) -> Option<&str> {
    match path {
        [first, name] if first == "tables" => Some(name),
        _ => None,
    }
}

/// Every pipeline's table `name`, with its pipeline's name.
fn tables_named(
    shared: &Shared,
    name: &str,
    only: Option<&str>,
) -> Result<Vec<(String, Arc<LiveTable>)>, Status> {
    let pipelines: Vec<Arc<Pipeline>> = list(&shared.pipelines)
        .into_iter()
        .filter(|p| only.is_none_or(|o| p.name() == o))
        .collect();
    if let Some(o) = only.filter(|_| pipelines.is_empty()) {
        return Err(Status::not_found(format!(
            "no pipeline named {o:?}; pipelines: {}",
            shared.pipeline_names()
        )));
    }
    let found: Vec<(String, Arc<LiveTable>)> = pipelines
        .iter()
        .filter_map(|p| {
            p.table(name)
                .ok()
                .map(|t| (p.name().to_string(), t.clone()))
        })
        .collect();
    if found.is_empty() {
        let all: Vec<String> = list(&shared.pipelines)
            .iter()
            .flat_map(|p| {
                p.tables()
                    .iter()
                    .map(|t| format!("{} (pipeline {})", t.name(), p.name()))
                    .collect::<Vec<_>>()
            })
            .collect();
        return Err(Status::not_found(format!(
            "no table named {name:?}; tables: {}",
            if all.is_empty() {
                "none".to_string()
            } else {
                all.join(", ")
            }
        )));
    }
    Ok(found)
}

/// A table's new version in one pipeline.
#[derive(Serialize)]
struct TableVersion {
    pipeline: String,
    table: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A `PutResult`'s `app_metadata` for a table: rows upserted so far in
/// this stream (cumulative) and each table's version after the last batch.
#[derive(Serialize)]
struct UpsertAck<'a> {
    rows_upserted: u64,
    tables: &'a [TableVersion],
}

/// Runs a DoPut into table `name`: each batch is upserted into every
/// pipeline's table of that name before it is acknowledged.
pub(super) async fn upsert(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<PutResult, Status>>,
    input: Streaming<FlightData>,
    first: FlightData,
    name: String,
    who: String,
) {
    let tables = match tables_named(&shared, &name, None) {
        Ok(t) => t,
        Err(status) => return refuse(&tx, status, shared.idle).await,
    };
    let mut incoming = Incoming::new(input, first, shared.idle);
    let mut rows = 0u64;
    let mut last = Vec::new();
    loop {
        let batch = match incoming.next(|_| Ok(())).await {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(Stopped::Gone) => return,
            Err(Stopped::Refused(status)) => return refuse(&tx, status, shared.idle).await,
        };
        let reserved = shared.reserve(&batch, 2).await;
        let batch_rows = batch.num_rows() as u64;
        let job_tables = tables.clone();
        // Building a snapshot reads the whole table: off the runtime.
        let done = tokio::task::spawn_blocking(move || {
            job_tables
                .iter()
                .map(|(p, t)| (p.clone(), t.name().to_string(), t.upsert(&batch)))
                .collect::<Vec<_>>()
        })
        .await;
        drop(reserved);
        let Ok(done) = done else { return };
        last.clear();
        for (pipeline, table, result) in done {
            match result {
                Ok(version) => last.push(TableVersion {
                    pipeline,
                    table,
                    version: Some(version.to_string()),
                    error: None,
                }),
                Err(e) => {
                    // One refused batch ends the stream: the rows before it stand.
                    return refuse(
                        &tx,
                        invalid(format!("pipeline {pipeline}: {}", chain(&e))),
                        shared.idle,
                    )
                    .await;
                }
            }
        }
        rows += batch_rows;
        tracing::info!("flight: {who} upserted {batch_rows} rows into table {name}");
        let _ = tx.try_send(Ok(ack(rows, &last)));
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(Ok(ack(rows, &last)))).await;
}

fn ack(rows: u64, tables: &[TableVersion]) -> PutResult {
    PutResult {
        app_metadata: Bytes::from(
            serde_json::to_vec(&UpsertAck {
                rows_upserted: rows,
                tables,
            })
            .expect("an ack serialises"),
        ),
    }
}

/// `reload-table`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadTable {
    table: String,
    pipeline: Option<String>,
}

/// `reload-table`: reads the table's file again in each pipeline that has
/// it (or in `pipeline` only); one result per table.
pub(super) fn reload_table(shared: &Shared, body: &[u8]) -> Result<Bytes, Status> {
    let request: ReloadTable = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "reload-table: {e}; expected {{\"table\": NAME}} or {{\"table\": NAME, \"pipeline\": P}}"
        ))
    })?;
    let results: Vec<TableVersion> =
        tables_named(shared, &request.table, request.pipeline.as_deref())?
            .into_iter()
            .map(|(pipeline, t)| {
                let r = t.reload();
                TableVersion {
                    pipeline,
                    table: t.name().to_string(),
                    version: r.as_ref().ok().map(|v| v.to_string()),
                    error: r.err().map(|e| chain(&e)),
                }
            })
            .collect();
    Ok(Bytes::from(
        serde_json::to_vec_pretty(&results).expect("replies serialise"),
    ))
}
