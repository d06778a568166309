use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which HTTP API a model provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireApi {
    /// `POST {base_url}/responses` (OpenAI Responses API).
    #[default]
    Responses,
    /// `POST {base_url}/chat/completions` (any OpenAI-compatible server).
    Chat,
}

/// A model provider as configured under `[model_providers.<id>]` (SPEC §2). Unknown keys are
/// an error so that a misplaced top-level key below a provider table is reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}
