//! Turns a Codex conversation into one baton's tools and any provider can continue, under the same thread id.
//!
//! Codex's shell tools (`shell`, `exec_command`, `local_shell_call`) and its free-form
//! `apply_patch` become calls of baton's `shell` and `apply_patch`; other tool calls become
//! text, so the model still reads what happened. Reasoning items are dropped: their encrypted
//! content only works with the provider that made them.

use std::collections::HashMap;

use baton_protocol::{
    BaseInstructions, CLI_VERSION, ImportedFrom, ORIGINATOR, ResponseItem, SessionMeta,
};
use baton_store::LoadedRollout;
use serde_json::{Value, json};

use crate::agent::{ThreadSettings, default_base_instructions};
use crate::tools::{APPLY_PATCH_TOOL, SHELL_TOOL};

/// The `session_meta` and history of a baton thread that continues the Codex session
/// `loaded` (same id), to run with `settings`.
pub(crate) fn as_baton_thread(
    loaded: &LoadedRollout,
    settings: ThreadSettings,
) -> (SessionMeta, Vec<ResponseItem>) {
    let mut meta = loaded.meta.clone();
    meta.imported_from = Some(ImportedFrom {
        path: loaded.path.clone(),
        originator: meta.originator.clone(),
        cli_version: meta.cli_version.clone(),
    });
    meta.originator = ORIGINATOR.to_owned();
    meta.cli_version = CLI_VERSION.to_owned();
    // Codex's instructions describe Codex's tools; the continued thread has baton's.
    meta.base_instructions = Some(BaseInstructions {
        text: default_base_instructions().to_owned(),
    });
    meta.model_provider = Some(settings.provider_id);
    meta.model = Some(settings.model);
    (meta, convert_history(&loaded.history))
}

pub(crate) fn convert_history(items: &[ResponseItem]) -> Vec<ResponseItem> {
    // Calls that became text need their outputs to become text too.
    let mut textual_calls: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            ResponseItem::Reasoning { .. } | ResponseItem::Other => {}
            ResponseItem::FunctionCall {
                name,
                arguments,
                call_id,
            } => match map_function_call(name, arguments) {
                Some((name, arguments)) => out.push(ResponseItem::FunctionCall {
                    name,
                    arguments,
                    call_id: call_id.clone(),
                }),
                None => {
                    textual_calls.insert(call_id.clone(), name.clone());
                    out.push(ResponseItem::assistant_message(format!(
                        "[called Codex tool `{name}` with {arguments}]"
                    )));
                }
            },
            ResponseItem::CustomToolCall {
                name,
                input,
                call_id,
            } if name == APPLY_PATCH_TOOL => out.push(ResponseItem::FunctionCall {
                name: APPLY_PATCH_TOOL.to_owned(),
                arguments: json!({ "input": input }).to_string(),
                call_id: call_id.clone(),
            }),
            ResponseItem::CustomToolCall {
                name,
                input,
                call_id,
            } => {
                textual_calls.insert(call_id.clone(), name.clone());
                out.push(ResponseItem::assistant_message(format!(
                    "[called Codex tool `{name}` with input:\n{input}]"
                )));
            }
            ResponseItem::LocalShellCall { call_id, action } => {
                let command = action.get("command").cloned().unwrap_or(Value::Null);
                let call_id = call_id.clone().unwrap_or_default();
                out.push(ResponseItem::FunctionCall {
                    name: SHELL_TOOL.to_owned(),
                    arguments: json!({ "command": command }).to_string(),
                    call_id,
                });
            }
            ResponseItem::FunctionCallOutput { call_id, output }
            | ResponseItem::CustomToolCallOutput { call_id, output } => {
                match textual_calls.get(call_id) {
                    Some(name) => out.push(ResponseItem::assistant_message(format!(
                        "[output of Codex tool `{name}`:\n{output}]"
                    ))),
                    None => out.push(ResponseItem::FunctionCallOutput {
                        call_id: call_id.clone(),
                        output: output.clone(),
                    }),
                }
            }
            ResponseItem::Message { .. } => out.push(item.clone()),
        }
    }
    out
}

/// Maps Codex's shell-like function tools onto baton's `shell`; `None` for other tools.
fn map_function_call(name: &str, arguments: &str) -> Option<(String, String)> {
    let args: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
    match name {
        SHELL_TOOL | "container.exec" => Some((SHELL_TOOL.to_owned(), arguments.to_owned())),
        "exec_command" | "shell_command" => {
            let cmd = args
                .get("cmd")
                .or_else(|| args.get("command"))
                .and_then(Value::as_str)?;
            let mut mapped = json!({ "command": ["bash", "-lc", cmd] });
            if let Some(workdir) = args.get("workdir") {
                mapped["workdir"] = workdir.clone();
            }
            Some((SHELL_TOOL.to_owned(), mapped.to_string()))
        }
        APPLY_PATCH_TOOL => Some((APPLY_PATCH_TOOL.to_owned(), arguments.to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_command_with_a_string_becomes_shell() {
        let (name, arguments) =
            map_function_call("shell_command", r#"{"command":"cargo test"}"#).expect("mapped");
        assert_eq!(name, "shell");
        let args: Value = serde_json::from_str(&arguments).expect("json");
        assert_eq!(args["command"], json!(["bash", "-lc", "cargo test"]));
    }

    #[test]
    fn exec_command_becomes_shell_and_unknown_tools_become_text() {
        let items = vec![
            ResponseItem::user_message("list files"),
            ResponseItem::FunctionCall {
                name: "exec_command".into(),
                arguments: r#"{"cmd":"ls -la","workdir":"src"}"#.into(),
                call_id: "c1".into(),
            },
            ResponseItem::FunctionCallOutput {
                call_id: "c1".into(),
                output: "a.txt".into(),
            },
            ResponseItem::FunctionCall {
                name: "update_plan".into(),
                arguments: "{}".into(),
                call_id: "c2".into(),
            },
            ResponseItem::FunctionCallOutput {
                call_id: "c2".into(),
                output: "ok".into(),
            },
            ResponseItem::CustomToolCall {
                name: "apply_patch".into(),
                input: "*** Begin Patch\n*** End Patch".into(),
                call_id: "c3".into(),
            },
            ResponseItem::Reasoning {
                id: None,
                summary: vec![],
                content: None,
                encrypted_content: Some("opaque".into()),
            },
        ];
        let converted = convert_history(&items);
        assert_eq!(converted.len(), 6);
        match &converted[1] {
            ResponseItem::FunctionCall {
                name, arguments, ..
            } => {
                assert_eq!(name, "shell");
                let args: Value = serde_json::from_str(arguments).expect("json");
                assert_eq!(args["command"], json!(["bash", "-lc", "ls -la"]));
                assert_eq!(args["workdir"], json!("src"));
            }
            other => panic!("expected a shell call, got {other:?}"),
        }
        assert!(matches!(&converted[3], ResponseItem::Message { role, .. } if role == "assistant"));
        assert!(matches!(&converted[4], ResponseItem::Message { role, .. } if role == "assistant"));
        assert!(
            matches!(&converted[5], ResponseItem::FunctionCall { name, .. } if name == "apply_patch")
        );
    }
}
