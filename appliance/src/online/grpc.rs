//! V2 gRPC: `inference.GRPCInferenceService` (tonic, generated at build
//! time from `proto/inference.proto`). Inputs come as typed `contents` or
//! as `raw_input_contents`; outputs go back as `raw_output_contents`, as
//! Triton sends them (its clients and KServe's read both).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tonic::{Request, Response, Status};

use super::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::model_metadata_response::TensorMetadata;
use super::proto::{
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
    ServerReadyResponse,
};
use super::tensors::{Input, Values};
use super::{Online, V2Error};

pub(super) fn start(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    online: Arc<Online>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("online grpc address {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let limit = online.body_bytes_max;
    let service = GrpcInferenceServiceServer::new(Service { online })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let router = tonic::transport::Server::builder().add_service(service);
        tokio::spawn(async move {
            let served = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = shutdown.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!("the online gRPC endpoint stopped: {e}");
            }
        });
        anyhow::Ok(())
    })?;
    tracing::info!("online V2 gRPC on grpc://{bound}");
    Ok(bound)
}

struct Service {
    online: Arc<Online>,
}

impl Service {
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = request.metadata().get("authorization");
        if header.is_some_and(|h| h.to_str().is_err()) {
            return Err(Status::unauthenticated(
                "the authorization header is not text",
            ));
        }
        self.online
            .authorize(header.and_then(|h| h.to_str().ok()))
            .map_err(|e| e.grpc())
    }
}

/// The version a request names; empty is none.
fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

/// An input's elements from its typed contents.
fn values_of_contents(
    name: &str,
    datatype: &str,
    c: InferTensorContents,
) -> Result<Values, V2Error> {
    Ok(match datatype {
        "FP32" => Values::F32(c.fp32_contents),
        "FP64" => Values::F64(c.fp64_contents),
        "INT32" => Values::I32(c.int_contents),
        "INT64" => Values::I64(c.int64_contents),
        "BOOL" => Values::Bool(c.bool_contents),
        "BYTES" => Values::Bytes(c.bytes_contents),
        other => {
            return Err(V2Error::bad(format!(
                "input {name}: datatype {other:?} is not taken; expected FP32, FP64, INT32, INT64, BOOL or BYTES"
            )))
        }
    })
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.online.server_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let ready = self
            .online
            .ready(&r.name, version(&r.version))
            .map_err(|e| e.grpc())?;
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "roo".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let m = self
            .online
            .metadata(&r.name, version(&r.version))
            .map_err(|e| e.grpc())?;
        let tensors = |t: Vec<super::TensorMeta>| {
            t.into_iter()
                .map(|t| TensorMetadata {
                    name: t.name,
                    datatype: t.datatype.into(),
                    shape: t.shape,
                    parameters: Default::default(),
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
            parameters: Default::default(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let pipeline = self
            .online
            .versioned(&r.model_name, version(&r.model_version))
            .map_err(|e| e.grpc())?;
        let raw = r.raw_input_contents;
        if !raw.is_empty() && raw.len() != r.inputs.len() {
            return Err(V2Error::bad(format!(
                "{} raw_input_contents for {} inputs: expected one per input",
                raw.len(),
                r.inputs.len()
            ))
            .grpc());
        }
        let mut inputs = Vec::with_capacity(r.inputs.len());
        for (i, t) in r.inputs.into_iter().enumerate() {
            let values = match (raw.get(i), t.contents) {
                (Some(bytes), _) => Values::from_raw(&t.name, &t.datatype, bytes),
                (None, Some(c)) => values_of_contents(&t.name, &t.datatype, c),
                (None, None) => Err(V2Error::bad(format!(
                    "input {}: neither contents nor raw_input_contents",
                    t.name
                ))),
            }
            .map_err(|e| e.grpc())?;
            inputs.push(Input {
                name: t.name,
                shape: t.shape,
                values,
            });
        }
        let requested: Vec<String> = r.outputs.into_iter().map(|o| o.name).collect();
        let inferred = self
            .online
            .infer(pipeline, inputs, &requested)
            .await
            .map_err(|e| e.grpc())?;
        let mut raw_output_contents = Vec::with_capacity(inferred.outputs.len());
        let outputs = inferred
            .outputs
            .into_iter()
            .map(|o| {
                raw_output_contents.push(o.values.to_raw());
                InferOutputTensor {
                    name: o.name,
                    datatype: o.values.datatype().into(),
                    shape: o.shape,
                    parameters: Default::default(),
                    contents: None,
                }
            })
            .collect();
        Ok(Response::new(ModelInferResponse {
            model_name: r.model_name,
            model_version: inferred.model_version,
            id: r.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        }))
    }
}
