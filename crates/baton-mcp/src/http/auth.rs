//! Bearer-token authentication: a tower layer that answers 401 to a request without a valid
//! token and tells the MCP handler who the caller is.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::tokens::TokenTable;

/// Who made a request over HTTP; put into the request's extensions, where the tool handlers
/// find it (rmcp hands them the request's `http::request::Parts`).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's owner; `None` when the server has no tokens (loopback only).
    pub owner: Option<String>,
}

/// The middleware function; mount with `axum::middleware::from_fn_with_state(table, ...)`.
pub async fn authenticate(
    State(tokens): State<Arc<TokenTable>>,
    mut request: Request,
    next: Next,
) -> Response {
    if tokens.is_empty() {
        request.extensions_mut().insert(Caller { owner: None });
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    // The token itself never reaches a log or an error message.
    match presented.and_then(|token| tokens.owner_of(token)) {
        Some(owner) => {
            let owner = owner.to_owned();
            request
                .extensions_mut()
                .insert(Caller { owner: Some(owner) });
            next.run(request).await
        }
        None => unauthorized(),
    }
}

fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required: send `Authorization: Bearer <token>` (create one with `baton server add-token OWNER`)\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"baton\""),
    );
    response
}
