//! Per-thread arrival order over HTTP: a tower layer that reads a POST body (already capped
//! by the body-limit layer) and gives a `baton-reply` call its ticket in the thread's queue
//! in the order the requests arrived (see `crate::order`). Having the message in hand, it also
//! answers a stateless `initialize` itself (see `removed`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::{Metrics, removed};
use crate::order::{ArrivalOrder, reply_thread};

/// The middleware function; mount with `axum::middleware::from_fn_with_state(order, ...)`.
pub async fn take_tickets(
    State((order, metrics)): State<(Arc<ArrivalOrder>, Arc<Metrics>)>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return (StatusCode::BAD_REQUEST, "cannot read the request body\n").into_response();
        }
    };
    let message = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    if let Some(response) = message.as_ref().and_then(removed::stateless_initialize) {
        return response;
    }
    if let Some(message) = &message
        && message.get("method").and_then(|m| m.as_str()) == Some("tools/call")
        && let Some(params) = message.get("params")
        && let Some(tool) = params.get("name").and_then(|n| n.as_str())
    {
        metrics.tool_called(tool);
    }
    if let Some(message) = message
        && message.get("method").and_then(|m| m.as_str()) == Some("tools/call")
        && let Some(params) = message.get("params")
        && let Some(tool) = params.get("name").and_then(|n| n.as_str())
        && let Some(thread) =
            reply_thread(tool, params.get("arguments").and_then(|a| a.as_object()))
    {
        parts.extensions.insert(order.ticket(thread));
        tracing::info!(%thread, "baton-reply call queued in arrival order");
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
