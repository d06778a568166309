//! The history as both wires need it: Codex-only item kinds mapped onto plain function calls,
//! items no server would accept left out.

use std::collections::HashSet;

use baton_protocol::{ContentItem, ResponseItem};
use serde_json::{Map, Value, json};

/// One history item in a shape every server accepts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry<'a> {
    Message {
        role: &'a str,
        texts: Vec<&'a str>,
    },
    /// A reasoning item that can be sent back (it has `encrypted_content`).
    Reasoning(&'a ResponseItem),
    Call {
        name: String,
        arguments: String,
        call_id: &'a str,
    },
    Output {
        call_id: &'a str,
        output: &'a str,
    },
}

pub(crate) fn entries(items: &[ResponseItem]) -> Vec<Entry<'_>> {
    let entries: Vec<Entry> = items.iter().filter_map(entry).collect();
    // An output whose call was left out (a Codex item baton cannot express) would be rejected
    // by the APIs as an answer to an unknown call.
    let call_ids: HashSet<&str> = entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::Call { call_id, .. } => Some(*call_id),
            _ => None,
        })
        .collect();
    entries
        .into_iter()
        .filter(|entry| match entry {
            Entry::Output { call_id, .. } => call_ids.contains(call_id),
            _ => true,
        })
        .collect()
}

fn entry(item: &ResponseItem) -> Option<Entry<'_>> {
    match item {
        ResponseItem::Message { role, content } => {
            let texts: Vec<&str> = content
                .iter()
                .filter_map(|part| match part {
                    ContentItem::InputText { text } | ContentItem::OutputText { text } => {
                        Some(text.as_str())
                    }
                    ContentItem::Other => None,
                })
                .collect();
            (!texts.is_empty()).then_some(Entry::Message { role, texts })
        }
        ResponseItem::Reasoning {
            encrypted_content, ..
        } => encrypted_content
            .is_some()
            .then_some(Entry::Reasoning(item)),
        ResponseItem::FunctionCall {
            name,
            arguments,
            call_id,
        } => Some(Entry::Call {
            name: name.clone(),
            arguments: arguments.clone(),
            call_id,
        }),
        // Codex's free-form tools take raw text; baton's function tools (apply_patch among
        // them) take it as the `input` argument.
        ResponseItem::CustomToolCall {
            name,
            input,
            call_id,
        } => Some(Entry::Call {
            name: name.clone(),
            arguments: json!({ "input": input }).to_string(),
            call_id,
        }),
        ResponseItem::LocalShellCall { call_id, action } => Some(Entry::Call {
            name: "shell".to_owned(),
            arguments: local_shell_arguments(action)?,
            call_id: call_id.as_deref()?,
        }),
        ResponseItem::FunctionCallOutput { call_id, output }
        | ResponseItem::CustomToolCallOutput { call_id, output } => {
            Some(Entry::Output { call_id, output })
        }
        ResponseItem::Other => None,
    }
}

/// `{type: "exec", command, working_directory?, timeout_ms?}` → the arguments of baton's
/// `shell` tool: `{command, workdir?, timeout_ms?}`.
fn local_shell_arguments(action: &Value) -> Option<String> {
    if action.get("type").and_then(Value::as_str) != Some("exec") {
        return None;
    }
    let mut arguments = Map::new();
    arguments.insert("command".to_owned(), action.get("command")?.clone());
    if let Some(workdir) = action.get("working_directory").filter(|v| v.is_string()) {
        arguments.insert("workdir".to_owned(), workdir.clone());
    }
    if let Some(timeout) = action.get("timeout_ms").filter(|v| v.is_number()) {
        arguments.insert("timeout_ms".to_owned(), timeout.clone());
    }
    Some(Value::Object(arguments).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_codex_items_onto_function_calls() {
        let items = vec![
            ResponseItem::CustomToolCall {
                name: "apply_patch".into(),
                input: "*** Begin Patch".into(),
                call_id: "c1".into(),
            },
            ResponseItem::CustomToolCallOutput {
                call_id: "c1".into(),
                output: "done".into(),
            },
            ResponseItem::LocalShellCall {
                call_id: Some("c2".into()),
                action: json!({"type": "exec", "command": ["ls", "-l"], "working_directory": "/tmp", "env": {}}),
            },
        ];
        let entries = entries(&items);
        assert_eq!(
            entries,
            vec![
                Entry::Call {
                    name: "apply_patch".into(),
                    arguments: r#"{"input":"*** Begin Patch"}"#.into(),
                    call_id: "c1"
                },
                Entry::Output {
                    call_id: "c1",
                    output: "done"
                },
                Entry::Call {
                    name: "shell".into(),
                    arguments: r#"{"command":["ls","-l"],"workdir":"/tmp"}"#.into(),
                    call_id: "c2"
                },
            ]
        );
    }

    #[test]
    fn leaves_out_what_no_server_accepts() {
        let items = vec![
            ResponseItem::Other,
            ResponseItem::Reasoning {
                id: None,
                summary: vec![],
                content: None,
                encrypted_content: None,
            },
            ResponseItem::Message {
                role: "user".into(),
                content: vec![ContentItem::Other],
            },
            // A local shell call without a call id cannot be answered, nor its output kept.
            ResponseItem::LocalShellCall {
                call_id: None,
                action: json!({"type": "exec", "command": ["ls"]}),
            },
            ResponseItem::FunctionCallOutput {
                call_id: "orphan".into(),
                output: "x".into(),
            },
        ];
        assert_eq!(entries(&items), vec![]);
        let kept = ResponseItem::Reasoning {
            id: Some("r".into()),
            summary: vec![],
            content: None,
            encrypted_content: Some("opaque".into()),
        };
        assert_eq!(
            entries(std::slice::from_ref(&kept)),
            vec![Entry::Reasoning(&kept)]
        );
    }
}
