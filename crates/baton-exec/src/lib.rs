//! Runs the agent's tools: shell commands (in their own process group, with a timeout, bounded
//! output, a filtered environment and an OS sandbox) and `apply_patch` (Codex's patch format),
//! plus the classification
//! of commands that only read and so need no approval, and the guess whether a failed command
//! was stopped by the sandbox (for `on-failure`).
//!
//! Architecture Invariant: this crate knows nothing of sessions, models or MCP; it depends on
//! `baton-protocol` only for the sandbox policy types.

mod child;
mod denial;
mod env;
mod git_protection;
mod output;
mod patch;
mod pid_namespace;
mod safe_command;
mod sandbox;
mod seccomp;
mod shell;
mod spawner;

pub use denial::looks_like_sandbox_denial;
pub use env::command_env;
pub use output::OutputCap;
pub use patch::{PatchError, PatchReport, apply_patch, apply_patch_protecting};
pub use safe_command::is_known_safe_command;
pub use sandbox::{SandboxReport, sandbox_capabilities, writable_roots};
pub use shell::{ExecError, ShellOutput, ShellRequest, run_shell};
