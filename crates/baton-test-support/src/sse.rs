//! Turning a [`Reply`] into what goes on the wire: SSE events in the shape of each API.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{RecordedRequest, Reply, ReplyItem, Wire};

/// How the server answers one request.
pub(crate) struct Answer {
    /// Waited before anything is sent.
    pub delay: Duration,
    /// Waited for before anything is sent.
    pub gates: Vec<crate::Gate>,
    pub body: AnswerBody,
}

pub(crate) enum AnswerBody {
    Json {
        status: u16,
        body: Value,
        retry_after: Option<u64>,
    },
    /// A `text/event-stream` answer; the connection is closed after the last step.
    Stream(Vec<Step>),
}

pub(crate) enum Step {
    Write(String),
    Sleep(Duration),
}

const CONTEXT_LENGTH_MESSAGE: &str =
    "Your input exceeds the context window of this model. Please adjust your input and try again.";

pub(crate) fn answer(reply: &Reply, request: &RecordedRequest) -> Answer {
    let body = match reply {
        Reply::Stall { delay, then } => {
            let mut answer = answer(then, request);
            answer.delay += *delay;
            return answer;
        }
        Reply::Hold { gate, then } => {
            let mut answer = answer(then, request);
            answer.gates.push(gate.clone());
            return answer;
        }
        Reply::Status {
            status,
            body,
            retry_after,
        } => AnswerBody::Json {
            status: *status,
            body: body.clone(),
            retry_after: *retry_after,
        },
        Reply::Items(items) => stream(request, |encoder| encoder.items(items)),
        Reply::StallMidStream { delay, items } => stream(request, |encoder| {
            encoder.steps.push(Step::Sleep(*delay));
            encoder.items(items);
        }),
        Reply::DropMidStream => stream(request, Encoder::partial),
        Reply::ContextLengthExceeded => match request.wire {
            Wire::Responses => stream(request, Encoder::context_length_failure),
            Wire::Chat => AnswerBody::Json {
                status: 400,
                body: json!({"error": {
                    "message": CONTEXT_LENGTH_MESSAGE,
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }}),
                retry_after: None,
            },
        },
    };
    Answer {
        delay: Duration::ZERO,
        gates: Vec::new(),
        body,
    }
}

fn stream<'a>(request: &'a RecordedRequest, build: impl FnOnce(&mut Encoder<'a>)) -> AnswerBody {
    let mut encoder = Encoder::new(request);
    build(&mut encoder);
    AnswerBody::Stream(encoder.steps)
}

/// Builds the event stream of one response. The opening event(s) are written on creation, so
/// a stall or a drop happens after the stream has visibly started.
struct Encoder<'a> {
    request: &'a RecordedRequest,
    /// Derived from the request body: ids are unique per request yet a pure function of it.
    id: String,
    model: String,
    steps: Vec<Step>,
    sequence: u64,
}

impl<'a> Encoder<'a> {
    fn new(request: &'a RecordedRequest) -> Self {
        let mut hasher = DefaultHasher::new();
        request.body.to_string().hash(&mut hasher);
        let mut encoder = Self {
            request,
            id: format!("{:016x}", hasher.finish()),
            model: request.model().unwrap_or("scripted-model").to_owned(),
            steps: Vec::new(),
            sequence: 0,
        };
        match request.wire {
            Wire::Responses => {
                let response = encoder.response_object("in_progress", Vec::new(), Value::Null);
                encoder.event("response.created", json!({"response": response}));
            }
            Wire::Chat => encoder.chunk(json!({"role": "assistant", "content": ""}), None),
        }
        encoder
    }

    fn items(&mut self, items: &[ReplyItem]) {
        match self.request.wire {
            Wire::Responses => self.responses_items(items),
            Wire::Chat => self.chat_items(items),
        }
    }

    /// One piece of a first message, then nothing more.
    fn partial(&mut self) {
        match self.request.wire {
            Wire::Responses => {
                let item_id = format!("msg_{}_0", self.id);
                let item = json!({"type": "message", "id": item_id, "status": "in_progress",
                    "role": "assistant", "content": []});
                self.event(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": item}),
                );
                self.event(
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": "partial"}),
                );
            }
            Wire::Chat => self.chunk(json!({"content": "partial"}), None),
        }
    }

    fn context_length_failure(&mut self) {
        let error = json!({"code": "context_length_exceeded", "message": CONTEXT_LENGTH_MESSAGE});
        let mut response = self.response_object("failed", Vec::new(), Value::Null);
        response["error"] = error;
        self.event("response.failed", json!({"response": response}));
    }

    fn responses_items(&mut self, items: &[ReplyItem]) {
        let mut output = Vec::new();
        let mut output_text = String::new();
        for (index, item) in items.iter().enumerate() {
            let done = match item {
                ReplyItem::Text(text) => {
                    output_text.push_str(text);
                    self.responses_message(index, text)
                }
                ReplyItem::ToolCall { name, arguments } => {
                    self.responses_function_call(index, name, &arguments.to_string())
                }
            };
            self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": done}),
            );
            output.push(done);
        }
        let usage = self.usage(&output_text, items);
        let response = self.response_object("completed", output, usage);
        self.event("response.completed", json!({"response": response}));
    }

    /// `response.output_item.added` for `added`, then `text` in pieces as `delta_event`
    /// events: `delta` with the piece as its `delta` field.
    fn added_then_deltas(
        &mut self,
        index: usize,
        added: Value,
        delta_event: &str,
        delta: Value,
        text: &str,
    ) {
        self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        for piece in pieces(text) {
            let mut event = delta.clone();
            event["delta"] = json!(piece);
            self.event(delta_event, event);
        }
    }

    fn responses_message(&mut self, index: usize, text: &str) -> Value {
        let item_id = format!("msg_{}_{index}", self.id);
        let added = json!({"type": "message", "id": item_id, "status": "in_progress",
            "role": "assistant", "content": []});
        let delta = json!({"item_id": item_id, "output_index": index, "content_index": 0});
        self.added_then_deltas(index, added, "response.output_text.delta", delta, text);
        self.event(
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text}),
        );
        json!({"type": "message", "id": item_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]})
    }

    fn responses_function_call(&mut self, index: usize, name: &str, arguments: &str) -> Value {
        let item_id = format!("fc_{}_{index}", self.id);
        let call_id = self.call_id(index);
        let added = json!({"type": "function_call", "id": item_id, "status": "in_progress",
            "name": name, "arguments": "", "call_id": call_id});
        let delta = json!({"item_id": item_id, "output_index": index});
        let event = "response.function_call_arguments.delta";
        self.added_then_deltas(index, added, event, delta, arguments);
        self.event(
            "response.function_call_arguments.done",
            json!({"item_id": item_id, "output_index": index, "arguments": arguments}),
        );
        json!({"type": "function_call", "id": item_id, "status": "completed", "name": name,
            "arguments": arguments, "call_id": call_id})
    }

    /// Text first (the Chat API has one message per choice), then each call: id and name in
    /// one chunk, the arguments in several.
    fn chat_items(&mut self, items: &[ReplyItem]) {
        let texts = reply_texts(items);
        let text = texts.join("\n");
        for piece in pieces(&text) {
            self.chunk(json!({"content": piece}), None);
        }
        let calls = items.iter().filter_map(|item| match item {
            ReplyItem::ToolCall { name, arguments } => Some((name, arguments.to_string())),
            ReplyItem::Text(_) => None,
        });
        let mut any_call = false;
        for (index, (name, arguments)) in calls.enumerate() {
            any_call = true;
            let call_id = self.call_id(index);
            self.chunk(
                json!({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                None,
            );
            for piece in pieces(&arguments) {
                self.chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    None,
                );
            }
        }
        let finish_reason = if any_call { "tool_calls" } else { "stop" };
        self.chunk(json!({}), Some(finish_reason));
        let include_usage = self
            .request
            .body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if include_usage {
            let usage = self.usage(&text, items);
            let chat_usage = json!({
                "prompt_tokens": usage["input_tokens"],
                "prompt_tokens_details": {"cached_tokens": usage["input_tokens_details"]["cached_tokens"]},
                "completion_tokens": usage["output_tokens"],
                "total_tokens": usage["total_tokens"],
            });
            let mut chunk = self.chunk_object(Vec::new());
            chunk["usage"] = chat_usage;
            self.data(&chunk.to_string());
        }
        self.data("[DONE]");
    }

    fn call_id(&self, index: usize) -> String {
        format!("call_{}_{index}", self.id)
    }

    fn usage(&self, text: &str, items: &[ReplyItem]) -> Value {
        usage(self.request, text, items)
    }

    fn response_object(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        json!({
            "id": format!("resp_{}", self.id),
            "object": "response",
            "created_at": 1_700_000_000,
            "status": status,
            "model": self.model,
            "output": output,
            "usage": usage,
            "error": null,
        })
    }

    fn event(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        self.steps
            .push(Step::Write(format!("event: {kind}\ndata: {data}\n\n")));
    }

    fn chunk(&mut self, delta: Value, finish_reason: Option<&str>) {
        let chunk = self.chunk_object(vec![json!({
            "index": 0,
            "delta": delta,
            "finish_reason": finish_reason,
        })]);
        self.data(&chunk.to_string());
    }

    fn chunk_object(&self, choices: Vec<Value>) -> Value {
        json!({
            "id": format!("chatcmpl-{}", self.id),
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": self.model,
            "choices": choices,
        })
    }

    fn data(&mut self, data: &str) {
        self.steps.push(Step::Write(format!("data: {data}\n\n")));
    }
}

/// The usage the server reports for `items` answering `request` (see the crate docs); `text`
/// is the text the stream carries.
fn usage(request: &RecordedRequest, text: &str, items: &[ReplyItem]) -> Value {
    let call_bytes: usize = items
        .iter()
        .map(|item| match item {
            ReplyItem::ToolCall { name, arguments } => name.len() + arguments.to_string().len(),
            ReplyItem::Text(_) => 0,
        })
        .sum();
    let input_tokens = request.body.to_string().len().div_ceil(4);
    let output_tokens = (text.len() + call_bytes).div_ceil(4) + 1;
    json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": input_tokens / 2},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    })
}

/// The texts of a reply, in order (its tool calls left out).
fn reply_texts(items: &[ReplyItem]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|item| match item {
            ReplyItem::Text(text) => Some(text.as_str()),
            ReplyItem::ToolCall { .. } => None,
        })
        .collect()
}

/// The Responses-shaped usage object the server reports when it answers `request` with
/// `reply`; `None` for replies that report none (errors, dropped streams).
pub(crate) fn reported_usage(request: &RecordedRequest, reply: &Reply) -> Option<Value> {
    match reply {
        Reply::Stall { then, .. } | Reply::Hold { then, .. } => reported_usage(request, then),
        Reply::Items(items) | Reply::StallMidStream { items, .. } => {
            let texts = reply_texts(items);
            // The Responses stream concatenates the texts; the Chat stream joins them with
            // newlines (one message per choice).
            let text = match request.wire {
                Wire::Responses => texts.concat(),
                Wire::Chat => texts.join("\n"),
            };
            Some(usage(request, &text, items))
        }
        _ => None,
    }
}

/// Splits text into up to three pieces on character boundaries, so clients must reassemble.
fn pieces(text: &str) -> Vec<&str> {
    let chars = text.chars().count();
    if chars < 3 {
        return vec![text];
    }
    let cut = |n: usize| text.char_indices().nth(n).map_or(text.len(), |(i, _)| i);
    let (first, second) = (cut(chars / 3), cut(2 * chars / 3));
    vec![&text[..first], &text[first..second], &text[second..]]
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn pieces_rejoin_to_the_text_on_char_boundaries() {
        for text in ["", "ab", "abc", "héllo wörld ✓", "{\"command\":[\"ls\"]}"] {
            assert_eq!(pieces(text).concat(), text);
        }
        assert_eq!(pieces("abcdef"), vec!["ab", "cd", "ef"]);
    }
}
