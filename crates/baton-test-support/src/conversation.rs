//! Reading a recorded request body as a conversation, the same way for both wires.

use serde_json::Value;

use crate::{RecordedRequest, Wire};

/// One item of the conversation a client sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    User(String),
    Assistant(String),
    /// Developer and system messages.
    System(String),
    Call {
        name: String,
        arguments: String,
    },
    Output(String),
    /// An item of a type this server does not interpret (its `type`).
    Other(String),
}

impl Entry {
    pub(crate) fn render(&self) -> String {
        match self {
            Entry::User(text) => format!("user: {text}"),
            Entry::Assistant(text) => format!("assistant: {text}"),
            Entry::System(text) => format!("system: {text}"),
            Entry::Call { name, arguments } => format!("call {name} {arguments}"),
            Entry::Output(output) => format!("output: {output}"),
            Entry::Other(kind) => format!("({kind})"),
        }
    }
}

/// Whether a user message is context that Codex or baton inject rather than something a person
/// typed: a block wrapped in a tag (`<environment_context>…</environment_context>`,
/// `<user_instructions>…`) or an `# AGENTS.md instructions` block.
pub fn is_context_message(text: &str) -> bool {
    let text = text.trim();
    (text.starts_with('<') && text.ends_with('>')) || text.starts_with("# AGENTS.md instructions")
}

pub(crate) fn entries(request: &RecordedRequest) -> Vec<Entry> {
    match request.wire {
        Wire::Responses => responses_entries(&request.body),
        Wire::Chat => chat_entries(&request.body),
    }
}

pub(crate) fn instructions(request: &RecordedRequest) -> Option<String> {
    match request.wire {
        Wire::Responses => request
            .body
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_owned),
        Wire::Chat => chat_messages(&request.body)
            .first()
            .filter(|m| role(m) == "system")
            .map(|m| text_of(m.get("content"))),
    }
}

pub(crate) fn tool_names(request: &RecordedRequest) -> Vec<String> {
    let tools = request.body.get("tools").and_then(Value::as_array);
    tools
        .into_iter()
        .flatten()
        .filter_map(|tool| {
            // Responses: {type, name, …}; Chat: {type, function: {name, …}}.
            tool.get("name")
                .or_else(|| tool.get("function").and_then(|f| f.get("name")))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

fn responses_entries(body: &Value) -> Vec<Entry> {
    let input = match body.get("input") {
        Some(Value::Array(items)) => items.clone(),
        // The Responses API also accepts a bare string as the user's input.
        Some(Value::String(text)) => {
            return vec![Entry::User(text.clone())];
        }
        _ => Vec::new(),
    };
    input
        .iter()
        .map(|item| {
            let kind = item
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("message");
            match kind {
                "message" => message_entry(role(item), text_of(item.get("content"))),
                "function_call" => Entry::Call {
                    name: str_field(item, "name"),
                    arguments: str_field(item, "arguments"),
                },
                "custom_tool_call" => Entry::Call {
                    name: str_field(item, "name"),
                    arguments: str_field(item, "input"),
                },
                "function_call_output" | "custom_tool_call_output" => {
                    Entry::Output(text_of(item.get("output")))
                }
                other => Entry::Other(other.to_owned()),
            }
        })
        .collect()
}

fn chat_entries(body: &Value) -> Vec<Entry> {
    let messages = chat_messages(body);
    // The leading system message carries the instructions, which `conversation` leaves out.
    let skip = usize::from(messages.first().is_some_and(|m| role(m) == "system"));
    let mut entries = Vec::new();
    for message in &messages[skip..] {
        match role(message) {
            "tool" => entries.push(Entry::Output(text_of(message.get("content")))),
            role => {
                let text = text_of(message.get("content"));
                let calls = message.get("tool_calls").and_then(Value::as_array);
                if !text.is_empty() || calls.is_none() {
                    entries.push(message_entry(role, text));
                }
                for call in calls.into_iter().flatten() {
                    let function = call.get("function").unwrap_or(&Value::Null);
                    entries.push(Entry::Call {
                        name: str_field(function, "name"),
                        arguments: str_field(function, "arguments"),
                    });
                }
            }
        }
    }
    entries
}

fn chat_messages(body: &Value) -> Vec<Value> {
    body.get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn message_entry(role: &str, text: String) -> Entry {
    match role {
        "user" => Entry::User(text),
        "assistant" => Entry::Assistant(text),
        _ => Entry::System(text),
    }
}

fn role(item: &Value) -> &str {
    item.get("role").and_then(Value::as_str).unwrap_or("")
}

fn str_field(item: &Value, key: &str) -> String {
    item.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The text of message content or a tool output: a string, or an array of parts with `text`.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}
