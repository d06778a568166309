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

impl ResponseItem {
    /// Parses one item from JSON text, like its `Deserialize` impl but faster for the common
    /// item types: the derived impl of an internally tagged enum buffers the whole object
    /// before it looks at the tag, which dominates the time to rehydrate a long transcript.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        #[derive(Deserialize)]
        struct Message {
            role: String,
            content: Vec<FlatContent>,
        }
        #[derive(Deserialize)]
        struct FlatContent {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            text: Option<String>,
        }
        #[derive(Deserialize)]
        struct FunctionCall {
            name: String,
            arguments: String,
            call_id: String,
        }
        #[derive(Deserialize)]
        struct FunctionCallOutput {
            call_id: String,
            #[serde(deserialize_with = "output_as_text")]
            output: String,
        }

        let kind = match leading_type(text) {
            Some(kind) => std::borrow::Cow::Borrowed(kind),
            None => serde_json::from_str::<Tag<'_>>(text)?.kind,
        };
        match kind.as_ref() {
            "message" => {
                let message: Message = serde_json::from_str(text)?;
                let content = message
                    .content
                    .into_iter()
                    .map(|part| match (part.kind.as_str(), part.text) {
                        ("input_text", Some(text)) => ContentItem::InputText { text },
                        ("output_text", Some(text)) => ContentItem::OutputText { text },
                        _ => ContentItem::Other,
                    })
                    .collect();
                Ok(Self::Message {
                    role: message.role,
                    content,
                })
            }
            "function_call" => {
                let call: FunctionCall = serde_json::from_str(text)?;
                Ok(Self::FunctionCall {
                    name: call.name,
                    arguments: call.arguments,
                    call_id: call.call_id,
                })
            }
            "function_call_output" => {
                let output: FunctionCallOutput = serde_json::from_str(text)?;
                Ok(Self::FunctionCallOutput {
                    call_id: output.call_id,
                    output: output.output,
                })
            }
            _ => serde_json::from_str(text),
        }
    }
}

/// The `type` of a JSON object whose writer put it first (baton and Codex do), read without
/// parsing the rest; `None` when it is not first.
pub fn leading_type(json: &str) -> Option<&str> {
    let rest = json.strip_prefix("{\"type\":\"")?;
    let (kind, _) = rest.split_once('"')?;
    // An escape would need real parsing; such a type is not one of the fast ones anyway.
    (!kind.contains('\\')).then_some(kind)
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
    /// A string (the common case) is taken as it is, without building a `Value` first.
    struct OutputVisitor;

    impl<'de> serde::de::Visitor<'de> for OutputVisitor {
        type Value = String;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a tool output: a string, an array of content items or an object")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<String, E> {
            Ok(text.to_owned())
        }

        fn visit_string<E: serde::de::Error>(self, text: String) -> Result<String, E> {
            Ok(text)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<String, A::Error> {
            let value = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
            Ok(value_text(&value))
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<String, A::Error> {
            let value = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            Ok(value_text(&value))
        }

        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    deserializer.deserialize_any(OutputVisitor)
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
    fn from_json_agrees_with_deserialize() {
        let samples = [
            json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": "x"}]}),
            json!({"role": "assistant", "type": "message", "content": [{"type": "output_text", "text": "a", "annotations": []}], "id": "m1"}),
            json!({"type": "function_call", "name": "shell", "arguments": "{}", "call_id": "c", "id": "fc"}),
            json!({"type": "function_call_output", "call_id": "c", "output": "done"}),
            json!({"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": "a"}]}),
            json!({"type": "function_call_output", "call_id": "c", "output": {"content": "x", "success": true}}),
            json!({"type": "function_call_output", "call_id": "c", "output": null}),
            json!({"type": "reasoning", "summary": [], "encrypted_content": "e"}),
            json!({"type": "custom_tool_call", "name": "apply_patch", "input": "p", "call_id": "c"}),
            json!({"type": "web_search_call", "action": {}}),
        ];
        for sample in samples {
            let text = sample.to_string();
            let derived: ResponseItem = serde_json::from_str(&text).expect("derived");
            assert_eq!(
                ResponseItem::from_json(&text).expect("fast"),
                derived,
                "{text}"
            );
        }
        assert!(ResponseItem::from_json("{\"type\":\"message\"}").is_err());
        assert!(ResponseItem::from_json("not json").is_err());
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
