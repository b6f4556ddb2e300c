//! DoAction: `list-models`, `upload-model`, `activate-model`,
//! `pipeline-stats`, `reload`, `reload-table` (in `tables.rs`). Bodies and replies are JSON (serde types
//! below); actions that read or compile files run on the blocking pool.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use arrow_flight::{Action, ActionType, Empty};
use bytes::Bytes;
use roo_scheduler::ModelStore;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use roo_scheduler::error::chain;

use super::{invalid, BoxStream, Shared};
use crate::serve::list;

pub(super) async fn do_action(
    shared: &Arc<Shared>,
    request: Request<Action>,
) -> Result<Response<BoxStream<arrow_flight::Result>>, Status> {
    let who = shared.authorize(&request)?;
    let action = request.into_inner();
    let shared = shared.clone();
    let kind = action.r#type.clone();
    // Model imports and reloads read and compile files: off the runtime.
    let body = tokio::task::spawn_blocking(move || run_action(&shared, &who, &action))
        .await
        .map_err(|_| Status::internal(format!("action {kind} failed inside the server")))??;
    Ok(Response::new(Box::pin(futures::stream::iter([Ok(
        arrow_flight::Result { body },
    )]))))
}

pub(super) async fn list_actions(
    shared: &Shared,
    request: Request<Empty>,
) -> Result<Response<BoxStream<ActionType>>, Status> {
    shared.authorize(&request)?;
    let actions = ACTIONS.iter().map(|(t, d)| {
        Ok(ActionType {
            r#type: t.to_string(),
            description: d.to_string(),
        })
    });
    Ok(Response::new(Box::pin(futures::stream::iter(
        actions.collect::<Vec<_>>(),
    ))))
}

const ACTIONS: [(&str, &str); 6] = [
    ("list-models", "the models each pipeline scores with and the models uploaded; body: empty"),
    ("upload-model", "stores a model file (XGBoost JSON/UBJSON, LightGBM text, ONNX, roo linear JSON; recognised by content); body: the file's bytes; reply: its version"),
    ("activate-model", "swaps a stored model into a pipeline between two batches; body: {\"pipeline\": P, \"model\": VERSION}"),
    ("pipeline-stats", "counters, queue depths and latency per pipeline; body: empty or a pipeline name"),
    ("reload", "reads each pipeline's model file again; body: empty or a pipeline name"),
    ("reload-table", "reads a table's file again and swaps it in between two batches (upserts not in the file are dropped); body: {\"table\": NAME} or {\"table\": NAME, \"pipeline\": P}"),
];

/// `activate-model`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateRequest {
    pipeline: String,
    model: String,
}

/// A pipeline's model in `list-models`.
#[derive(Serialize)]
struct RunningModel {
    pipeline: String,
    version: Option<String>,
    path: Option<String>,
}

/// A stored model in `list-models` and `upload-model`'s reply.
#[derive(Serialize)]
struct StoredModelInfo {
    version: String,
    family: &'static str,
    features: Vec<String>,
    outputs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uploaded_unix_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<bool>,
}

#[derive(Serialize)]
struct ModelList {
    pipelines: Vec<RunningModel>,
    stored: Vec<StoredModelInfo>,
}

#[derive(Serialize)]
struct Activated {
    pipeline: String,
    version: String,
    previous: Option<String>,
}

/// One pipeline's outcome of `reload`.
#[derive(Serialize)]
struct Reloaded {
    pipeline: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn reply(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(value).expect("action replies serialise"))
}

fn info(m: &roo_scheduler::CompiledModel) -> StoredModelInfo {
    StoredModelInfo {
        version: m.version.clone(),
        family: m.family(),
        features: m.model.feature_names.clone(),
        outputs: m.model.output_names(),
        bytes: None,
        uploaded_unix_s: None,
        active: None,
    }
}

fn run_action(shared: &Shared, who: &str, action: &Action) -> Result<Bytes, Status> {
    let body_text = || {
        std::str::from_utf8(&action.body)
            .map(str::trim)
            .map_err(|_| {
                invalid(format!(
                    "action {}: the body is not UTF-8 text",
                    action.r#type
                ))
            })
    };
    let store = |kind: &str| {
        shared.store.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!(
                "{kind}: this server keeps no models (set flight.model_dir)"
            ))
        })
    };
    let pipelines = list(&shared.pipelines);
    let chosen = |only: &str| -> Result<Vec<_>, Status> {
        let chosen: Vec<_> = pipelines
            .iter()
            .filter(|p| only.is_empty() || p.name() == only)
            .cloned()
            .collect();
        if chosen.is_empty() && !only.is_empty() {
            return Err(Status::not_found(format!(
                "{}: no pipeline named {only:?}; pipelines: {}",
                action.r#type,
                shared.pipeline_names()
            )));
        }
        Ok(chosen)
    };
    match action.r#type.as_str() {
        "list-models" => {
            let active: Vec<String> = pipelines.iter().filter_map(|p| p.model_version()).collect();
            let running = pipelines
                .iter()
                .map(|p| RunningModel {
                    pipeline: p.name().to_string(),
                    version: p.model_version(),
                    path: p.model_path().map(|p| p.display().to_string()),
                })
                .collect();
            let stored = shared
                .store
                .as_ref()
                .map(ModelStore::list)
                .unwrap_or_default()
                .iter()
                .map(|m| StoredModelInfo {
                    bytes: Some(m.bytes),
                    uploaded_unix_s: Some(
                        m.uploaded
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs(),
                    ),
                    active: Some(active.contains(&m.compiled.version)),
                    ..info(&m.compiled)
                })
                .collect();
            Ok(reply(&ModelList {
                pipelines: running,
                stored,
            }))
        }
        "upload-model" => {
            let store = store("upload-model")?;
            if action.body.is_empty() {
                return Err(invalid(
                    "upload-model: the body is empty; expected the model file's bytes",
                ));
            }
            let in_use: Vec<String> = pipelines.iter().filter_map(|p| p.model_version()).collect();
            let stored = store
                .upload(who, &action.body, &in_use)
                .map_err(|e| invalid(format!("upload-model: {}", chain(&e))))?;
            tracing::info!(
                "flight: {who} uploaded model {} ({} bytes)",
                stored.compiled.version,
                stored.bytes
            );
            Ok(reply(&info(&stored.compiled)))
        }
        "activate-model" => {
            let store = store("activate-model")?;
            let request: ActivateRequest = serde_json::from_slice(&action.body).map_err(|e| {
                invalid(format!(
                    "activate-model: {e}; expected {{\"pipeline\": P, \"model\": VERSION}}"
                ))
            })?;
            let stored = store.find(&request.model).ok_or_else(|| {
                Status::not_found(format!(
                    "activate-model: no stored model {:?}; upload it first",
                    request.model
                ))
            })?;
            let pipeline = shared.pipeline(&request.pipeline)?;
            let previous = pipeline.model_version();
            // Compiled with no lock held: /metrics and other calls carry on.
            let version = pipeline
                .activate(stored.compiled.clone(), &stored.path)
                .map_err(|e| {
                    Status::failed_precondition(format!("activate-model: {}", chain(&e)))
                })?;
            tracing::info!(
                "flight: {who} activated {version} in pipeline {} (was {})",
                request.pipeline,
                previous.as_deref().unwrap_or("no model")
            );
            Ok(reply(&Activated {
                pipeline: request.pipeline,
                version,
                previous,
            }))
        }
        "pipeline-stats" => {
            let stats: Vec<_> = chosen(body_text()?)?.iter().map(|p| p.snapshot()).collect();
            Ok(reply(&stats))
        }
        "reload" => {
            let results: Vec<Reloaded> = chosen(body_text()?)?
                .iter()
                .map(|p| match p.reload() {
                    Ok(version) => Reloaded {
                        pipeline: p.name().to_string(),
                        version,
                        error: None,
                    },
                    Err(e) => Reloaded {
                        pipeline: p.name().to_string(),
                        version: None,
                        error: Some(chain(&e)),
                    },
                })
                .collect();
            Ok(reply(&results))
        }
        "reload-table" => super::tables::reload_table(shared, &action.body),
        other => Err(invalid(format!(
            "unknown action {other:?}; expected one of {}",
            ACTIONS.map(|(t, _)| t).join(", ")
        ))),
    }
}
