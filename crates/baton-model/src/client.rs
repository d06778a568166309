//! The HTTP client: one request per attempt, SSE read to completion, retries with backoff.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use baton_protocol::{ModelProviderInfo, WireApi};
use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::chat::{self, ChatCollector};
use crate::responses::{self, ResponsesCollector};
use crate::sse::{SseEvent, SseParser};
use crate::stream::{StreamCollector, StreamFailure, StreamStep, code_and_message, shorten};
use crate::{ModelClient, ModelError, ModelRequest, ModelResponse};

/// Only for establishing the TCP/TLS connection; the response itself is guarded by the
/// provider's stream idle timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A server asking for a longer pause gets this much; the caller is waiting on us.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How much of a server's error message goes into an error.
const MAX_MESSAGE_CHARS: usize = 400;

/// A [`ModelClient`] that speaks a provider's wire API over HTTP.
pub struct HttpModelClient {
    provider: ModelProviderInfo,
    endpoint: Url,
    /// `scheme://host:port/path`: what errors show of the endpoint.
    endpoint_label: String,
    /// The provider's `http_headers`.
    headers: HeaderMap,
    http: reqwest::Client,
}

// Written by hand: the configured headers may carry credentials.
impl fmt::Debug for HttpModelClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpModelClient")
            .field("provider", &self.provider.display_name())
            .field("endpoint", &self.endpoint_label)
            .finish_non_exhaustive()
    }
}

impl HttpModelClient {
    /// Checks the provider's `base_url` and headers; the API key is read later, for each
    /// request.
    pub fn new(provider: ModelProviderInfo) -> Result<Self, ModelError> {
        let invalid = |problem: String| ModelError::InvalidProvider {
            provider: provider.display_name().to_owned(),
            base_url: provider.redacted_base_url(),
            problem,
        };
        let base = Url::parse(provider.base_url.trim())
            .map_err(|error| invalid(format!("base_url is not a URL: {error}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(
                "base_url must start with http:// or https://".to_owned(),
            ));
        }
        let wire_path = match provider.wire_api {
            WireApi::Responses => responses::PATH,
            WireApi::Chat => chat::PATH,
        };
        let mut endpoint = base.clone();
        endpoint.set_path(&format!(
            "{}/{wire_path}",
            base.path().trim_end_matches('/')
        ));

        let mut headers = HeaderMap::new();
        for (name, value) in &provider.http_headers {
            let header_name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("http_headers: `{name}` is not a header name")))?;
            let mut header_value = HeaderValue::from_str(value).map_err(|_| {
                invalid(format!(
                    "http_headers: the value of `{name}` cannot go in an HTTP header"
                ))
            })?;
            header_value.set_sensitive(true);
            headers.insert(header_name, header_value);
        }

        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        // A proxy configured for the outside world must not swallow a local model server.
        if is_loopback(&endpoint) {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|error| invalid(format!("cannot set up HTTP: {}", root_cause(&error))))?;

        Ok(Self {
            endpoint_label: endpoint_label(&endpoint),
            provider,
            endpoint,
            headers,
            http,
        })
    }

    pub fn provider(&self) -> &ModelProviderInfo {
        &self.provider
    }

    /// The endpoint as errors show it: `scheme://host:port/path`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint_label
    }

    async fn attempt(&self, body: &Value) -> Result<ModelResponse, AttemptFailure> {
        let api_key = self.api_key().map_err(AttemptFailure::fatal)?;
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, "text/event-stream")
            .json(body);
        if let Some(api_key) = &api_key {
            let header = api_key.bearer_header().ok_or_else(|| {
                AttemptFailure::fatal(ModelError::InvalidProvider {
                    provider: self.provider.display_name().to_owned(),
                    base_url: self.provider.redacted_base_url(),
                    problem: format!(
                        "the API key in {} has characters that cannot go in an HTTP header",
                        api_key.env_key
                    ),
                })
            })?;
            request = request.header(AUTHORIZATION, header);
        }

        let idle = self.provider.stream_idle_timeout();
        let response = match tokio::time::timeout(idle, request.send()).await {
            Err(_) => {
                return Err(AttemptFailure::retryable(self.interrupted(format!(
                    "the server sent no answer within {}",
                    describe(idle)
                ))));
            }
            Ok(Err(error)) => return Err(AttemptFailure::retryable(self.send_error(&error))),
            Ok(Ok(response)) => response,
        };
        if !response.status().is_success() {
            return Err(self.status_failure(response, api_key.as_ref()).await);
        }
        match self.provider.wire_api {
            WireApi::Responses => {
                self.read_stream(response, ResponsesCollector::default(), api_key.as_ref())
                    .await
            }
            WireApi::Chat => {
                self.read_stream(response, ChatCollector::default(), api_key.as_ref())
                    .await
            }
        }
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
        mut collector: impl StreamCollector,
        api_key: Option<&ApiKey>,
    ) -> Result<ModelResponse, AttemptFailure> {
        let idle = self.provider.stream_idle_timeout();
        let mut parser = SseParser::default();
        let mut body = response.bytes_stream();
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Err(_) => {
                    return Err(AttemptFailure::retryable(self.interrupted(format!(
                        "the response stream was idle for {}",
                        describe(idle)
                    ))));
                }
                Ok(Some(Err(error))) => {
                    return Err(AttemptFailure::retryable(self.interrupted(format!(
                        "the response stream broke off: {}",
                        root_cause(&error)
                    ))));
                }
                Ok(Some(Ok(chunk))) => Some(chunk),
                Ok(None) => None,
            };
            let events = match &chunk {
                Some(chunk) => parser.feed(chunk).map_err(|error| {
                    // The same answer would only grow past the cap again.
                    AttemptFailure::fatal(ModelError::Protocol {
                        provider: self.provider.display_name().to_owned(),
                        url: self.endpoint_label.clone(),
                        problem: error.to_string(),
                    })
                })?,
                None => parser.finish().into_iter().collect(),
            };
            for event in &events {
                if self.on_event(&mut collector, event, api_key)? == StreamStep::Complete {
                    return Ok(collector.finish());
                }
            }
            if chunk.is_none() {
                break;
            }
        }
        if collector.complete_at_end_of_stream() {
            return Ok(collector.finish());
        }
        Err(AttemptFailure::retryable(self.interrupted(
            "the response stream ended before the response was complete".to_owned(),
        )))
    }

    fn on_event(
        &self,
        collector: &mut impl StreamCollector,
        event: &SseEvent,
        api_key: Option<&ApiKey>,
    ) -> Result<StreamStep, AttemptFailure> {
        collector.on_event(event).map_err(|failure| match failure {
            StreamFailure::Failed {
                code,
                message,
                retryable,
            } => {
                let error = ModelError::ResponseFailed {
                    provider: self.provider.display_name().to_owned(),
                    url: self.endpoint_label.clone(),
                    code,
                    message: server_message(&message, api_key),
                };
                if retryable {
                    AttemptFailure::retryable(error)
                } else {
                    AttemptFailure::fatal(error)
                }
            }
            StreamFailure::Unreadable(problem) => AttemptFailure::fatal(ModelError::Protocol {
                provider: self.provider.display_name().to_owned(),
                url: self.endpoint_label.clone(),
                problem: server_message(&problem, api_key),
            }),
        })
    }

    async fn status_failure(
        &self,
        response: reqwest::Response,
        api_key: Option<&ApiKey>,
    ) -> AttemptFailure {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let idle = self.provider.stream_idle_timeout();
        let text = match tokio::time::timeout(idle, response.bytes()).await {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => String::new(),
        };
        let (code, message) = error_details(&text);
        // An exhausted quota is also a 429, but waiting does not refill it.
        let retryable = match status {
            StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT => true,
            StatusCode::TOO_MANY_REQUESTS => code.as_deref() != Some("insufficient_quota"),
            status => status.is_server_error(),
        };
        let error = ModelError::Http {
            provider: self.provider.display_name().to_owned(),
            url: self.endpoint_label.clone(),
            status: status.as_u16(),
            code,
            message: message.map(|message| server_message(&message, api_key)),
            api_key_env: api_key.map(|key| key.env_key.clone()),
        };
        if retryable {
            AttemptFailure {
                error: Box::new(error),
                retry: Retry::After(retry_after),
            }
        } else {
            AttemptFailure::fatal(error)
        }
    }

    fn api_key(&self) -> Result<Option<ApiKey>, ModelError> {
        let Some(env_key) = self.provider.env_key.as_deref().filter(|k| !k.is_empty()) else {
            return Ok(None);
        };
        match std::env::var(env_key) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(ApiKey {
                env_key: env_key.to_owned(),
                value: value.trim().to_owned(),
            })),
            _ => Err(ModelError::MissingApiKey {
                provider: self.provider.display_name().to_owned(),
                url: self.endpoint_label.clone(),
                env_key: env_key.to_owned(),
            }),
        }
    }

    fn send_error(&self, error: &reqwest::Error) -> ModelError {
        // Only the innermost cause is shown: reqwest's own message repeats the full URL.
        if error.is_connect() {
            ModelError::Unreachable {
                provider: self.provider.display_name().to_owned(),
                url: self.endpoint_label.clone(),
                reason: root_cause(error),
            }
        } else {
            self.interrupted(format!("the request failed: {}", root_cause(error)))
        }
    }

    fn interrupted(&self, problem: String) -> ModelError {
        ModelError::Interrupted {
            provider: self.provider.display_name().to_owned(),
            url: self.endpoint_label.clone(),
            problem,
        }
    }
}

#[async_trait::async_trait]
impl ModelClient for HttpModelClient {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let body = match self.provider.wire_api {
            WireApi::Responses => responses::request_body(request),
            WireApi::Chat => chat::request_body(request),
        };
        let max_retries = self.provider.max_retries();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.attempt(&body).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            let Retry::After(requested_delay) = failure.retry else {
                return Err(*failure.error);
            };
            if attempts > max_retries {
                return Err(if attempts == 1 {
                    *failure.error
                } else {
                    ModelError::RetriesExhausted {
                        attempts,
                        last: failure.error,
                    }
                });
            }
            let delay = requested_delay.unwrap_or_else(|| backoff(attempts));
            tracing::warn!(
                "{}; retry {attempts} of {max_retries} in {}",
                failure.error,
                describe(delay)
            );
            tokio::time::sleep(delay).await;
        }
    }
}

struct AttemptFailure {
    /// Boxed: `ModelError` is large, and this travels up through every stream event.
    error: Box<ModelError>,
    retry: Retry,
}

enum Retry {
    No,
    /// After the delay the server asked for, else after the backoff.
    After(Option<Duration>),
}

impl AttemptFailure {
    fn fatal(error: ModelError) -> Self {
        Self {
            error: Box::new(error),
            retry: Retry::No,
        }
    }

    fn retryable(error: ModelError) -> Self {
        Self {
            error: Box::new(error),
            retry: Retry::After(None),
        }
    }
}

/// The key read from the environment for one request. No `Debug`, no `Display`: it only
/// ever leaves as a header value marked sensitive.
struct ApiKey {
    env_key: String,
    value: String,
}

impl ApiKey {
    fn bearer_header(&self) -> Option<HeaderValue> {
        let mut header = HeaderValue::from_str(&format!("Bearer {}", self.value)).ok()?;
        header.set_sensitive(true);
        Some(header)
    }
}

/// A server's message as errors show it: one line, shortened, and without the key should
/// the server echo it back.
fn server_message(message: &str, api_key: Option<&ApiKey>) -> String {
    let message = match api_key {
        Some(key) => message.replace(&key.value, "[redacted]"),
        None => message.to_owned(),
    };
    shorten(&message, MAX_MESSAGE_CHARS)
}

/// `(code, message)` from an error body: OpenAI's `{"error": {"code", "message"}}`, a bare
/// `{"error": "…"}`, FastAPI's `{"detail": …}`, or plain text.
fn error_details(body: &str) -> (Option<String>, Option<String>) {
    let Ok(json) = serde_json::from_str::<Value>(body) else {
        return (None, Some(body.to_owned()).filter(|b| !b.trim().is_empty()));
    };
    let (code, message) = code_and_message(json.get("error").unwrap_or(&json));
    (code, Some(message))
}

/// Exponential from [`FIRST_BACKOFF`], with ±20 % jitter so that clients that failed together
/// do not retry together.
fn backoff(attempt: u32) -> Duration {
    let exponential = FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    exponential
        .min(MAX_BACKOFF)
        .mul_f64(rand::random_range(0.8..1.2))
}

/// `Retry-After` in seconds (the HTTP-date form is rare from model servers and ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // Capped before converting: a huge value would not fit in a Duration.
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64())))
}

fn endpoint_label(url: &Url) -> String {
    format!(
        "{}://{}:{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default(),
        url.path()
    )
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn describe(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keeps_the_base_path_and_shows_the_port() {
        let provider = |base_url: &str, wire_api| ModelProviderInfo {
            id: "p".into(),
            name: String::new(),
            base_url: base_url.into(),
            env_key: None,
            wire_api,
            http_headers: Default::default(),
            request_max_retries: None,
            stream_idle_timeout_ms: None,
        };
        let client =
            HttpModelClient::new(provider("https://api.example.com/v1/", WireApi::Responses))
                .expect("client");
        assert_eq!(
            client.endpoint(),
            "https://api.example.com:443/v1/responses"
        );
        let client = HttpModelClient::new(provider("http://localhost:11434/v1", WireApi::Chat))
            .expect("client");
        assert_eq!(
            client.endpoint(),
            "http://localhost:11434/v1/chat/completions"
        );
        let error = HttpModelClient::new(provider("localhost:11434", WireApi::Chat))
            .expect_err("no scheme");
        assert!(error.to_string().contains("http://"), "{error}");
    }

    #[test]
    fn error_details_reads_common_error_bodies() {
        assert_eq!(
            error_details(r#"{"error":{"message":"bad key","code":"invalid_api_key"}}"#),
            (Some("invalid_api_key".into()), Some("bad key".into()))
        );
        assert_eq!(
            error_details(r#"{"error":"model not found"}"#),
            (None, Some("model not found".into()))
        );
        assert_eq!(
            error_details(r#"{"detail":"Not Found"}"#),
            (None, Some("Not Found".into()))
        );
        assert_eq!(
            error_details("Bad\n gateway"),
            (None, Some("Bad\n gateway".into()))
        );
        assert_eq!(error_details(""), (None, None));
    }

    #[test]
    fn shorten_makes_one_bounded_line() {
        assert_eq!(shorten("a\n  b", 10), "a b");
        assert_eq!(shorten(&"é".repeat(20), 5), format!("{}…", "é".repeat(5)));
    }

    #[test]
    fn retry_after_is_capped_even_when_huge() {
        let header = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).expect("header"));
            headers
        };
        assert_eq!(retry_after(&header("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&header("1e30")), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after(&header(&u64::MAX.to_string())),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after(&header("-1")), None);
        assert_eq!(retry_after(&header("inf")), None);
    }

    #[test]
    fn invalid_provider_errors_redact_the_base_url() {
        let provider = ModelProviderInfo {
            id: "p".into(),
            name: String::new(),
            base_url: "ftp://user:s3cret@example.com/v1?key=s3cret".into(),
            env_key: None,
            wire_api: WireApi::Chat,
            http_headers: Default::default(),
            request_max_retries: None,
            stream_idle_timeout_ms: None,
        };
        let error = HttpModelClient::new(provider).expect_err("not http");
        let message = error.to_string();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(!format!("{error:?}").contains("s3cret"), "{error:?}");
        assert!(message.contains("ftp://example.com/v1"), "{message}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(240));
        assert!(backoff(3) >= Duration::from_millis(640));
        assert!(backoff(30) <= MAX_BACKOFF.mul_f64(1.2));
    }
}
