//! V2 REST (axum): health, server and model metadata, readiness, infer.
//! JSON bodies through serde; the binary tensor data extension (Triton's,
//! which `tritonclient.http` uses by default) for inputs and outputs: the
//! JSON header's length in `Inference-Header-Content-Length`, each binary
//! tensor's bytes after it in order, sized by `binary_data_size`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::tensors::{Input, Output, Values};
use super::{Metadata, Online, V2Error};
use crate::http::listener::BoundedListener;

/// The header naming the JSON part's length when binary tensors follow.
const HEADER_LENGTH: &str = "inference-header-content-length";

type Shared = State<Arc<Online>>;

pub(super) fn start(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    online: Arc<Online>,
    connections_max: usize,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("online http address {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let limit = online.body_bytes_max;
    let app = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { Json(serde_json::json!({"live": true})) }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_v))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_v))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_v))
        .fallback(|| async {
            error(&V2Error::NotFound(
                "not found; the V2 endpoints are /v2/health/live, /v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready and /v2/models/NAME/infer".into(),
            ))
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(online);
    runtime.block_on(async {
        let listener = BoundedListener::with_max(
            tokio::net::TcpListener::from_std(listener)?,
            connections_max,
        );
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = shutdown.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!("the online REST endpoint stopped: {e}");
            }
        });
        anyhow::Ok(())
    })?;
    tracing::info!("online V2 REST on http://{bound}/v2");
    Ok(bound)
}

/// V2's error reply: a status and `{"error": "…"}`.
fn error(e: &V2Error) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

fn authorize(online: &Online, headers: &HeaderMap) -> Result<(), V2Error> {
    let header = headers.get(header::AUTHORIZATION);
    if header.is_some_and(|h| h.to_str().is_err()) {
        return Err(V2Error::Unauthenticated(
            "the authorization header is not text".into(),
        ));
    }
    online.authorize(header.and_then(|h| h.to_str().ok()))
}

async fn server_metadata() -> Response {
    Json(serde_json::json!({
        "name": "roo",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
    .into_response()
}

async fn server_ready(State(online): Shared) -> Response {
    if online.server_ready() {
        Json(serde_json::json!({"ready": true})).into_response()
    } else {
        error(&V2Error::Unavailable(
            "a pipeline is stopping or has failed".into(),
        ))
    }
}

#[derive(Serialize)]
struct TensorMetaJson<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [i64],
}

fn metadata_json(m: &Metadata) -> Response {
    let tensors = |t: &[super::TensorMeta]| -> Vec<Value> {
        t.iter()
            .map(|t| {
                serde_json::to_value(TensorMetaJson {
                    name: &t.name,
                    datatype: t.datatype,
                    shape: &t.shape,
                })
                .expect("serialisable")
            })
            .collect()
    };
    Json(serde_json::json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
    }))
    .into_response()
}

async fn model_metadata(
    State(online): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    metadata(&online, &headers, &name, None)
}

async fn model_metadata_v(
    State(online): Shared,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    metadata(&online, &headers, &name, Some(&version))
}

fn metadata(online: &Online, headers: &HeaderMap, name: &str, version: Option<&str>) -> Response {
    match authorize(online, headers).and_then(|()| online.metadata(name, version)) {
        Ok(m) => metadata_json(&m),
        Err(e) => error(&e),
    }
}

async fn model_ready(
    State(online): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    ready(&online, &headers, &name, None)
}

async fn model_ready_v(
    State(online): Shared,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    ready(&online, &headers, &name, Some(&version))
}

fn ready(online: &Online, headers: &HeaderMap, name: &str, version: Option<&str>) -> Response {
    match authorize(online, headers).and_then(|()| online.ready(name, version)) {
        Ok(true) => Json(serde_json::json!({"name": name, "ready": true})).into_response(),
        Ok(false) => error(&V2Error::Unavailable(format!(
            "model {name:?} is not ready: its pipeline is stopping or has failed"
        ))),
        Err(e) => error(&e),
    }
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputOut<'a>>,
}

#[derive(Serialize)]
struct OutputOut<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataOut<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DataOut<'a> {
    Bool(&'a [bool]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
    Text(Vec<String>),
}

fn flag(parameters: &Option<Map<String, Value>>, name: &str) -> bool {
    parameters
        .as_ref()
        .and_then(|p| p.get(name))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

async fn infer(
    State(online): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    infer_any(&online, &headers, &name, None, body).await
}

async fn infer_v(
    State(online): Shared,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    infer_any(&online, &headers, &name, Some(&version), body).await
}

async fn infer_any(
    online: &Online,
    headers: &HeaderMap,
    name: &str,
    version: Option<&str>,
    body: Bytes,
) -> Response {
    match infer_body(online, headers, name, version, body).await {
        Ok(r) => r,
        Err(e) => error(&e),
    }
}

async fn infer_body(
    online: &Online,
    headers: &HeaderMap,
    name: &str,
    version: Option<&str>,
    body: Bytes,
) -> Result<Response, V2Error> {
    authorize(online, headers)?;
    // An unknown model is a 404 whatever the body holds.
    let pipeline = online.versioned(name, version)?;
    let json_len = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n <= body.len())
            .ok_or_else(|| {
                V2Error::bad(format!(
                    "Inference-Header-Content-Length {v:?}: expected the JSON part's length, at most the body's {} bytes",
                    body.len()
                ))
            })?,
    };
    let json = &body[..json_len];
    let request: InferRequest = serde_json::from_slice(json).map_err(|e| {
        let has = |word: &[u8]| json.windows(word.len()).any(|w| w == word);
        let hint = if has(b"NaN") || has(b"Infinity") {
            " (JSON has no NaN or Infinity: send a missing value as null, or use the binary tensor data extension)"
        } else {
            ""
        };
        V2Error::bad(format!(
            "the request body is not a V2 inference request: {e}{hint}"
        ))
    })?;
    let mut binary = &body[json_len..];
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for i in request.inputs {
        let size = i
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    V2Error::bad(format!(
                        "input {}: binary_data_size {v}: expected a byte count",
                        i.name
                    ))
                })
            })
            .transpose()?;
        let values = match (size, &i.data) {
            (Some(n), _) => {
                let n = n as usize;
                if n > binary.len() {
                    return Err(V2Error::bad(format!(
                        "input {}: binary_data_size {n}, but {} bytes of binary data are left",
                        i.name,
                        binary.len()
                    )));
                }
                let (this, rest) = binary.split_at(n);
                binary = rest;
                Values::from_raw(&i.name, &i.datatype, this)?
            }
            (None, Some(data)) => values_of_json(&i.name, &i.datatype, data)?,
            (None, None) => {
                return Err(V2Error::bad(format!(
                    "input {}: neither data nor parameters.binary_data_size",
                    i.name
                )))
            }
        };
        inputs.push(Input {
            name: i.name,
            shape: i.shape,
            values,
        });
    }
    let all_binary = flag(&request.parameters, "binary_data_output");
    let requested = request.outputs.unwrap_or_default();
    let names: Vec<String> = requested.iter().map(|o| o.name.clone()).collect();
    let inferred = online.infer(pipeline, inputs, &names).await?;
    let binary_out: Vec<bool> = inferred
        .outputs
        .iter()
        .map(|o| {
            all_binary
                || requested
                    .iter()
                    .find(|r| r.name == o.name)
                    .is_some_and(|r| flag(&r.parameters, "binary_data"))
        })
        .collect();
    Ok(reply(
        name,
        request.id,
        &inferred.model_version,
        &inferred.outputs,
        &binary_out,
    ))
}

/// The JSON reply, with binary outputs after it when asked for.
fn reply(
    name: &str,
    id: Option<String>,
    version: &str,
    outputs: &[Output],
    binary: &[bool],
) -> Response {
    let mut blobs = Vec::new();
    let outs = outputs
        .iter()
        .zip(binary)
        .map(|(o, &bin)| {
            if bin {
                let raw = o.values.to_raw();
                let size = raw.len();
                blobs.push(raw);
                OutputOut {
                    name: &o.name,
                    datatype: o.values.datatype(),
                    shape: &o.shape,
                    parameters: Some(BinarySize {
                        binary_data_size: size,
                    }),
                    data: None,
                }
            } else {
                OutputOut {
                    name: &o.name,
                    datatype: o.values.datatype(),
                    shape: &o.shape,
                    parameters: None,
                    data: Some(match &o.values {
                        Values::Bool(v) => DataOut::Bool(v),
                        Values::I32(v) => DataOut::I32(v),
                        Values::I64(v) => DataOut::I64(v),
                        Values::F32(v) => DataOut::F32(v),
                        Values::F64(v) => DataOut::F64(v),
                        Values::Bytes(v) => DataOut::Text(
                            v.iter()
                                .map(|b| String::from_utf8_lossy(b).into_owned())
                                .collect(),
                        ),
                    }),
                }
            }
        })
        .collect();
    let body = InferResponse {
        model_name: name,
        model_version: version.to_string(),
        id,
        outputs: outs,
    };
    let mut json = serde_json::to_vec(&body).expect("serialisable");
    if blobs.is_empty() {
        return ([(header::CONTENT_TYPE, "application/json")], json).into_response();
    }
    let json_len = json.len();
    for b in blobs {
        json.extend_from_slice(&b);
    }
    let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], json).into_response();
    r.headers_mut().insert(
        HEADER_LENGTH,
        HeaderValue::from_str(&json_len.to_string()).expect("digits"),
    );
    r
}

/// A JSON `data` value (flat or nested arrays, row-major) as `datatype`;
/// in FP32 and FP64 data, null is a missing value (NaN), as MLServer takes it.
fn values_of_json(name: &str, datatype: &str, data: &Value) -> Result<Values, V2Error> {
    let mut leaves = Vec::new();
    flatten(data, &mut leaves);
    let wrong = |i: usize, v: &Value, what: &str| {
        V2Error::bad(format!(
            "input {name} ({datatype}) element {i}: expected {what}, found {v}"
        ))
    };
    Ok(match datatype {
        "FP32" | "FP64" => {
            let mut out = Vec::with_capacity(leaves.len());
            for (i, v) in leaves.iter().enumerate() {
                // JSON has no NaN: null stands for a missing value.
                let x = if v.is_null() {
                    Some(f64::NAN)
                } else {
                    v.as_f64()
                };
                out.push(x.ok_or_else(|| wrong(i, v, "a number (or null: missing)"))?);
            }
            if datatype == "FP32" {
                Values::F32(out.into_iter().map(|x| x as f32).collect())
            } else {
                Values::F64(out)
            }
        }
        "INT32" | "INT64" => {
            let mut out = Vec::with_capacity(leaves.len());
            for (i, v) in leaves.iter().enumerate() {
                out.push(v.as_i64().ok_or_else(|| wrong(i, v, "an integer"))?);
            }
            if datatype == "INT32" {
                let mut narrow = Vec::with_capacity(out.len());
                for (i, x) in out.into_iter().enumerate() {
                    narrow.push(i32::try_from(x).map_err(|_| {
                        wrong(i, &Value::from(x), "an integer within INT32")
                    })?);
                }
                Values::I32(narrow)
            } else {
                Values::I64(out)
            }
        }
        "BOOL" => {
            let mut out = Vec::with_capacity(leaves.len());
            for (i, v) in leaves.iter().enumerate() {
                out.push(v.as_bool().ok_or_else(|| wrong(i, v, "true or false"))?);
            }
            Values::Bool(out)
        }
        "BYTES" => {
            let mut out = Vec::with_capacity(leaves.len());
            for (i, v) in leaves.iter().enumerate() {
                out.push(
                    v.as_str()
                        .ok_or_else(|| wrong(i, v, "a string"))?
                        .as_bytes()
                        .to_vec(),
                );
            }
            Values::Bytes(out)
        }
        other => {
            return Err(V2Error::bad(format!(
                "input {name}: datatype {other:?} is not taken; expected FP32, FP64, INT32, INT64, BOOL or BYTES"
            )))
        }
    })
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        leaf => out.push(leaf),
    }
}
