use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which HTTP API a model provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WireApi {
    /// `POST {base_url}/responses` (OpenAI Responses API).
    #[default]
    Responses,
    /// `POST {base_url}/chat/completions` (any OpenAI-compatible server).
    Chat,
}

impl WireApi {
    pub const ALL: [&'static str; 2] = ["responses", "chat"];
}

// By hand rather than derived, for errors that say what was given (see `one_of`).
impl<'de> Deserialize<'de> for WireApi {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::one_of::deserialize(deserializer, &Self::ALL, |name| match name {
            "responses" => Some(Self::Responses),
            "chat" => Some(Self::Chat),
            _ => None,
        })
    }
}

/// A model provider as configured under `[model_providers.<id>]` in `config.toml`. Keys baton does
/// not read (Codex's `query_params`, `requires_openai_auth` …) are ignored.
///
/// `Debug` shows the names of `http_headers` but not their values, and `base_url` redacted
/// (see [`ModelProviderInfo::redacted_base_url`]): both often carry credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelProviderInfo {
    /// The key under `[model_providers]`; filled in by the config loader.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub base_url: String,
    /// The name of the environment variable holding the API key, read at request time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_key: Option<String>,
    #[serde(default)]
    pub wire_api: WireApi,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub http_headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout_ms: Option<u64>,
}

impl ModelProviderInfo {
    pub const DEFAULT_MAX_RETRIES: u32 = 4;
    pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_millis(300_000);

    pub fn max_retries(&self) -> u32 {
        self.request_max_retries
            .unwrap_or(Self::DEFAULT_MAX_RETRIES)
    }

    pub fn stream_idle_timeout(&self) -> Duration {
        self.stream_idle_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(Self::DEFAULT_STREAM_IDLE_TIMEOUT)
    }

    /// The name people see in messages: the configured name, else the id.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }

    /// `base_url` as messages may show it: `scheme://host:port/path`, without a
    /// `user:password@` part, a query string or a fragment, where keys hide.
    pub fn redacted_base_url(&self) -> String {
        redact_url(&self.base_url)
    }
}

// Written by hand: header values and the base URL may carry credentials.
impl fmt::Debug for ModelProviderInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelProviderInfo")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("base_url", &self.redacted_base_url())
            .field("env_key", &self.env_key)
            .field("wire_api", &self.wire_api)
            .field(
                "http_headers",
                &self.http_headers.keys().collect::<Vec<_>>(),
            )
            .field("request_max_retries", &self.request_max_retries)
            .field("stream_idle_timeout_ms", &self.stream_idle_timeout_ms)
            .finish()
    }
}

/// Works on text, not a parsed URL, because it must also redact the malformed URLs that
/// configuration errors report. Errs on the side of hiding: everything up to the last `@`
/// goes, even when a password held a `/`.
fn redact_url(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(base_url: &str) -> ModelProviderInfo {
        ModelProviderInfo {
            id: "corp".into(),
            name: String::new(),
            base_url: base_url.into(),
            env_key: Some("CORP_API_KEY".into()),
            wire_api: WireApi::Chat,
            http_headers: BTreeMap::from([
                (
                    "Authorization".to_owned(),
                    "Bearer s3cret-header".to_owned(),
                ),
                ("X-Org".to_owned(), "org-s3cret".to_owned()),
            ]),
            request_max_retries: None,
            stream_idle_timeout_ms: None,
        }
    }

    #[test]
    fn redacted_base_url_drops_credentials_query_and_fragment() {
        let cases = [
            ("https://api.example.com/v1", "https://api.example.com/v1"),
            ("http://localhost:11434/v1/", "http://localhost:11434/v1/"),
            (
                "https://user:s3cret@api.example.com:8443/v1?key=s3cret#s3cret",
                "https://api.example.com:8443/v1",
            ),
            (
                "https://api.example.com/v1?api-key=s3cret",
                "https://api.example.com/v1",
            ),
            // Malformed: a password with `/` in it, and no scheme at all.
            ("https://me:pa/s3cret@host/v1", "https://host/v1"),
            ("me:s3cret@localhost:11434", "localhost:11434"),
        ];
        for (raw, redacted) in cases {
            assert_eq!(provider(raw).redacted_base_url(), redacted, "{raw}");
        }
    }

    #[test]
    fn debug_shows_header_names_but_no_secrets() {
        let debug = format!(
            "{:?}",
            provider("https://user:s3cret@api.example.com/v1?key=s3cret")
        );
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("\"Authorization\""), "{debug}");
        assert!(debug.contains("\"X-Org\""), "{debug}");
        assert!(debug.contains("https://api.example.com/v1"), "{debug}");
        assert!(debug.contains("CORP_API_KEY"), "{debug}");
        let pretty = format!("{:#?}", provider("https://api.example.com/v1"));
        assert!(!pretty.contains("s3cret"), "{pretty}");
    }
}
