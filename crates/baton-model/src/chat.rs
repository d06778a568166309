//! The Chat Completions wire: `POST {base_url}/chat/completions` with `stream: true`, spoken
//! by most OpenAI-compatible servers (Ollama, vLLM, llama.cpp, …).

use std::collections::BTreeMap;

use baton_protocol::ResponseItem;
use serde_json::{Value, json};

use crate::history::{Entry, entries};
use crate::sse::SseEvent;
use crate::stream::{StreamCollector, StreamFailure, StreamStep};
use crate::{ModelRequest, ModelResponse, TokenUsage};

pub(crate) const PATH: &str = "chat/completions";

pub(crate) fn request_body(request: &ModelRequest) -> Value {
    let mut body = json!({
        "model": request.model,
        "messages": messages(request),
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    // Some servers reject an empty tools array.
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({"type": "function", "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                }})
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    if let Some(effort) = &request.reasoning_effort {
        body["reasoning_effort"] = json!(effort);
    }
    body
}

fn messages(request: &ModelRequest) -> Vec<Value> {
    let mut messages = Vec::new();
    if !request.instructions.is_empty() {
        messages.push(json!({"role": "system", "content": request.instructions}));
    }
    for entry in entries(&request.input) {
        match entry {
            Entry::Message { role, texts } => {
                let role = match role {
                    "assistant" => "assistant",
                    "developer" | "system" => "system",
                    _ => "user",
                };
                messages.push(json!({"role": role, "content": texts.join("\n")}));
            }
            Entry::Call {
                name,
                arguments,
                call_id,
            } => {
                let call = json!({"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments}});
                // Calls join the assistant message just before them (its text, or earlier
                // calls): one assistant turn, as the API itself returns it.
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" => match last.get_mut("tool_calls") {
                        Some(Value::Array(calls)) => calls.push(call),
                        _ => last["tool_calls"] = json!([call]),
                    },
                    _ => messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            Entry::Output { call_id, output } => {
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            // Chat servers have no way to take reasoning back.
            Entry::Reasoning(_) => {}
        }
    }
    messages
}

#[derive(Debug, Default)]
pub(crate) struct ChatCollector {
    text: String,
    /// Tool calls by their `index` in the deltas.
    calls: BTreeMap<u64, PartialCall>,
    usage: Option<TokenUsage>,
    finish_reason_seen: bool,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

impl StreamCollector for ChatCollector {
    fn on_event(&mut self, event: &SseEvent) -> Result<StreamStep, StreamFailure> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(StreamStep::Complete);
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|error| StreamFailure::unreadable(data, &error))?;
        // Several servers report a failure inside the stream rather than with a status.
        if let Some(error) = chunk.get("error") {
            return Err(StreamFailure::from_error_object(error));
        }
        if let Some(usage) = chunk.get("usage").and_then(usage) {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Ok(StreamStep::Continue);
        };
        if let Some(content) = choice.pointer("/delta/content").and_then(Value::as_str) {
            self.text.push_str(content);
        }
        if let Some(Value::Array(deltas)) = choice.pointer("/delta/tool_calls") {
            for delta in deltas {
                self.add_tool_call_delta(delta);
            }
        }
        if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
            self.finish_reason_seen = true;
        }
        Ok(StreamStep::Continue)
    }

    fn finish(self) -> ModelResponse {
        let mut items = Vec::new();
        if !self.text.trim().is_empty() {
            items.push(ResponseItem::assistant_message(self.text));
        }
        for (index, call) in self.calls {
            items.push(ResponseItem::FunctionCall {
                name: call.name,
                arguments: if call.arguments.trim().is_empty() {
                    "{}".to_owned()
                } else {
                    call.arguments
                },
                // A few servers leave the id out; the history needs one to pair the output.
                call_id: if call.id.is_empty() {
                    format!("call_{index}")
                } else {
                    call.id
                },
            });
        }
        ModelResponse {
            items,
            usage: self.usage,
        }
    }

    /// Servers that omit `[DONE]` still end a complete answer with a `finish_reason`.
    fn complete_at_end_of_stream(&self) -> bool {
        self.finish_reason_seen
    }
}

impl ChatCollector {
    /// The id and name arrive in the first delta of a call, the arguments in pieces after it;
    /// the `index` says which call a piece belongs to.
    fn add_tool_call_delta(&mut self, delta: &Value) {
        let id = delta.get("id").and_then(Value::as_str).unwrap_or_default();
        let index = match delta.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            // Without an index (some servers): a new id starts a new call, else it continues
            // the last one.
            None => {
                let last = self.calls.keys().next_back().copied();
                match last {
                    Some(last) if id.is_empty() || self.calls[&last].id == id => last,
                    // After a server-sent index of u64::MAX, the lowest free one (there is
                    // one: the map holds fewer than u64::MAX calls).
                    Some(last) => last.checked_add(1).unwrap_or_else(|| {
                        (0..)
                            .find(|index| !self.calls.contains_key(index))
                            .unwrap_or_default()
                    }),
                    None => 0,
                }
            }
        };
        let call = self.calls.entry(index).or_default();
        if call.id.is_empty() {
            call.id = id.to_owned();
        }
        let function = delta.get("function").unwrap_or(&Value::Null);
        if let Some(name) = function.get("name").and_then(Value::as_str) {
            // Some servers repeat the whole name in every delta.
            if call.name.is_empty() {
                call.name = name.to_owned();
            }
        }
        if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
            call.arguments.push_str(arguments);
        }
    }
}

fn usage(value: &Value) -> Option<TokenUsage> {
    TokenUsage::from_wire(
        value,
        "prompt_tokens",
        "completion_tokens",
        "/prompt_tokens_details/cached_tokens",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[Value]) -> ModelResponse {
        let mut collector = ChatCollector::default();
        for chunk in chunks {
            let event = SseEvent {
                event: None,
                data: chunk.to_string(),
            };
            assert!(matches!(
                collector.on_event(&event),
                Ok(StreamStep::Continue)
            ));
        }
        collector.finish()
    }

    #[test]
    fn reassembles_interleaved_tool_calls_by_index() {
        let delta =
            |calls: Value| json!({"choices": [{"index": 0, "delta": {"tool_calls": calls}}]});
        let response = collect(&[
            delta(json!([{"index": 0, "id": "a", "function": {"name": "shell", "arguments": ""}}])),
            delta(
                json!([{"index": 1, "id": "b", "function": {"name": "apply_patch", "arguments": "{\"in"}}]),
            ),
            delta(json!([{"index": 0, "function": {"arguments": "{\"command\":"}}])),
            delta(json!([{"index": 1, "function": {"arguments": "put\":\"x\"}"}}])),
            delta(json!([{"index": 0, "function": {"arguments": "[\"ls\"]}"}}])),
        ]);
        assert_eq!(
            response.items,
            vec![
                ResponseItem::FunctionCall {
                    name: "shell".into(),
                    arguments: r#"{"command":["ls"]}"#.into(),
                    call_id: "a".into()
                },
                ResponseItem::FunctionCall {
                    name: "apply_patch".into(),
                    arguments: r#"{"input":"x"}"#.into(),
                    call_id: "b".into()
                },
            ]
        );
    }

    #[test]
    fn huge_server_numbers_do_not_overflow() {
        let delta = |calls: Value| json!({"choices": [{"delta": {"tool_calls": calls}}]});
        let response = collect(&[
            delta(
                json!([{"index": u64::MAX, "id": "a", "function": {"name": "shell", "arguments": "{}"}}]),
            ),
            delta(json!([{"id": "b", "function": {"name": "shell", "arguments": "{\"x\":1}"}}])),
            json!({"choices": [], "usage": {"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX}}),
        ]);
        let call_ids: Vec<_> = response
            .items
            .iter()
            .map(|item| match item {
                ResponseItem::FunctionCall { call_id, .. } => call_id.as_str(),
                _ => "",
            })
            .collect();
        // Two calls, not one merged: the second got a free index.
        assert_eq!(call_ids, vec!["b", "a"]);
        assert_eq!(
            response.usage,
            Some(TokenUsage {
                input_tokens: u64::MAX,
                cached_input_tokens: 0,
                output_tokens: u64::MAX,
                total_tokens: u64::MAX,
            })
        );
    }

    #[test]
    fn calls_without_index_are_told_apart_by_id() {
        let delta = |calls: Value| json!({"choices": [{"delta": {"tool_calls": calls}}]});
        let response = collect(&[
            delta(json!([{"id": "a", "function": {"name": "shell", "arguments": "{}"}}])),
            delta(json!([{"id": "b", "function": {"name": "shell", "arguments": "{\"x\""}}])),
            delta(json!([{"function": {"arguments": ":1}"}}])),
        ]);
        let arguments: Vec<_> = response
            .items
            .iter()
            .map(|item| match item {
                ResponseItem::FunctionCall { arguments, .. } => arguments.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(arguments, vec!["{}", "{\"x\":1}"]);
    }
}
