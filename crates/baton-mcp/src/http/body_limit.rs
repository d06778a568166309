//! The request body limit: a tower layer that answers 413 to a body over `max_request_bytes`.
//!
//! The body is read here (the next layer needs it whole anyway). A refused body is still read
//! and discarded, up to a bound, so that a client that sends it without waiting gets the 413
//! instead of a broken pipe; a client that asked `Expect: 100-continue` is refused from the
//! headers, before it sends anything.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

/// Beyond this many bytes a refused body is not read any further: the connection is closed.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// The middleware function; mount with `axum::middleware::from_fn_with_state(max_bytes, ...)`.
pub async fn limit_body(State(max_bytes): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, mut body) = request.into_parts();
    if let Some(declared) = declared
        && declared > max_bytes as u64
    {
        if !expects_continue && declared <= DRAIN_LIMIT as u64 {
            drain(body, DRAIN_LIMIT).await;
        }
        return too_large(max_bytes);
    }
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (StatusCode::BAD_REQUEST, "cannot read the request body\n").into_response();
        };
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > max_bytes {
                drain(body, DRAIN_LIMIT.saturating_sub(bytes.len())).await;
                return too_large(max_bytes);
            }
            bytes.extend_from_slice(&data);
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Reads and discards up to `limit` more bytes.
async fn drain(mut body: Body, limit: usize) {
    let mut seen = 0usize;
    while seen < limit {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

fn too_large(max_bytes: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is over {max_bytes} bytes (max_request_bytes under [server])\n"),
    )
        .into_response()
}
