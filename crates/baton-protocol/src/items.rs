use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// One item of the model conversation, in the OpenAI Responses API shape that Codex also
/// writes into its rollouts.
///
/// Item types baton does not know are read as [`ResponseItem::Other`] and left out of the
/// history sent to a model, so a transcript from a newer writer still loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseItem {
    Message {
        role: String,
        content: Vec<ContentItem>,
    },
    Reasoning {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default)]
        summary: Vec<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<String>,
    },
    FunctionCall {
        name: String,
        /// The arguments as the model sent them: a JSON document in a string.
        arguments: String,
        call_id: String,
    },
    FunctionCallOutput {
        call_id: String,
        #[serde(deserialize_with = "output_as_text")]
        output: String,
    },
    /// Codex's free-form tools (its `apply_patch` grammar tool among them).
    CustomToolCall {
        name: String,
        input: String,
        call_id: String,
    },
    CustomToolCallOutput {
        call_id: String,
        #[serde(deserialize_with = "output_as_text")]
        output: String,
    },
    /// Codex's older built-in shell tool.
    LocalShellCall {
        #[serde(default)]
        call_id: Option<String>,
        #[serde(default)]
        action: Value,
    },
    #[serde(other)]
    Other,
}

/// A part of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentItem {
    InputText {
        text: String,
    },
    OutputText {
        text: String,
    },
    #[serde(other)]
    Other,
}

impl ResponseItem {
    pub fn user_message(text: impl Into<String>) -> Self {
        Self::Message {
            role: "user".into(),
            content: vec![ContentItem::InputText { text: text.into() }],
        }
    }

    pub fn developer_message(text: impl Into<String>) -> Self {
        Self::Message {
            role: "developer".into(),
            content: vec![ContentItem::InputText { text: text.into() }],
        }
    }

    pub fn assistant_message(text: impl Into<String>) -> Self {
        Self::Message {
            role: "assistant".into(),
            content: vec![ContentItem::OutputText { text: text.into() }],
        }
    }

    /// The text of a message item, its parts joined; `None` for other items.
    pub fn message_text(&self) -> Option<(&str, String)> {
        match self {
            Self::Message { role, content } => Some((role.as_str(), content_text(content))),
            _ => None,
        }
    }

    /// The call id of a tool call item (any kind).
    pub fn call_id(&self) -> Option<&str> {
        match self {
            Self::FunctionCall { call_id, .. } | Self::CustomToolCall { call_id, .. } => {
                Some(call_id)
            }
            Self::LocalShellCall { call_id, .. } => call_id.as_deref(),
            _ => None,
        }
    }

    /// The call id that a tool output item answers.
    pub fn output_call_id(&self) -> Option<&str> {
        match self {
            Self::FunctionCallOutput { call_id, .. }
            | Self::CustomToolCallOutput { call_id, .. } => Some(call_id),
            _ => None,
        }
    }
}

/// The text parts of a message joined by newlines.
pub fn content_text(content: &[ContentItem]) -> String {
    let mut text = String::new();
    for part in content {
        if let ContentItem::InputText { text: t } | ContentItem::OutputText { text: t } = part {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(t);
        }
    }
    text
}

/// `text` cut to at most `max` characters, with `…` when something was cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A readable rendering of a conversation, for `baton sessions show` and resources.
pub fn history_text(items: &[ResponseItem]) -> String {
    let mut out = String::new();
    for item in items {
        match item {
            ResponseItem::Message { role, content } => {
                out.push_str(&format!("[{role}]\n{}\n\n", content_text(content)));
            }
            ResponseItem::FunctionCall {
                name, arguments, ..
            } => out.push_str(&format!("[tool call] {name} {arguments}\n\n")),
            ResponseItem::CustomToolCall { name, input, .. } => {
                out.push_str(&format!("[tool call] {name}\n{input}\n\n"))
            }
            ResponseItem::FunctionCallOutput { output, .. }
            | ResponseItem::CustomToolCallOutput { output, .. } => {
                out.push_str(&format!("[tool output]\n{output}\n\n"))
            }
            ResponseItem::LocalShellCall { action, .. } => {
                out.push_str(&format!("[tool call] local_shell {action}\n\n"))
            }
            ResponseItem::Reasoning { .. } | ResponseItem::Other => {}
        }
    }
    out
}

/// Tool outputs are strings in baton's files; Codex has also written arrays of content items
/// and `{content, success}` objects. All of them become text.
fn output_as_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let value = Value::deserialize(deserializer)?;
    Ok(value_text(&value))
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("text") {
                Some(Value::String(t)) => t.clone(),
                _ => value_text(part),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Object(map) => match map.get("content") {
            Some(inner) => value_text(inner),
            None => value.to_string(),
        },
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_codex_item_shapes_and_unknown_types() {
        let call: ResponseItem = serde_json::from_value(json!({
            "type": "function_call", "name": "exec_command",
            "arguments": "{\"cmd\":\"ls\"}", "call_id": "c1", "id": "fc_1"
        }))
        .expect("function_call");
        assert_eq!(call.call_id(), Some("c1"));

        let out: ResponseItem = serde_json::from_value(json!({
            "type": "function_call_output", "call_id": "c1",
            "output": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]
        }))
        .expect("array output");
        assert_eq!(
            out,
            ResponseItem::FunctionCallOutput {
                call_id: "c1".into(),
                output: "a\nb".into()
            }
        );

        let unknown: ResponseItem =
            serde_json::from_value(json!({"type": "web_search_call", "action": {}}))
                .expect("unknown type");
        assert_eq!(unknown, ResponseItem::Other);
    }

    #[test]
    fn shorten_counts_characters() {
        assert_eq!(shorten("héllo", 10), "héllo");
        assert_eq!(shorten("héllo", 2), "hé…");
        assert_eq!(shorten("", 0), "");
    }

    #[test]
    fn writes_responses_api_shapes() {
        let value = serde_json::to_value(ResponseItem::user_message("hi")).expect("serialize");
        assert_eq!(
            value,
            json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]})
        );
    }
}
