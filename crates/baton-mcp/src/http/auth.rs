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
        .and_then(|value| value.trim().split_once(' '))
        // The scheme is case-insensitive (RFC 9110).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
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

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    /// The layer alone, around a handler that echoes the caller it was given.
    fn app(tokens: TokenTable) -> Router {
        Router::new()
            .route(
                "/",
                get(|request: Request| async move {
                    format!(
                        "{:?}",
                        request.extensions().get::<Caller>().map(|c| &c.owner)
                    )
                }),
            )
            .layer(from_fn_with_state(Arc::new(tokens), authenticate))
    }

    async fn call(app: Router, authorization: Option<&str>) -> (StatusCode, String) {
        let mut request = axum::http::Request::get("/");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = app
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_owner_of_a_valid_token_reaches_the_handler_and_others_get_401() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens");
        let token = super::super::tokens::add_token(&path, "alice").expect("token");
        let tokens = TokenTable::load(&path).expect("load");
        let bearer = format!("Bearer {token}");
        assert_eq!(
            call(app(tokens.clone()), Some(&bearer)).await,
            (StatusCode::OK, "Some(Some(\"alice\"))".to_owned())
        );
        for wrong in [None, Some("Bearer nope"), Some(token.as_str())] {
            let (status, body) = call(app(tokens.clone()), wrong).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
            assert!(!body.contains(&token));
        }
        // No tokens configured: everyone is a caller without an owner.
        assert_eq!(
            call(app(TokenTable::default()), None).await,
            (StatusCode::OK, "Some(None)".to_owned())
        );
    }
}
