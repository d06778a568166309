//! Loads baton's configuration: `$BATON_HOME/config.toml`, the selected profile, and the
//! overrides given on the command line (`-c key=value`, `--model`, `--profile`) or in an MCP
//! call, into one resolved [`Config`].
//!
//! Precedence, lowest first: built-in defaults, `config.toml` top level, the selected profile,
//! `-c` / MCP `config` overrides, then the explicit flags (`--model`, the `sandbox` argument …).

mod duration;
mod overrides;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_protocol::{
    ApprovalPolicy, ModelProviderInfo, SandboxMode, SandboxPolicy, ShellEnvironmentPolicy, WireApi,
};
use serde::{Deserialize, Serialize};

pub use overrides::{parse_cli_override, set_path};

/// The file name inside `BATON_HOME`.
pub const CONFIG_FILE_NAME: &str = "config.toml";
/// Used when neither the config nor a flag names a model.
pub const DEFAULT_MODEL: &str = "gpt-5.1-codex";
/// The environment variable that selects the session store (`files` or a PostgreSQL URL,
/// which may hold the database's password).
pub const STORE_ENV: &str = "BATON_STORE";
const DEFAULT_IDLE_THREAD_TTL: Duration = Duration::from_secs(30 * 60);
/// As Codex: 32 KiB of AGENTS.md text at most.
const DEFAULT_PROJECT_DOC_MAX_BYTES: usize = 32 * 1024;

/// Why the configuration could not be loaded. Each message names the file (and line) or the
/// override at fault, so a person can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config in {path} line {line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("invalid config override `{key}`: {message}")]
    Override { key: String, message: String },
    #[error("profile `{name}` is not defined in {path}; defined profiles: {known}")]
    UnknownProfile {
        name: String,
        path: PathBuf,
        known: String,
    },
    #[error(
        "model provider `{id}` is not defined; built-in providers are openai and ollama, add others under [model_providers.{id}] in {path}"
    )]
    UnknownProvider { id: String, path: PathBuf },
    #[error("cannot find the home directory; set BATON_HOME")]
    NoHome,
}

/// `[sandbox_workspace_write]`, as in Codex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxWorkspaceWrite {
    #[serde(default)]
    pub writable_roots: Vec<PathBuf>,
    #[serde(default)]
    pub network_access: bool,
    /// Unix socket paths commands may connect to with `network_access = false`; any entry
    /// allows `AF_UNIX` sockets (the kernel cannot filter them by path).
    #[serde(default)]
    pub allow_unix_sockets: Vec<PathBuf>,
}

/// `[server]`: how `baton mcp-server --listen` serves a team over HTTP. Read once when the
/// server starts; a per-call `config` override cannot loosen it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerToml {
    pub tokens_file: Option<PathBuf>,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub workspace_roots: Option<Vec<PathBuf>>,
    #[serde(default)]
    pub allow_danger_full_access: bool,
    pub max_request_bytes: Option<usize>,
    pub max_running_turns: Option<usize>,
    #[serde(default, with = "duration::option")]
    pub shutdown_grace: Option<Duration>,
}

/// The resolved `[server]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Default `$BATON_HOME/tokens`.
    pub tokens_file: PathBuf,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    /// `None`: the directory the server was started in.
    pub workspace_roots: Option<Vec<PathBuf>>,
    pub allow_danger_full_access: bool,
    pub max_request_bytes: usize,
    pub max_running_turns: usize,
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    fn resolve(home: &Path, toml: ServerToml) -> Self {
        Self {
            tokens_file: toml.tokens_file.unwrap_or_else(|| home.join("tokens")),
            allowed_hosts: toml.allowed_hosts,
            allowed_origins: toml.allowed_origins,
            workspace_roots: toml.workspace_roots,
            allow_danger_full_access: toml.allow_danger_full_access,
            max_request_bytes: toml.max_request_bytes.unwrap_or(4 * 1024 * 1024),
            max_running_turns: toml.max_running_turns.unwrap_or(16).max(1),
            shutdown_grace: toml.shutdown_grace.unwrap_or(Duration::from_secs(30)),
        }
    }
}

/// The keys that may appear at the top level and inside `[profiles.<name>]`. Other keys are
/// ignored with a warning, as Codex ignores them, so a `config.toml` copied from Codex (with
/// its `[tui]`, `notify`, `[features]` …) works.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ConfigToml {
    model: Option<String>,
    model_provider: Option<String>,
    model_reasoning_effort: Option<String>,
    approval_policy: Option<ApprovalPolicy>,
    sandbox_mode: Option<SandboxMode>,
    sandbox_workspace_write: Option<SandboxWorkspaceWrite>,
    shell_environment_policy: Option<ShellEnvironmentPolicy>,
    #[serde(default)]
    model_providers: BTreeMap<String, ModelProviderInfo>,
    #[serde(default)]
    profiles: BTreeMap<String, toml::Table>,
    profile: Option<String>,
    codex_home: Option<PathBuf>,
    #[serde(default, with = "duration::option")]
    idle_thread_ttl: Option<Duration>,
    model_context_window: Option<u64>,
    model_auto_compact_token_limit: Option<u64>,
    base_instructions: Option<String>,
    developer_instructions: Option<String>,
    project_doc_max_bytes: Option<usize>,
    project_doc_fallback_filenames: Option<Vec<String>>,
    /// Accepted for compatibility with Codex configs; baton has no MCP client side.
    mcp_servers: Option<toml::Table>,
    server: Option<ServerToml>,
    /// Where sessions live: `files` or a `postgres://` URL.
    store: Option<String>,
}

/// The profiles of a file, each checked against the top-level keys (with line numbers).
#[derive(Deserialize)]
struct ProfilesOnly {
    #[serde(default)]
    #[allow(dead_code)] // parsed only to validate
    profiles: BTreeMap<String, ConfigToml>,
}

/// What the caller overrides on top of the file.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// `-c key=value` pairs (and the MCP `config` argument, flattened), applied in order.
    pub values: Vec<(String, toml::Value)>,
    pub profile: Option<String>,
    pub model: Option<String>,
    pub sandbox_mode: Option<SandboxMode>,
    pub approval_policy: Option<ApprovalPolicy>,
    pub base_instructions: Option<String>,
    pub developer_instructions: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub home: PathBuf,
    pub config_file: PathBuf,
    pub model: String,
    pub model_provider: ModelProviderInfo,
    pub model_providers: BTreeMap<String, ModelProviderInfo>,
    pub model_reasoning_effort: Option<String>,
    pub approval_policy: ApprovalPolicy,
    pub sandbox_mode: SandboxMode,
    pub sandbox_workspace_write: SandboxWorkspaceWrite,
    /// What commands see of baton's environment; see [`Config::secret_env_names`].
    pub shell_environment_policy: ShellEnvironmentPolicy,
    pub codex_home: PathBuf,
    pub idle_thread_ttl: Duration,
    pub model_context_window: Option<u64>,
    pub model_auto_compact_token_limit: Option<u64>,
    pub base_instructions: Option<String>,
    pub developer_instructions: Option<String>,
    /// The most bytes of AGENTS.md text sent to the model (0: none are read).
    pub project_doc_max_bytes: usize,
    /// Names tried in a directory that has neither `AGENTS.override.md` nor `AGENTS.md`.
    pub project_doc_fallback_filenames: Vec<String>,
    pub server: ServerConfig,
    /// Where sessions live: `files` (under `home`, the default) or a `postgres://` URL, which
    /// may hold a password: never show it as is.
    pub store: String,
    /// Keys of the file that baton does not know and ignored, for a warning.
    pub ignored_keys: Vec<String>,
}

impl Config {
    /// Loads `home/config.toml` (a missing file is an empty config) and applies `overrides`.
    pub fn load(home: &Path, overrides: &ConfigOverrides) -> Result<Config, ConfigError> {
        let config_file = home.join(CONFIG_FILE_NAME);
        let text = match fs_err::read_to_string(&config_file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => {
                return Err(ConfigError::Read {
                    path: config_file,
                    source: err,
                });
            }
        };
        Self::from_toml_str(home, &config_file, &text, overrides)
    }

    /// As [`Config::load`], from text already read (`config_file` is named in errors).
    pub fn from_toml_str(
        home: &Path,
        config_file: &Path,
        text: &str,
        overrides: &ConfigOverrides,
    ) -> Result<Config, ConfigError> {
        // Parse the file alone first so that errors point at its lines, profiles included.
        let invalid = |err| invalid_at(config_file, text, err);
        let mut ignored_keys = Vec::new();
        let from_file: ConfigToml = parse_checked(text, &mut ignored_keys).map_err(invalid)?;
        // Profiles are kept as raw tables above; checked here against the top-level keys.
        let mut outside_profiles = Vec::new();
        parse_checked::<ProfilesOnly>(text, &mut outside_profiles).map_err(invalid)?;
        ignored_keys.extend(
            outside_profiles
                .into_iter()
                .filter(|key| key.starts_with("profiles.")),
        );
        let mut table = toml::Table::try_from(&from_file).map_err(|err| ConfigError::Invalid {
            path: config_file.to_path_buf(),
            line: 1,
            message: err.to_string(),
        })?;
        let mut merged = from_file;
        for (key, value) in &overrides.values {
            let invalid = |message: String| ConfigError::Override {
                key: key.clone(),
                message,
            };
            set_path(&mut table, key, value.clone()).map_err(invalid)?;
            // Checked one override at a time, so an error names the key at fault.
            merged = deserialize_checked(table.clone(), &mut Vec::new()).map_err(|err| {
                ConfigError::Override {
                    key: err.key.unwrap_or_else(|| key.clone()),
                    message: err.error.message().to_owned(),
                }
            })?;
        }

        let merged = apply_profile(merged, overrides.profile.as_deref(), config_file)?;
        let mut config = resolve(home, config_file, merged, overrides)?;
        config.ignored_keys = ignored_keys;
        Ok(config)
    }

    /// The sandbox policy this config gives a turn run in `cwd`.
    pub fn sandbox_policy(&self) -> SandboxPolicy {
        SandboxPolicy {
            mode: self.sandbox_mode,
            writable_roots: self.sandbox_workspace_write.writable_roots.clone(),
            network_access: self.sandbox_workspace_write.network_access,
            allow_unix_sockets: self.sandbox_workspace_write.allow_unix_sockets.clone(),
        }
    }

    /// The variables that hold baton's secrets: a provider's API key (`env_key` of every
    /// provider baton knows) and [`STORE_ENV`] (a database URL may carry its password). Never
    /// passed to a command, and their values redacted from what is recorded.
    pub fn secret_env_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .model_providers
            .values()
            .filter_map(|provider| provider.env_key.clone())
            .chain(self.model_provider.env_key.clone())
            .chain(std::iter::once(STORE_ENV.to_owned()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The provider with this id, if baton knows it (built-in or configured).
    pub fn provider(&self, id: &str) -> Option<&ModelProviderInfo> {
        self.model_providers.get(id)
    }

    /// The configured model's context window: configured, else known for common models.
    pub fn context_window(&self) -> Option<u64> {
        self.context_window_for(&self.model)
    }

    /// The context window of `model` (a resumed thread may use another model than the
    /// configured one).
    pub fn context_window_for(&self, model: &str) -> Option<u64> {
        self.model_context_window
            .or_else(|| known_context_window(model))
    }

    /// The token count past which a conversation with `model` is compacted (90 % of the window
    /// unless configured), if a window is known.
    pub fn auto_compact_token_limit_for(&self, model: &str) -> Option<u64> {
        self.model_auto_compact_token_limit
            .or_else(|| self.context_window_for(model).map(|window| window * 9 / 10))
    }
}

/// A value that does not fit its key, and that key (dotted, `model_providers.x.wire_api`).
struct Mismatch {
    key: Option<String>,
    error: toml::de::Error,
}

impl From<toml::de::Error> for Mismatch {
    fn from(error: toml::de::Error) -> Self {
        Self { key: None, error }
    }
}

/// Parses a TOML document into `T` with [`deserialize_checked`].
fn parse_checked<T: serde::de::DeserializeOwned>(
    text: &str,
    ignored: &mut Vec<String>,
) -> Result<T, Mismatch> {
    deserialize_checked(toml::Deserializer::parse(text)?, ignored)
}

/// Deserializes `T`, adding to `ignored` the dotted path of every key `T` has no field for
/// (`sandbox_workspace_write.network_acess`) and naming the key of a value that does not fit.
/// Generic over the types, so every table, present or added later, is checked the same way.
fn deserialize_checked<'de, T, D>(deserializer: D, ignored: &mut Vec<String>) -> Result<T, Mismatch>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de, Error = toml::de::Error>,
{
    let mut note_ignored = |path: serde_ignored::Path<'_>| ignored.push(dotted(&path));
    let deserializer = serde_ignored::Deserializer::new(deserializer, &mut note_ignored);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        Mismatch {
            key: (path != ".").then_some(path),
            error: err.into_inner(),
        }
    })
}

/// `path` as a TOML key, `sandbox_workspace_write.network_acess` (serde_ignored writes an
/// `Option` layer as `?`, which is no part of the key a person typed).
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    let (parent, own) = match path {
        Path::Root => return String::new(),
        Path::Seq { parent, index } => (parent, index.to_string()),
        Path::Map { parent, key } => (parent, key.clone()),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => {
            return dotted(parent);
        }
    };
    match dotted(parent) {
        parent if parent.is_empty() => own,
        parent => format!("{parent}.{own}"),
    }
}

/// Context windows of models people commonly use, as Codex assumes them.
fn known_context_window(model: &str) -> Option<u64> {
    const WINDOWS: &[(&str, u64)] = &[
        ("gpt-5", 272_000),
        ("gpt-4.1", 1_047_576),
        ("gpt-4o", 128_000),
        ("o3", 200_000),
        ("o4-mini", 200_000),
        ("codex-mini", 200_000),
    ];
    WINDOWS
        .iter()
        .find(|(prefix, _)| model.starts_with(prefix))
        .map(|(_, window)| *window)
}

/// `BATON_HOME`, else `~/.baton`.
pub fn find_baton_home() -> Result<PathBuf, ConfigError> {
    if let Some(home) = std::env::var_os("BATON_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    user_home().map(|home| home.join(".baton"))
}

fn user_home() -> Result<PathBuf, ConfigError> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or(ConfigError::NoHome)
}

fn invalid_at(path: &Path, text: &str, mismatch: Mismatch) -> ConfigError {
    let Mismatch { key, error } = mismatch;
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(1);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        message: match key {
            Some(key) => format!("{key}: {}", error.message()),
            None => error.message().to_owned(),
        },
    }
}

/// Lays the selected profile's keys over the top level.
fn apply_profile(
    base: ConfigToml,
    requested: Option<&str>,
    config_file: &Path,
) -> Result<ConfigToml, ConfigError> {
    let Some(name) = requested
        .map(str::to_owned)
        .or_else(|| base.profile.clone())
    else {
        return Ok(base);
    };
    let Some(profile) = base.profiles.get(&name).cloned() else {
        return Err(ConfigError::UnknownProfile {
            known: if base.profiles.is_empty() {
                "none".to_owned()
            } else {
                base.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            },
            name,
            path: config_file.to_path_buf(),
        });
    };
    let mut table = toml::Table::try_from(&base).map_err(|err| ConfigError::Invalid {
        path: config_file.to_path_buf(),
        line: 1,
        message: err.to_string(),
    })?;
    for (key, value) in profile {
        overrides::merge_value(&mut table, key, value);
    }
    table
        .try_into()
        .map_err(|err: toml::de::Error| ConfigError::Invalid {
            path: config_file.to_path_buf(),
            line: 1,
            message: format!("in [profiles.{name}]: {}", err.message()),
        })
}

fn builtin_providers() -> BTreeMap<String, ModelProviderInfo> {
    let openai_base = std::env::var("OPENAI_BASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "https://api.openai.com/v1".to_owned());
    let mut providers = BTreeMap::new();
    providers.insert(
        "openai".to_owned(),
        ModelProviderInfo {
            id: "openai".into(),
            name: "OpenAI".into(),
            base_url: openai_base,
            env_key: Some("OPENAI_API_KEY".into()),
            wire_api: WireApi::Responses,
            http_headers: BTreeMap::new(),
            request_max_retries: None,
            stream_idle_timeout_ms: None,
        },
    );
    providers.insert(
        "ollama".to_owned(),
        ModelProviderInfo {
            id: "ollama".into(),
            name: "Ollama".into(),
            base_url: "http://127.0.0.1:11434/v1".into(),
            env_key: None,
            wire_api: WireApi::Chat,
            http_headers: BTreeMap::new(),
            request_max_retries: None,
            stream_idle_timeout_ms: None,
        },
    );
    providers
}

fn resolve(
    home: &Path,
    config_file: &Path,
    toml: ConfigToml,
    overrides: &ConfigOverrides,
) -> Result<Config, ConfigError> {
    let mut model_providers = builtin_providers();
    for (id, mut provider) in toml.model_providers {
        provider.id = id.clone();
        model_providers.insert(id, provider);
    }
    let provider_id = toml.model_provider.unwrap_or_else(|| "openai".to_owned());
    let model_provider =
        model_providers
            .get(&provider_id)
            .cloned()
            .ok_or_else(|| ConfigError::UnknownProvider {
                id: provider_id.clone(),
                path: config_file.to_path_buf(),
            })?;
    let codex_home = match toml.codex_home {
        Some(path) => path,
        None => match std::env::var_os("CODEX_HOME").filter(|v| !v.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => user_home()
                .map(|h| h.join(".codex"))
                .unwrap_or_else(|_| home.join("codex-home-unknown")),
        },
    };
    Ok(Config {
        home: home.to_path_buf(),
        config_file: config_file.to_path_buf(),
        model: overrides
            .model
            .clone()
            .or(toml.model)
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
        model_provider,
        model_providers,
        model_reasoning_effort: toml.model_reasoning_effort,
        approval_policy: overrides
            .approval_policy
            .or(toml.approval_policy)
            .unwrap_or_default(),
        sandbox_mode: overrides
            .sandbox_mode
            .or(toml.sandbox_mode)
            .unwrap_or_default(),
        sandbox_workspace_write: toml.sandbox_workspace_write.unwrap_or_default(),
        shell_environment_policy: toml.shell_environment_policy.unwrap_or_default(),
        codex_home,
        idle_thread_ttl: toml.idle_thread_ttl.unwrap_or(DEFAULT_IDLE_THREAD_TTL),
        store: toml.store.clone().unwrap_or_else(|| "files".to_owned()),
        model_context_window: toml.model_context_window,
        model_auto_compact_token_limit: toml.model_auto_compact_token_limit,
        base_instructions: overrides
            .base_instructions
            .clone()
            .or(toml.base_instructions),
        developer_instructions: overrides
            .developer_instructions
            .clone()
            .or(toml.developer_instructions),
        project_doc_max_bytes: toml
            .project_doc_max_bytes
            .unwrap_or(DEFAULT_PROJECT_DOC_MAX_BYTES),
        project_doc_fallback_filenames: toml.project_doc_fallback_filenames.unwrap_or_default(),
        server: ServerConfig::resolve(home, toml.server.unwrap_or_default()),
        ignored_keys: Vec::new(),
    })
}

/// Re-exported so callers can build override values without depending on `toml` directly.
pub use toml::Value as TomlValue;

/// Flattens a JSON object of overrides (the MCP `config` argument) into dotted keys and TOML
/// values, e.g. `{"sandbox_workspace_write": {"network_access": true}}`.
pub fn json_overrides(value: &serde_json::Value) -> Result<Vec<(String, toml::Value)>, String> {
    let serde_json::Value::Object(map) = value else {
        return Err("`config` must be an object of config keys and values".to_owned());
    };
    let mut out = Vec::new();
    for (key, value) in map {
        out.push((
            key.clone(),
            json_to_toml(value).map_err(|e| format!("`{key}`: {e}"))?,
        ));
    }
    Ok(out)
}

fn json_to_toml(value: &serde_json::Value) -> Result<toml::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => return Err("null is not a config value".to_owned()),
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) => toml::Value::Float(f),
            _ => return Err(format!("{n} is out of range")),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(items) => {
            toml::Value::Array(items.iter().map(json_to_toml).collect::<Result<_, _>>()?)
        }
        J::Object(map) => {
            let mut table = toml::Table::new();
            for (k, v) in map {
                table.insert(k.clone(), json_to_toml(v)?);
            }
            toml::Value::Table(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, overrides: &ConfigOverrides) -> Result<Config, ConfigError> {
        Config::from_toml_str(
            Path::new("/home/x/.baton"),
            Path::new("/home/x/.baton/config.toml"),
            text,
            overrides,
        )
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = load("", &ConfigOverrides::default()).expect("empty config");
        assert_eq!(config.sandbox_mode, SandboxMode::WorkspaceWrite);
        assert_eq!(config.approval_policy, ApprovalPolicy::OnRequest);
        assert_eq!(config.model_provider.id, "openai");
        assert_eq!(config.idle_thread_ttl, Duration::from_secs(1800));
        assert!(config.provider("ollama").is_some());
    }

    #[test]
    fn error_names_file_and_line() {
        let err = load(
            "model = \"a\"\n\napproval_policy = \"sometimes\"\n",
            &ConfigOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/home/x/.baton/config.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");

        let err = load("model = \n", &ConfigOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");

        let err = load("x = 1\ny = [\n", &ConfigOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line "), "{err}");
    }

    #[test]
    fn an_error_inside_a_profile_names_its_line() {
        let text = "model = \"m\"\n\n[profiles.fast]\nmodel = \"x\"\nsandbox_mode = \"bogus\"\n";
        let err = load(text, &ConfigOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 5"), "{err}");
    }

    #[test]
    fn unknown_keys_are_ignored_and_reported_like_codex_does() {
        let text = "model = \"m\"\nmodle = \"x\"\nnotify = [\"say\"]\n[tui]\nanimations = false\n[model_providers.p]\nbase_url = \"http://x\"\nquery_params = {}\n[profiles.fast]\nmodel_verbosity = \"low\"\n";
        let config = load(text, &ConfigOverrides::default()).expect("Codex keys are tolerated");
        assert_eq!(config.model, "m");
        let mut ignored = config.ignored_keys.clone();
        ignored.sort();
        assert_eq!(
            ignored,
            [
                "model_providers.p.query_params",
                "modle",
                "notify",
                "profiles.fast.model_verbosity",
                "tui"
            ]
        );
        // A known key with a wrong value is still an error with its line.
        let err = load(
            "model = \"m\"\n\nsandbox_mode = 3\n",
            &ConfigOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn unknown_keys_inside_every_table_are_reported_with_the_table() {
        let text = "[sandbox_workspace_write]\nnetwork_acess = true\n\
                    [model_providers.x]\nbase_url = \"http://x\"\nwire = \"chat\"\n\
                    [profiles.p]\nmodel = \"m\"\nmodle = \"m\"\n\
                    [profiles.p.sandbox_workspace_write]\nwritable_root = []\n";
        let config = load(text, &ConfigOverrides::default()).expect("typos are warnings");
        let mut ignored = config.ignored_keys.clone();
        ignored.sort();
        assert_eq!(
            ignored,
            [
                "model_providers.x.wire",
                "profiles.p.modle",
                "profiles.p.sandbox_workspace_write.writable_root",
                "sandbox_workspace_write.network_acess",
            ]
        );
        assert!(!config.sandbox_workspace_write.network_access);
    }

    #[test]
    fn type_errors_name_the_key_and_what_was_given() {
        let expected_mode =
            r#"expected one of "read-only", "workspace-write", "danger-full-access", got"#;
        let cases = [
            (
                "model = \"m\"\nsandbox_mode = 7\n",
                format!("line 2: sandbox_mode: {expected_mode} integer `7`"),
            ),
            (
                "[model_providers.x]\nbase_url = \"u\"\nwire_api = true\n",
                r#"line 3: model_providers.x.wire_api: expected one of "responses", "chat", got boolean `true`"#.to_owned(),
            ),
            (
                "[profiles.p]\napproval_policy = \"sometimes\"\n",
                r#"line 2: profiles.p.approval_policy: expected one of "untrusted", "on-request", "on-failure", "never", got string "sometimes""#.to_owned(),
            ),
            (
                "idle_thread_ttl = true\n",
                "line 1: idle_thread_ttl: expected seconds (90) or a duration such as \"30s\" or \"30m\", got boolean `true`".to_owned(),
            ),
        ];
        for (text, expected) in cases {
            let err = load(text, &ConfigOverrides::default())
                .expect_err(text)
                .to_string();
            assert!(err.contains("/home/x/.baton/config.toml"), "{err}");
            assert!(err.ends_with(&expected), "{text}: {err}");
        }

        // The MCP `config` argument.
        for (json, expected) in [
            (
                serde_json::json!({"sandbox_mode": 7}),
                format!("invalid config override `sandbox_mode`: {expected_mode} integer `7`"),
            ),
            (
                serde_json::json!({"sandbox_workspace_write": {"network_access": "yes"}}),
                "invalid config override `sandbox_workspace_write.network_access`: invalid type: string \"yes\", expected a boolean".to_owned(),
            ),
        ] {
            let overrides = ConfigOverrides {
                values: json_overrides(&json).expect("object"),
                ..Default::default()
            };
            let err = load("", &overrides).expect_err("wrong type").to_string();
            assert_eq!(err, expected);
        }
    }

    #[test]
    fn providers_profiles_and_overrides_layer_in_order() {
        let text = r#"
model = "top"
model_provider = "mock"
[model_providers.mock]
name = "Mock"
base_url = "http://127.0.0.1:9/v1"
env_key = "MOCK_KEY"
wire_api = "chat"
[profiles.fast]
model = "from-profile"
approval_policy = "never"
"#;
        let mut overrides = ConfigOverrides {
            profile: Some("fast".into()),
            ..Default::default()
        };
        let config = load(text, &overrides).expect("valid");
        assert_eq!(config.model, "from-profile");
        assert_eq!(config.approval_policy, ApprovalPolicy::Never);
        assert_eq!(config.model_provider.wire_api, WireApi::Chat);
        assert_eq!(config.model_provider.id, "mock");

        overrides.values.push(
            parse_cli_override("sandbox_workspace_write.network_access=true").expect("override"),
        );
        overrides.model = Some("flag".into());
        let config = load(text, &overrides).expect("valid");
        assert_eq!(config.model, "flag");
        assert!(config.sandbox_workspace_write.network_access);
    }

    #[test]
    fn unknown_profile_and_provider_are_clear() {
        let overrides = ConfigOverrides {
            profile: Some("nope".into()),
            ..Default::default()
        };
        let err = load("", &overrides).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = load("model_provider = \"acme\"", &ConfigOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("acme") && err.contains("model_providers"),
            "{err}"
        );
    }

    #[test]
    fn bad_override_names_the_key() {
        let overrides = ConfigOverrides {
            values: vec![
                parse_cli_override("model=\"fine\"").expect("parses"),
                parse_cli_override("sandbox_mode=\"sideways\"").expect("parses"),
            ],
            ..Default::default()
        };
        let err = load("", &overrides).unwrap_err().to_string();
        assert!(err.contains("`sandbox_mode`"), "{err}");
        assert!(
            !err.contains("model,"),
            "only the key at fault is named: {err}"
        );
    }

    #[test]
    fn json_overrides_apply_like_cli_ones() {
        let values = json_overrides(&serde_json::json!({
            "model": "m1",
            "sandbox_workspace_write": {"network_access": true, "writable_roots": ["/tmp/x"]}
        }))
        .expect("object");
        let config = load(
            "",
            &ConfigOverrides {
                values,
                ..Default::default()
            },
        )
        .expect("valid");
        assert_eq!(config.model, "m1");
        assert!(config.sandbox_workspace_write.network_access);
        assert!(json_overrides(&serde_json::json!("text")).is_err());
        assert!(json_overrides(&serde_json::json!({"model": null})).is_err());
    }

    #[test]
    fn shell_environment_policy_and_secret_names() {
        let text = r#"
model_provider = "corp"
[model_providers.corp]
base_url = "http://127.0.0.1:9/v1"
env_key = "CORP_LLM"
[shell_environment_policy]
inherit = "core"
exclude = ["AWS_*"]
include_only = ["PATH", "LC_*"]
ignore_default_excludes = true
[shell_environment_policy.set]
CI = "1"
[sandbox_workspace_write]
allow_unix_sockets = ["/run/docker.sock"]
"#;
        let config = load(text, &ConfigOverrides::default()).expect("valid");
        let policy = &config.shell_environment_policy;
        assert_eq!(policy.inherit, baton_protocol::EnvInherit::Core);
        assert_eq!(policy.exclude, ["AWS_*"]);
        assert_eq!(policy.include_only, ["PATH", "LC_*"]);
        assert!(policy.ignore_default_excludes);
        assert_eq!(policy.set.get("CI").map(String::as_str), Some("1"));
        assert_eq!(
            config.secret_env_names(),
            ["BATON_STORE", "CORP_LLM", "OPENAI_API_KEY"]
        );
        assert_eq!(
            config.sandbox_policy().allow_unix_sockets,
            [PathBuf::from("/run/docker.sock")]
        );
        assert!(config.ignored_keys.is_empty(), "{:?}", config.ignored_keys);

        let default = load("", &ConfigOverrides::default()).expect("valid");
        assert_eq!(
            default.shell_environment_policy,
            ShellEnvironmentPolicy::default()
        );
        let err = load(
            "[shell_environment_policy]\ninherit = \"some\"\n",
            &ConfigOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn compaction_limit_defaults_to_90_percent_of_the_window() {
        let config = load("model_context_window = 1000", &ConfigOverrides::default()).expect("ok");
        assert_eq!(config.auto_compact_token_limit_for("any"), Some(900));
        let config = load(
            "model_context_window = 1000\nmodel_auto_compact_token_limit = 500",
            &ConfigOverrides::default(),
        )
        .expect("ok");
        assert_eq!(config.auto_compact_token_limit_for("any"), Some(500));
        let config = load("model = \"gpt-5.1-codex\"", &ConfigOverrides::default()).expect("ok");
        assert_eq!(config.context_window(), Some(272_000));
        let config = load("model = \"my-local-model\"", &ConfigOverrides::default()).expect("ok");
        assert_eq!(config.auto_compact_token_limit_for(&config.model), None);
        // A thread on another model gets that model's window.
        assert_eq!(config.auto_compact_token_limit_for("gpt-4o"), Some(115_200));
    }

    #[test]
    fn idle_ttl_accepts_seconds_and_units() {
        for (text, expected) in [
            ("idle_thread_ttl = 90", Duration::from_secs(90)),
            ("idle_thread_ttl = \"500ms\"", Duration::from_millis(500)),
            ("idle_thread_ttl = \"2m\"", Duration::from_secs(120)),
        ] {
            let config = load(text, &ConfigOverrides::default()).expect(text);
            assert_eq!(config.idle_thread_ttl, expected, "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = load(&text, &ConfigOverrides::default());
        }

        #[test]
        fn arbitrary_override_never_panics(text in ".{0,80}") {
            if let Ok(pair) = parse_cli_override(&text) {
                let overrides = ConfigOverrides { values: vec![pair], ..Default::default() };
                let _ = load("", &overrides);
            }
        }
    }

    #[test]
    fn project_doc_keys_have_codex_defaults_and_may_be_set() {
        let config = load("", &ConfigOverrides::default()).expect("valid");
        assert_eq!(config.project_doc_max_bytes, 32 * 1024);
        assert!(config.project_doc_fallback_filenames.is_empty());
        let text =
            "project_doc_max_bytes = 100\nproject_doc_fallback_filenames = [\"CLAUDE.md\"]\n";
        let config = load(text, &ConfigOverrides::default()).expect("valid");
        assert_eq!(config.project_doc_max_bytes, 100);
        assert_eq!(config.project_doc_fallback_filenames, ["CLAUDE.md"]);
        assert!(config.ignored_keys.is_empty(), "{:?}", config.ignored_keys);
    }
}
