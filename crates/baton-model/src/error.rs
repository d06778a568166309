/// Why a model request failed. Every message names the provider and the endpoint
/// (`scheme://host:port/path`) and never contains the API key.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model provider {provider} is misconfigured ({base_url}): {problem}; fix its base_url in config.toml"
    )]
    InvalidProvider {
        provider: String,
        /// Redacted: no `user:password@`, query string or fragment (see
        /// [`ModelProviderInfo::redacted_base_url`](baton_protocol::ModelProviderInfo::redacted_base_url)).
        base_url: String,
        problem: String,
    },

    #[error(
        "model provider {provider} ({url}) needs an API key: set the environment variable {env_key}"
    )]
    MissingApiKey {
        provider: String,
        url: String,
        env_key: String,
    },

    #[error(
        "model provider {provider}: cannot reach the model server at {url} ({reason}); \
         check that the server is running and that base_url is right"
    )]
    Unreachable {
        provider: String,
        url: String,
        reason: String,
    },

    #[error(
        "model provider {provider} at {url} answered HTTP {status}{}{}",
        http_detail(*.status, .message.as_deref()),
        key_hint(*.status, .api_key_env.as_deref())
    )]
    Http {
        provider: String,
        url: String,
        status: u16,
        /// The `error.code` of an OpenAI-style error body.
        code: Option<String>,
        /// The server's error message, on one line and shortened.
        message: Option<String>,
        /// The name (never the value) of the environment variable the API key sent came from;
        /// a 401 or 403 message tells the user to check it.
        api_key_env: Option<String>,
    },

    /// The exchange broke off: the connection failed mid-way, the stream ended before the
    /// response was complete, or it went idle.
    #[error("model provider {provider} at {url}: {problem}")]
    Interrupted {
        provider: String,
        url: String,
        problem: String,
    },

    /// The server reported in the stream that the response failed.
    #[error("model provider {provider} at {url}: the response failed{}: {message}", code_detail(.code.as_deref()))]
    ResponseFailed {
        provider: String,
        url: String,
        code: Option<String>,
        message: String,
    },

    /// The stream carried something that is not the wire format.
    #[error("model provider {provider} at {url} sent an unreadable stream: {problem}")]
    Protocol {
        provider: String,
        url: String,
        problem: String,
    },

    #[error("{last} (gave up after {attempts} attempts)")]
    RetriesExhausted {
        attempts: u32,
        last: Box<ModelError>,
    },
}

impl ModelError {
    /// Whether the provider's configuration is at fault (a `base_url` that is not a URL), as
    /// opposed to the server or the network: the user must fix their config.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, ModelError::InvalidProvider { .. })
    }

    /// Whether the request was refused because the conversation no longer fits the model's
    /// context window (the caller may compact the history and try again).
    pub fn is_context_length_exceeded(&self) -> bool {
        match self {
            ModelError::ResponseFailed { code, message, .. } => {
                code.as_deref() == Some(CONTEXT_LENGTH_EXCEEDED) || mentions_context_length(message)
            }
            ModelError::Http {
                status,
                code,
                message,
                ..
            } => {
                code.as_deref() == Some(CONTEXT_LENGTH_EXCEEDED)
                    // Servers without OpenAI's codes (vLLM, llama.cpp…) only say it in words.
                    || (*status == 400 && message.as_deref().is_some_and(mentions_context_length))
            }
            ModelError::RetriesExhausted { last, .. } => last.is_context_length_exceeded(),
            _ => false,
        }
    }

    /// The HTTP status the server answered with, if it answered with an error status.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ModelError::Http { status, .. } => Some(*status),
            ModelError::RetriesExhausted { last, .. } => last.http_status(),
            _ => None,
        }
    }
}

const CONTEXT_LENGTH_EXCEEDED: &str = "context_length_exceeded";

fn mentions_context_length(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains(CONTEXT_LENGTH_EXCEEDED)
        || message.contains("maximum context length")
        || message.contains("context window")
}

fn http_detail(status: u16, message: Option<&str>) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .map(|reason| format!(" {reason}"))
        .unwrap_or_default();
    match message {
        Some(message) => format!("{reason}: {message}"),
        None => reason,
    }
}

/// Where to look when the server refused the key.
fn key_hint(status: u16, api_key_env: Option<&str>) -> String {
    match api_key_env {
        Some(env_key) if status == 401 || status == 403 => {
            format!("; check the API key in ${env_key}")
        }
        _ => String::new(),
    }
}

fn code_detail(code: Option<&str>) -> String {
    code.map(|code| format!(" ({code})")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, api_key_env: Option<&str>) -> ModelError {
        ModelError::Http {
            provider: "OpenAI".into(),
            url: "https://api.openai.com:443/v1/responses".into(),
            status,
            code: None,
            message: Some("Incorrect API key provided".into()),
            api_key_env: api_key_env.map(str::to_owned),
        }
    }

    #[test]
    fn refused_keys_name_their_variable() {
        assert_eq!(
            http(401, Some("OPENAI_API_KEY")).to_string(),
            "model provider OpenAI at https://api.openai.com:443/v1/responses answered HTTP 401 \
             Unauthorized: Incorrect API key provided; check the API key in $OPENAI_API_KEY"
        );
        assert!(
            http(403, Some("OPENAI_API_KEY"))
                .to_string()
                .ends_with("; check the API key in $OPENAI_API_KEY")
        );
        // Other statuses, or no key configured: no hint.
        assert!(!http(429, Some("OPENAI_API_KEY")).to_string().contains('$'));
        assert!(!http(401, None).to_string().contains("check the API key"));
    }
}
