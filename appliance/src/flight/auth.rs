//! Who may call: bearer tokens from the config, checked in constant time
//! per call; the Handshake turns basic auth (a token's name and secret, as
//! pyarrow's `authenticate_basic_token` sends) into the bearer header.

use std::time::Duration;

use arrow_flight::{HandshakeRequest, HandshakeResponse};
use base64::Engine as _;
use bytes::Bytes;
use tonic::{Request, Response, Status, Streaming};

use super::{BoxStream, Shared};

/// A bearer token clients present: `authorization: Bearer <secret>`.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, <secret>)", self.name)
    }
}

/// `a == b` in time that depends on the length only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The token named by an `authorization` header (`None`: no header, or
/// one that is not text), checked; `anonymous` when none are configured.
/// The error says what was wrong, for an UNAUTHENTICATED / 401 reply.
pub fn bearer(tokens: &[Token], header: Option<&str>) -> Result<String, &'static str> {
    if tokens.is_empty() {
        return Ok("anonymous".into());
    }
    let header = header.ok_or(
        "no credentials: send the header 'authorization: Bearer <token>' (pyarrow: authenticate_basic_token first)",
    )?;
    let secret = header
        .strip_prefix("Bearer ")
        .ok_or("expected 'authorization: Bearer <token>'")?;
    token_by_secret(tokens, secret.trim().as_bytes())
        .ok_or("the bearer token is not one this server knows")
}

fn token_by_secret(tokens: &[Token], secret: &[u8]) -> Option<String> {
    let mut found = None;
    for t in tokens {
        if same_secret(t.secret.as_bytes(), secret) {
            found = Some(t.name.clone());
        }
    }
    found
}

impl Shared {
    /// The token a call presents, checked; `anonymous` when none are configured.
    pub(super) fn authorize<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let header = request.metadata().get("authorization");
        if header.is_some_and(|h| h.to_str().is_err()) {
            return Err(Status::unauthenticated(
                "the authorization header is not text",
            ));
        }
        bearer(&self.tokens, header.and_then(|h| h.to_str().ok())).map_err(Status::unauthenticated)
    }

    fn token_by_secret(&self, secret: &[u8]) -> Option<String> {
        token_by_secret(&self.tokens, secret)
    }
}

/// Basic auth (token name, secret) or a bearer header or a payload
/// holding the secret; the reply carries `authorization: Bearer …`.
pub(super) async fn handshake(
    shared: &Shared,
    request: Request<Streaming<HandshakeRequest>>,
) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let mut stream = request.into_inner();
    let payload = match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(Ok(Some(m))) => m.payload,
        _ => Bytes::new(),
    };
    let mut secret = None;
    if shared.tokens.is_empty() {
        secret = Some(String::new());
    } else if let Some(basic) = header.as_deref().and_then(|h| h.strip_prefix("Basic ")) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        if let Some((name, pass)) = decoded.split_once(':') {
            secret = shared
                .tokens
                .iter()
                .find(|t| t.name == name && same_secret(t.secret.as_bytes(), pass.as_bytes()))
                .map(|t| t.secret.clone());
        }
    } else if let Some(bearer) = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
        if shared.token_by_secret(bearer.trim().as_bytes()).is_some() {
            secret = Some(bearer.trim().to_string());
        }
    } else if !payload.is_empty() && shared.token_by_secret(&payload).is_some() {
        secret = String::from_utf8(payload.to_vec()).ok();
    }
    let Some(secret) = secret else {
        return Err(Status::unauthenticated(
            "handshake refused: expected basic auth with a token's name and secret, or a known bearer token",
        ));
    };
    let reply = HandshakeResponse {
        protocol_version: 0,
        payload: Bytes::from(secret.clone().into_bytes()),
    };
    let mut response: Response<BoxStream<HandshakeResponse>> =
        Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
    if !secret.is_empty() {
        let value = format!("Bearer {secret}")
            .parse()
            .map_err(|_| Status::internal("the token is not a valid header value"))?;
        response.metadata_mut().insert("authorization", value);
    }
    Ok(response)
}
