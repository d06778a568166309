//! Binds each 2025-11-25 MCP session (`Mcp-Session-Id`) to the token owner that created it.
//!
//! rmcp's session manager knows session ids, not callers: without this layer anyone holding a
//! valid token and someone else's session id could answer that session's approval requests,
//! cancel its calls or delete it. A request that names a session created by another owner
//! (or a session this server never handed out) gets the same 404 as an unknown session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::Caller;

const SESSION_HEADER: &str = "mcp-session-id";

/// The owner (`None`: a server without tokens) of every live session.
#[derive(Debug, Default)]
pub struct SessionOwners {
    owners: Mutex<HashMap<String, Option<String>>>,
}

impl SessionOwners {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.owners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The middleware function; mount inside the authentication layer (it reads the [`Caller`]).
pub async fn bind_sessions(
    State(sessions): State<Arc<SessionOwners>>,
    request: Request,
    next: Next,
) -> Response {
    let caller = request
        .extensions()
        .get::<Caller>()
        .and_then(|caller| caller.owner.clone());
    let presented = request
        .headers()
        .get(SESSION_HEADER)
        .map(|value| value.to_str().unwrap_or_default().to_owned());
    if let Some(id) = &presented {
        let same_owner = sessions
            .lock()
            .get(id)
            .is_some_and(|owner| *owner == caller);
        if !same_owner {
            return unknown_session();
        }
    }
    let deleting = request.method() == Method::DELETE;
    let response = next.run(request).await;
    match presented {
        None => {
            if let Some(created) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|value| value.to_str().ok())
            {
                sessions.lock().insert(created.to_owned(), caller);
            }
        }
        Some(id) if deleting && response.status().is_success() => {
            sessions.lock().remove(&id);
        }
        Some(_) => {}
    }
    response
}

fn unknown_session() -> Response {
    (
        StatusCode::NOT_FOUND,
        "session not found: start a new one with `initialize`\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::middleware::{from_fn, from_fn_with_state};
    use axum::routing::any;
    use tower::ServiceExt;

    /// A stand-in for rmcp: hands out session `s1` to a request without one, accepts any other.
    fn app(sessions: Arc<SessionOwners>) -> Router {
        Router::new()
            .route(
                "/mcp",
                any(|request: Request| async move {
                    if request.headers().contains_key(SESSION_HEADER) {
                        StatusCode::OK.into_response()
                    } else {
                        ([(SESSION_HEADER, "s1")], StatusCode::OK).into_response()
                    }
                }),
            )
            .layer(from_fn_with_state(sessions, bind_sessions))
            .layer(from_fn(|mut request: Request, next: Next| async move {
                let owner = request
                    .headers()
                    .get("x-owner")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                request.extensions_mut().insert(Caller { owner });
                next.run(request).await
            }))
    }

    async fn status(
        app: &Router,
        method: Method,
        owner: &str,
        session: Option<&str>,
    ) -> StatusCode {
        let mut request = Request::builder()
            .method(method)
            .uri("/mcp")
            .header("x-owner", owner);
        if let Some(session) = session {
            request = request.header(SESSION_HEADER, session);
        }
        let request = request.body(Body::empty()).expect("request");
        app.clone()
            .oneshot(request)
            .await
            .expect("response")
            .status()
    }

    #[tokio::test]
    async fn a_session_answers_only_its_creator() {
        let app = app(Arc::new(SessionOwners::default()));
        assert_eq!(
            status(&app, Method::POST, "alice", None).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, Method::POST, "alice", Some("s1")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, Method::POST, "bob", Some("s1")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(&app, Method::DELETE, "bob", Some("s1")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(&app, Method::POST, "alice", Some("never-issued")).await,
            StatusCode::NOT_FOUND
        );
        // Alice's session survived Bob's attempts; her own DELETE ends it.
        assert_eq!(
            status(&app, Method::GET, "alice", Some("s1")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, Method::DELETE, "alice", Some("s1")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, Method::POST, "alice", Some("s1")).await,
            StatusCode::NOT_FOUND
        );
    }
}
