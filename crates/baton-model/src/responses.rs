//! The OpenAI Responses wire: `POST {base_url}/responses` with `stream: true`.

use baton_protocol::ResponseItem;
use serde_json::{Value, json};

use crate::history::{Entry, entries};
use crate::sse::SseEvent;
use crate::stream::{StreamCollector, StreamFailure, StreamStep};
use crate::{ModelRequest, ModelResponse, TokenUsage};

pub(crate) const PATH: &str = "responses";

pub(crate) fn request_body(request: &ModelRequest) -> Value {
    let input: Vec<Value> = entries(&request.input).iter().map(input_item).collect();
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|tool| {
            json!({
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
                "strict": false,
            })
        })
        .collect();
    let mut body = json!({
        "model": request.model,
        "instructions": request.instructions,
        "input": input,
        "tools": tools,
        "tool_choice": "auto",
        // The agent loop runs several calls of one response (read-only ones concurrently).
        "parallel_tool_calls": true,
        "stream": true,
        "store": false,
    });
    if let Some(key) = &request.prompt_cache_key {
        body["prompt_cache_key"] = json!(key);
    }
    if let Some(effort) = &request.reasoning_effort {
        body["reasoning"] = json!({ "effort": effort });
        // With `store: false` the reasoning can only be carried to the next request
        // encrypted; only reasoning models accept asking for it.
        body["include"] = json!(["reasoning.encrypted_content"]);
    }
    body
}

fn input_item(entry: &Entry) -> Value {
    match entry {
        Entry::Message { role, texts } => {
            // The API accepts only `output_text` in assistant messages and only input parts
            // in the others, whatever the transcript recorded.
            let part_type = if *role == "assistant" {
                "output_text"
            } else {
                "input_text"
            };
            let content: Vec<Value> = texts
                .iter()
                .map(|text| json!({"type": part_type, "text": text}))
                .collect();
            json!({"type": "message", "role": role, "content": content})
        }
        Entry::Reasoning(item) => serde_json::to_value(item).unwrap_or(Value::Null),
        Entry::Call {
            name,
            arguments,
            call_id,
        } => {
            json!({"type": "function_call", "name": name, "arguments": arguments, "call_id": call_id})
        }
        Entry::Output { call_id, output } => {
            json!({"type": "function_call_output", "call_id": call_id, "output": output})
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct ResponsesCollector {
    items: Vec<ResponseItem>,
    usage: Option<TokenUsage>,
}

impl StreamCollector for ResponsesCollector {
    fn on_event(&mut self, event: &SseEvent) -> Result<StreamStep, StreamFailure> {
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|error| StreamFailure::unreadable(&event.data, &error))?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        match kind {
            "response.output_item.done" => {
                if let Some(item) = data.get("item").and_then(output_item) {
                    self.items.push(item);
                }
            }
            "response.completed" => {
                let response = data.get("response").unwrap_or(&Value::Null);
                self.usage = response.get("usage").and_then(usage);
                // Servers that skip the per-item events still list the output here.
                if self.items.is_empty() {
                    let output = response.get("output").and_then(Value::as_array);
                    self.items = output
                        .into_iter()
                        .flatten()
                        .filter_map(output_item)
                        .collect();
                }
                return Ok(StreamStep::Complete);
            }
            "response.failed" => {
                let error = data.pointer("/response/error").unwrap_or(&Value::Null);
                return Err(StreamFailure::from_error_object(error));
            }
            "response.incomplete" => {
                let reason = data
                    .pointer("/response/incomplete_details/reason")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                return Err(StreamFailure::Failed {
                    code: Some(reason.to_owned()),
                    message: format!("the response is incomplete ({reason})"),
                    retryable: false,
                });
            }
            "error" => {
                // OpenAI puts code and message at the top level; some servers nest them.
                let error = data.get("error").filter(|e| e.is_object()).unwrap_or(&data);
                return Err(StreamFailure::from_error_object(error));
            }
            _ => {}
        }
        Ok(StreamStep::Continue)
    }

    fn finish(self) -> ModelResponse {
        ModelResponse {
            items: self.items,
            usage: self.usage,
        }
    }

    fn complete_at_end_of_stream(&self) -> bool {
        false
    }
}

/// An output item baton keeps; kinds it does not know (web search calls…) are left out.
fn output_item(value: &Value) -> Option<ResponseItem> {
    match serde_json::from_value(value.clone()) {
        Ok(ResponseItem::Other) => None,
        Ok(item) => Some(item),
        Err(error) => {
            let kind = value.get("type").and_then(Value::as_str).unwrap_or("?");
            tracing::warn!("left out an output item of type {kind} that does not parse: {error}");
            None
        }
    }
}

fn usage(value: &Value) -> Option<TokenUsage> {
    TokenUsage::from_wire(
        value,
        "input_tokens",
        "output_tokens",
        "/input_tokens_details/cached_tokens",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_token_counts_saturate() {
        let mut collector = ResponsesCollector::default();
        let event = SseEvent {
            event: None,
            data: json!({"type": "response.completed", "response": {"output": [],
                "usage": {"input_tokens": u64::MAX, "output_tokens": 1,
                    "input_tokens_details": {"cached_tokens": 7}}}})
            .to_string(),
        };
        assert!(matches!(
            collector.on_event(&event),
            Ok(StreamStep::Complete)
        ));
        assert_eq!(
            collector.finish().usage,
            Some(TokenUsage {
                input_tokens: u64::MAX,
                cached_input_tokens: 7,
                output_tokens: 1,
                total_tokens: u64::MAX,
            })
        );
    }
}
