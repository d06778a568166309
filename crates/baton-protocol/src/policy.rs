use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the commands of a session may touch: Codex's three sandbox modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    ReadOnly,
    #[default]
    WorkspaceWrite,
    DangerFullAccess,
}

/// When baton asks the person (through the MCP client) before running a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPolicy {
    Untrusted,
    OnFailure,
    #[default]
    OnRequest,
    Never,
}

/// The sandbox of a turn as recorded in `turn_context.sandbox_policy`, in Codex's shape
/// (`{"type": "workspace-write", "writable_roots": [...], "network_access": false}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SandboxPolicy {
    #[serde(rename = "type")]
    pub mode: SandboxMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writable_roots: Vec<PathBuf>,
    #[serde(default)]
    pub network_access: bool,
    /// Unix socket paths a command may still reach with `network_access = false`; when any is
    /// given, `AF_UNIX` sockets are allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_unix_sockets: Vec<PathBuf>,
}

/// Which of baton's environment variables a command starts from (`[shell_environment_policy]
/// inherit`, as in Codex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvInherit {
    /// Every variable of baton's environment.
    #[default]
    All,
    /// A few variables every program expects (`HOME`, `PATH`, `USER`, `LANG`, `LC_*`, …).
    Core,
    /// Nothing: only what `set` gives.
    None,
}

/// `[shell_environment_policy]`: what a command the model runs sees of baton's environment.
/// The filtering itself lives in `baton_exec::command_env`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ShellEnvironmentPolicy {
    pub inherit: EnvInherit,
    /// Keep names matching `*KEY*`, `*SECRET*`, `*TOKEN*`, `*PASSWORD*` and `SSH_AUTH_SOCK`.
    /// Provider key variables are removed whatever this says.
    pub ignore_default_excludes: bool,
    /// Glob patterns (`*`, `?`, case-insensitive) of names to remove.
    pub exclude: Vec<String>,
    /// Variables to set, whatever the other rules say.
    pub set: BTreeMap<String, String>,
    /// When not empty, only names matching one of these patterns are inherited.
    pub include_only: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}; expected one of: {expected}")]
pub struct ParsePolicyError {
    value: String,
    what: &'static str,
    expected: &'static str,
}

impl SandboxMode {
    pub const ALL: [&'static str; 3] = ["read-only", "workspace-write", "danger-full-access"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read-only",
            Self::WorkspaceWrite => "workspace-write",
            Self::DangerFullAccess => "danger-full-access",
        }
    }
}

impl ApprovalPolicy {
    pub const ALL: [&'static str; 4] = ["untrusted", "on-request", "on-failure", "never"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Untrusted => "untrusted",
            Self::OnFailure => "on-failure",
            Self::OnRequest => "on-request",
            Self::Never => "never",
        }
    }
}

impl FromStr for SandboxMode {
    type Err = ParsePolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read-only" => Ok(Self::ReadOnly),
            "workspace-write" => Ok(Self::WorkspaceWrite),
            "danger-full-access" => Ok(Self::DangerFullAccess),
            _ => Err(ParsePolicyError {
                value: s.to_owned(),
                what: "sandbox mode",
                expected: "read-only, workspace-write, danger-full-access",
            }),
        }
    }
}

impl FromStr for ApprovalPolicy {
    type Err = ParsePolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "untrusted" => Ok(Self::Untrusted),
            "on-request" => Ok(Self::OnRequest),
            "on-failure" => Ok(Self::OnFailure),
            "never" => Ok(Self::Never),
            _ => Err(ParsePolicyError {
                value: s.to_owned(),
                what: "approval policy",
                expected: "untrusted, on-request, on-failure, never",
            }),
        }
    }
}

// By hand rather than derived, for errors that say what was given (see `one_of`).
impl<'de> Deserialize<'de> for SandboxMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::one_of::deserialize(deserializer, &Self::ALL, |name| name.parse().ok())
    }
}

impl<'de> Deserialize<'de> for ApprovalPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::one_of::deserialize(deserializer, &Self::ALL, |name| name.parse().ok())
    }
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ApprovalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in SandboxMode::ALL {
            assert_eq!(name.parse::<SandboxMode>().expect(name).as_str(), name);
        }
        for name in ApprovalPolicy::ALL {
            assert_eq!(name.parse::<ApprovalPolicy>().expect(name).as_str(), name);
        }
        assert!("sometimes".parse::<ApprovalPolicy>().is_err());
    }

    #[test]
    fn deserializing_names_what_was_given() {
        for name in SandboxMode::ALL {
            let json = serde_json::to_string(&name).expect("json");
            let mode: SandboxMode = serde_json::from_str(&json).expect(name);
            assert_eq!(serde_json::to_string(&mode).expect("json"), json);
        }
        let error = |json: &str| {
            serde_json::from_str::<SandboxMode>(json)
                .expect_err(json)
                .to_string()
        };
        let expected =
            r#"expected one of "read-only", "workspace-write", "danger-full-access", got"#;
        assert!(
            error("7").starts_with(&format!("{expected} integer `7`")),
            "{}",
            error("7")
        );
        assert!(error("true").starts_with(&format!("{expected} boolean `true`")));
        assert!(error(r#""sideways""#).starts_with(&format!(r#"{expected} string "sideways""#)));
        assert!(error("[]").starts_with(&format!("{expected} sequence")));
        let error = serde_json::from_str::<ApprovalPolicy>("1.5").expect_err("float");
        assert!(
            error
                .to_string()
                .contains("\"never\", got floating point `1.5`"),
            "{error}"
        );
    }

    #[test]
    fn sandbox_policy_has_codex_shape() {
        let policy: SandboxPolicy =
            serde_json::from_str(r#"{"type":"workspace-write","writable_roots":[],"network_access":false,"exclude_slash_tmp":false}"#)
                .expect("codex shape");
        assert_eq!(policy.mode, SandboxMode::WorkspaceWrite);
    }
}
