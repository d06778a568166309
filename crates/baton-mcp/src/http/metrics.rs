//! `GET /metrics`: Prometheus text, from `prometheus-client`, behind the same Host/Origin and
//! token layers as `/mcp`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use baton_core::ErrorKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Tool {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Operation {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelResult {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Status {
    status: String,
}

/// The server's counters; one per process, shared by the layers and the handler.
pub(crate) struct Metrics {
    registry: Registry,
    turns_running: Gauge,
    turns_finished: Family<Outcome, Counter>,
    tool_calls: Family<Tool, Counter>,
    http_requests: Family<Status, Counter>,
    model_seconds: Family<ModelResult, Histogram>,
    store_seconds: Family<Operation, Histogram>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("baton");
        let turns_running = Gauge::default();
        let turns_finished = Family::<Outcome, Counter>::default();
        let tool_calls = Family::<Tool, Counter>::default();
        let http_requests = Family::<Status, Counter>::default();
        // Model requests: 10 ms to ~3 min; store operations: 10 µs to ~5 s.
        let model_seconds = Family::<ModelResult, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.01, 2.0, 15))) as fn() -> Histogram,
        );
        let store_seconds = Family::<Operation, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.00001, 3.0, 13))) as fn() -> Histogram,
        );
        registry.register(
            "model_request_seconds",
            "Latency of model requests (the whole streamed answer), by result (ok, error)",
            model_seconds.clone(),
        );
        registry.register(
            "store_operation_seconds",
            "Latency of session store operations, by operation",
            store_seconds.clone(),
        );
        registry.register("turns_running", "Turns running now", turns_running.clone());
        registry.register(
            "turns_finished",
            "Turns finished, by outcome (completed, failed, cancelled, aborted)",
            turns_finished.clone(),
        );
        registry.register(
            "tool_calls",
            "MCP tools/call requests, by tool",
            tool_calls.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by status",
            http_requests.clone(),
        );
        Self {
            registry,
            turns_running,
            turns_finished,
            tool_calls,
            http_requests,
            model_seconds,
            store_seconds,
        }
    }

    pub fn model_request(&self, elapsed: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.model_seconds
            .get_or_create(&ModelResult {
                result: result.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn store_operation(&self, operation: &'static str, elapsed: Duration) {
        self.store_seconds
            .get_or_create(&Operation {
                operation: operation.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn tool_called(&self, tool: &str) {
        self.tool_calls
            .get_or_create(&Tool {
                tool: tool.to_owned(),
            })
            .inc();
    }

    /// Counts a running turn until the guard is dropped.
    pub fn turn_started(self: &Arc<Self>) -> RunningTurn {
        self.turns_running.inc();
        RunningTurn {
            metrics: self.clone(),
        }
    }

    /// `error`: the kind of the turn's error, `None` when it completed; `aborted`: the
    /// server's shutdown grace ended it.
    pub fn turn_finished(&self, error: Option<ErrorKind>, aborted: bool) {
        let outcome = match error {
            None => "completed",
            Some(ErrorKind::Cancelled) if aborted => "aborted",
            Some(ErrorKind::Cancelled) => "cancelled",
            Some(_) => "failed",
        };
        self.turns_finished
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Decrements the running-turns gauge when dropped.
pub(crate) struct RunningTurn {
    metrics: Arc<Metrics>,
}

impl Drop for RunningTurn {
    fn drop(&mut self) {
        self.metrics.turns_running.dec();
    }
}

/// The `/metrics` handler.
pub async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

/// Counts every answered HTTP request by status (outermost layer, so 401/403/413 count too).
pub async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    metrics
        .http_requests
        .get_or_create(&Status {
            status: response.status().as_u16().to_string(),
        })
        .inc();
    response
}
