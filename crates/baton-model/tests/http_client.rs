//! The HTTP client against the scripted model server, on both wires.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baton_model::{
    HttpModelClient, ModelClient, ModelError, ModelProviderInfo, ModelRequest, ResponseItem,
    ToolSpec, WireApi,
};
use baton_test_support::{
    RecordedRequest, Reply, ScriptedModelServer, default_script, first_n_then,
};
use serde_json::{Value, json};

const WIRES: [WireApi; 2] = [WireApi::Responses, WireApi::Chat];
const PROVIDER_NAME: &str = "Scripted Test Provider";

fn provider(server: &ScriptedModelServer, wire_api: WireApi) -> ModelProviderInfo {
    ModelProviderInfo {
        id: "scripted".into(),
        name: PROVIDER_NAME.into(),
        base_url: server.base_url(),
        env_key: None,
        wire_api,
        http_headers: BTreeMap::new(),
        request_max_retries: Some(2),
        stream_idle_timeout_ms: Some(10_000),
    }
}

fn client(provider: ModelProviderInfo) -> HttpModelClient {
    HttpModelClient::new(provider).expect("valid provider")
}

fn request(input: Vec<ResponseItem>) -> ModelRequest {
    ModelRequest {
        model: "test-model".into(),
        instructions: "You are baton.".into(),
        input,
        tools: vec![ToolSpec {
            name: "shell".into(),
            description: "Runs a command.".into(),
            parameters: json!({"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"]}),
        }],
        reasoning_effort: None,
        prompt_cache_key: Some("019c7616-b3e9-7782-9ea8-b53e6bb09329".into()),
    }
}

fn say(text: &str) -> ModelRequest {
    request(vec![ResponseItem::user_message(text)])
}

/// `host:port/path` of the endpoint the server saw, as errors must name it.
fn endpoint(server: &ScriptedModelServer, wire: WireApi) -> String {
    let path = match wire {
        WireApi::Responses => "responses",
        WireApi::Chat => "chat/completions",
    };
    format!("{}/v1/{path}", server.addr())
}

#[tokio::test]
async fn text_answer_on_both_wires() {
    for wire in WIRES {
        let server = ScriptedModelServer::start_default().await.expect("server");
        let response = client(provider(&server, wire))
            .complete(&say("hi"))
            .await
            .expect("response");
        assert_eq!(
            response.items,
            vec![ResponseItem::assistant_message("echo: hi")],
            "{wire:?}"
        );
        let usage = response.usage.expect("usage reported");
        assert!(
            usage.input_tokens > 0 && usage.output_tokens > 0,
            "{usage:?}"
        );
        assert_eq!(usage.total_tokens, usage.input_tokens + usage.output_tokens);
        // The scripted server reports half the input as cached, on both wires.
        assert_eq!(
            usage.cached_input_tokens,
            usage.input_tokens / 2,
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn tool_call_is_reassembled_from_pieces_on_both_wires() {
    for wire in WIRES {
        let server = ScriptedModelServer::start_default().await.expect("server");
        let response = client(provider(&server, wire))
            .complete(&say("shell: ls -la"))
            .await
            .expect("response");
        let [
            ResponseItem::FunctionCall {
                name,
                arguments,
                call_id,
            },
        ] = response.items.as_slice()
        else {
            panic!(
                "{wire:?}: expected one function call, got {:?}",
                response.items
            );
        };
        assert_eq!(name, "shell");
        let arguments: Value = serde_json::from_str(arguments).expect("arguments are JSON");
        assert_eq!(arguments, json!({"command": ["bash", "-lc", "ls -la"]}));
        assert!(call_id.starts_with("call_"), "{call_id}");
    }
}

/// A history with every kind of item, including Codex-only ones.
fn rich_history() -> Vec<ResponseItem> {
    vec![
        ResponseItem::developer_message("be brief"),
        ResponseItem::user_message("first"),
        ResponseItem::assistant_message("echo: first"),
        ResponseItem::user_message("list files"),
        ResponseItem::assistant_message("running ls"),
        ResponseItem::FunctionCall {
            name: "shell".into(),
            arguments: r#"{"command":["ls"]}"#.into(),
            call_id: "c1".into(),
        },
        ResponseItem::FunctionCallOutput {
            call_id: "c1".into(),
            output: "a.txt".into(),
        },
        ResponseItem::CustomToolCall {
            name: "apply_patch".into(),
            input: "*** Begin Patch".into(),
            call_id: "c2".into(),
        },
        ResponseItem::CustomToolCallOutput {
            call_id: "c2".into(),
            output: "patched".into(),
        },
        ResponseItem::LocalShellCall {
            call_id: Some("c3".into()),
            action: json!({"type": "exec", "command": ["pwd"]}),
        },
        ResponseItem::FunctionCallOutput {
            call_id: "c3".into(),
            output: "  /work \n".into(),
        },
        ResponseItem::Other,
    ]
}

#[tokio::test]
async fn request_carries_instructions_history_and_tools_on_both_wires() {
    let expected_conversation = vec![
        "system: be brief",
        "user: first",
        "assistant: echo: first",
        "user: list files",
        "assistant: running ls",
        r#"call shell {"command":["ls"]}"#,
        "output: a.txt",
        r#"call apply_patch {"input":"*** Begin Patch"}"#,
        "output: patched",
        r#"call shell {"command":["pwd"]}"#,
        "output:   /work \n",
    ];
    for wire in WIRES {
        let server = ScriptedModelServer::start_default().await.expect("server");
        let response = client(provider(&server, wire))
            .complete(&request(rich_history()))
            .await
            .expect("response");
        // The default script answers the last tool output: proof the history arrived.
        assert_eq!(
            response.items,
            vec![ResponseItem::assistant_message("tool output: /work")]
        );
        let requests = server.requests();
        let [sent] = requests.as_slice() else {
            panic!("expected one request, got {}", requests.len());
        };
        assert_eq!(sent.conversation(), expected_conversation, "{wire:?}");
        assert_eq!(sent.instructions().as_deref(), Some("You are baton."));
        assert_eq!(sent.tool_names(), vec!["shell"]);
        assert_eq!(sent.model(), Some("test-model"));
        assert_eq!(sent.body["stream"], json!(true));
        let parameters = request(vec![]).tools[0].parameters.clone();
        match wire {
            WireApi::Responses => {
                assert_eq!(sent.path, "/v1/responses");
                assert_eq!(
                    sent.body["tools"][0],
                    json!({"type": "function", "name": "shell", "description": "Runs a command.",
                        "parameters": parameters, "strict": false})
                );
                assert_eq!(sent.body["tool_choice"], json!("auto"));
                assert_eq!(sent.body["parallel_tool_calls"], json!(true));
                assert_eq!(
                    sent.body["prompt_cache_key"],
                    json!("019c7616-b3e9-7782-9ea8-b53e6bb09329")
                );
                assert_eq!(sent.body["store"], json!(false));
                assert_eq!(
                    sent.body["input"][2],
                    json!({"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": "echo: first"}]})
                );
                assert_eq!(
                    sent.body["input"][7],
                    json!({"type": "function_call", "name": "apply_patch",
                        "arguments": "{\"input\":\"*** Begin Patch\"}", "call_id": "c2"})
                );
            }
            WireApi::Chat => {
                assert_eq!(sent.path, "/v1/chat/completions");
                assert_eq!(
                    sent.body["tools"][0],
                    json!({"type": "function", "function": {"name": "shell",
                        "description": "Runs a command.", "parameters": parameters}})
                );
                assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
                // A strict OpenAI-compatible server rejects fields it does not know.
                let keys: Vec<&str> = sent
                    .body
                    .as_object()
                    .expect("object")
                    .keys()
                    .map(String::as_str)
                    .collect();
                assert_eq!(
                    keys,
                    ["messages", "model", "stream", "stream_options", "tools"]
                );
                let messages = sent.body["messages"].as_array().expect("messages");
                assert_eq!(
                    messages[0],
                    json!({"role": "system", "content": "You are baton."})
                );
                // The text before a call and the call form one assistant message.
                assert_eq!(
                    messages[5],
                    json!({"role": "assistant", "content": "running ls", "tool_calls": [
                        {"id": "c1", "type": "function",
                         "function": {"name": "shell", "arguments": "{\"command\":[\"ls\"]}"}}]})
                );
                assert_eq!(
                    messages[6],
                    json!({"role": "tool", "tool_call_id": "c1", "content": "a.txt"})
                );
            }
        }
    }
}

#[tokio::test]
async fn recall_proves_the_history_was_sent() {
    for wire in WIRES {
        let server = ScriptedModelServer::start_default().await.expect("server");
        let mut input = rich_history();
        input.push(ResponseItem::user_message("RECALL"));
        let response = client(provider(&server, wire))
            .complete(&request(input))
            .await
            .expect("response");
        assert_eq!(
            response.items,
            vec![ResponseItem::assistant_message(
                "recall: first | list files (3 tool outputs)"
            )],
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn reasoning_effort_and_custom_headers_are_sent() {
    for wire in WIRES {
        let server = ScriptedModelServer::start_default().await.expect("server");
        let mut provider = provider(&server, wire);
        provider
            .http_headers
            .insert("X-Baton-Test".into(), "yes".into());
        let mut request = say("hi");
        request.reasoning_effort = Some("high".into());
        client(provider).complete(&request).await.expect("response");
        let sent = &server.requests()[0];
        assert_eq!(sent.header("x-baton-test"), Some("yes"));
        assert_eq!(sent.header("authorization"), None, "no env_key, no key");
        match wire {
            WireApi::Responses => assert_eq!(sent.body["reasoning"], json!({"effort": "high"})),
            WireApi::Chat => assert_eq!(sent.body["reasoning_effort"], json!("high")),
        }
    }
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    for wire in WIRES {
        // The counter-based script, written out: the first request fails with 500.
        let seen = AtomicUsize::new(0);
        let server = ScriptedModelServer::start(move |request: &RecordedRequest| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::status(500)
            } else {
                default_script(request)
            }
        })
        .await
        .expect("server");
        let response = client(provider(&server, wire))
            .complete(&say("again"))
            .await
            .expect("succeeds after a retry");
        assert_eq!(
            response.items,
            vec![ResponseItem::assistant_message("echo: again")]
        );
        assert_eq!(server.requests().len(), 2, "{wire:?}");
    }
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after() {
    for wire in WIRES {
        let server =
            ScriptedModelServer::start(first_n_then(1, Reply::rate_limited(1), default_script))
                .await
                .expect("server");
        let started = Instant::now();
        let response = client(provider(&server, wire))
            .complete(&say("hi"))
            .await
            .expect("succeeds after the pause");
        // The backoff alone would retry after about 200 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            response.items,
            vec![ResponseItem::assistant_message("echo: hi")]
        );
        assert_eq!(server.requests().len(), 2);
    }
}

#[tokio::test]
async fn retries_stop_after_max_retries_with_a_clear_error() {
    let server = ScriptedModelServer::start(|_: &RecordedRequest| Reply::status(503))
        .await
        .expect("server");
    let error = client(provider(&server, WireApi::Responses))
        .complete(&say("hi"))
        .await
        .expect_err("keeps failing");
    assert_eq!(server.requests().len(), 3, "one try and two retries");
    let message = error.to_string();
    assert!(message.contains("HTTP 503"), "{message}");
    assert!(message.contains("after 3 attempts"), "{message}");
    assert!(
        message.contains(&endpoint(&server, WireApi::Responses)),
        "{message}"
    );
    assert_eq!(error.http_status(), Some(503));
}

/// Sets an environment variable only this test reads.
fn set_test_env(name: &str, value: &str) {
    // SAFETY: each test uses its own variable name, and nothing in this test binary reads the
    // environment from C code concurrently (every connection goes to an IP literal, so no
    // resolver runs).
    unsafe { std::env::set_var(name, value) };
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_never_shows_the_key() {
    for (wire, env_key) in WIRES.into_iter().zip([
        "BATON_MODEL_TEST_KEY_401_RESPONSES",
        "BATON_MODEL_TEST_KEY_401_CHAT",
    ]) {
        let key = format!("sk-test-{env_key}-d1st1nct1ve");
        let echoed_key = key.clone();
        // Like OpenAI, the server quotes the key it was given.
        let server = ScriptedModelServer::start(move |_: &RecordedRequest| Reply::Status {
            status: 401,
            body: json!({"error": {"message": format!("Incorrect API key provided: {echoed_key}"),
                "type": "invalid_request_error", "code": "invalid_api_key"}}),
            retry_after: None,
        })
        .await
        .expect("server");
        let mut provider = provider(&server, wire);
        provider.env_key = Some(env_key.into());
        let client = client(provider);
        // Set after the client exists: the key is read when a request is made.
        set_test_env(env_key, &key);

        let error = client.complete(&say("hi")).await.expect_err("401");
        let requests = server.requests();
        assert_eq!(requests.len(), 1, "{wire:?}: a 401 is not retried");
        assert_eq!(
            requests[0].header("authorization"),
            Some(format!("Bearer {key}").as_str())
        );
        let message = error.to_string();
        assert!(message.contains(PROVIDER_NAME), "{message}");
        assert!(message.contains(&endpoint(&server, wire)), "{message}");
        assert!(message.contains("401"), "{message}");
        assert!(message.contains("Incorrect API key provided"), "{message}");
        assert!(
            message.ends_with(&format!("; check the API key in ${env_key}")),
            "{message}"
        );
        assert!(!message.contains(&key), "{message}");
        assert!(!format!("{error:?}").contains(&key));
        assert!(!format!("{client:?}").contains(&key));
    }
}

#[tokio::test]
async fn missing_api_key_names_the_variable_and_sends_nothing() {
    let server = ScriptedModelServer::start_default().await.expect("server");
    let mut provider = provider(&server, WireApi::Chat);
    provider.env_key = Some("BATON_MODEL_TEST_KEY_THAT_IS_NEVER_SET".into());
    let error = client(provider)
        .complete(&say("hi"))
        .await
        .expect_err("no key");
    let message = error.to_string();
    assert!(
        message.contains("BATON_MODEL_TEST_KEY_THAT_IS_NEVER_SET"),
        "{message}"
    );
    assert!(message.contains(PROVIDER_NAME), "{message}");
    assert!(matches!(error, ModelError::MissingApiKey { .. }));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn unreachable_server_is_named_with_its_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let provider = ModelProviderInfo {
        id: "down".into(),
        name: String::new(),
        base_url: format!("http://127.0.0.1:{port}/v1"),
        env_key: None,
        wire_api: WireApi::Chat,
        http_headers: BTreeMap::new(),
        request_max_retries: Some(1),
        stream_idle_timeout_ms: Some(10_000),
    };
    let error = client(provider)
        .complete(&say("hi"))
        .await
        .expect_err("nothing listens");
    let message = error.to_string();
    assert!(message.contains("cannot reach"), "{message}");
    assert!(message.contains("down"), "{message}");
    assert!(
        message.contains(&format!("http://127.0.0.1:{port}/v1/chat/completions")),
        "{message}"
    );
    assert!(
        message.contains("after 2 attempts"),
        "connection errors are retried: {message}"
    );
}

#[tokio::test]
async fn dropped_stream_is_retried_on_both_wires() {
    for wire in WIRES {
        let server =
            ScriptedModelServer::start(first_n_then(1, Reply::DropMidStream, default_script))
                .await
                .expect("server");
        let response = client(provider(&server, wire))
            .complete(&say("hi"))
            .await
            .expect("succeeds after a retry");
        assert_eq!(
            response.items,
            vec![ResponseItem::assistant_message("echo: hi")],
            "{wire:?}: nothing of the dropped attempt leaks into the answer"
        );
        assert_eq!(server.requests().len(), 2);
    }
}

#[tokio::test]
async fn a_stream_that_always_drops_fails_clearly() {
    for wire in WIRES {
        let server = ScriptedModelServer::start(|_: &RecordedRequest| Reply::DropMidStream)
            .await
            .expect("server");
        let error = client(provider(&server, wire))
            .complete(&say("hi"))
            .await
            .expect_err("never completes");
        let message = error.to_string();
        assert!(
            message.contains("ended before the response was complete"),
            "{message}"
        );
        assert!(message.contains(&endpoint(&server, wire)), "{message}");
        assert_eq!(server.requests().len(), 3);
    }
}

#[tokio::test]
async fn idle_stream_and_silent_server_are_retried() {
    let stalls = [
        Reply::StallMidStream {
            delay: Duration::from_secs(5),
            items: vec![],
        },
        Reply::Stall {
            delay: Duration::from_secs(5),
            then: Box::new(Reply::text("too late")),
        },
    ];
    for (wire, stall) in WIRES.into_iter().zip(stalls) {
        let server = ScriptedModelServer::start(first_n_then(1, stall, default_script))
            .await
            .expect("server");
        let mut provider = provider(&server, wire);
        provider.stream_idle_timeout_ms = Some(300);
        let response = client(provider)
            .complete(&say("hi"))
            .await
            .expect("succeeds after a retry");
        assert_eq!(
            response.items,
            vec![ResponseItem::assistant_message("echo: hi")]
        );
        assert_eq!(server.requests().len(), 2, "{wire:?}");
    }
}

#[tokio::test]
async fn context_length_exceeded_is_detected_and_not_retried() {
    for wire in WIRES {
        let server = ScriptedModelServer::start(|_: &RecordedRequest| Reply::ContextLengthExceeded)
            .await
            .expect("server");
        let error = client(provider(&server, wire))
            .complete(&say("hi"))
            .await
            .expect_err("too long");
        assert!(error.is_context_length_exceeded(), "{wire:?}: {error}");
        assert_eq!(server.requests().len(), 1);
        assert!(error.to_string().contains(&endpoint(&server, wire)));
    }
    let server = ScriptedModelServer::start(|_: &RecordedRequest| Reply::status(400))
        .await
        .expect("server");
    let error = client(provider(&server, WireApi::Chat))
        .complete(&say("hi"))
        .await
        .expect_err("400");
    assert!(!error.is_context_length_exceeded(), "{error}");
    assert_eq!(server.requests().len(), 1, "a plain 400 is not retried");
}

#[tokio::test]
async fn many_concurrent_requests_are_all_answered() {
    for wire in WIRES {
        let server = ScriptedModelServer::start_default().await.expect("server");
        let client = client(provider(&server, wire));
        let requests: Vec<ModelRequest> = (0..32).map(|i| say(&format!("n{i}"))).collect();
        let responses =
            futures::future::join_all(requests.iter().map(|request| client.complete(request)))
                .await;
        for (i, response) in responses.into_iter().enumerate() {
            assert_eq!(
                response.expect("response").items,
                vec![ResponseItem::assistant_message(format!("echo: n{i}"))]
            );
        }
        assert_eq!(server.requests().len(), 32);
    }
}

/// A server that starts a huge event, sends part of it in small writes, then says nothing more
/// while keeping the connection open until `release` fires.
async fn start_half_event_server(
    event_bytes: usize,
    release: tokio::sync::oneshot::Receiver<()>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        // The request is small; its headers and body come in the first reads.
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.expect("read");
            request.extend_from_slice(&buf[..n]);
        }
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: ";
        socket.write_all(head).await.expect("write");
        let piece = vec![b'x'; 16 * 1024];
        for _ in 0..event_bytes / piece.len() {
            socket.write_all(&piece).await.expect("write");
        }
        let _ = release.await;
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn idle_timeout_fires_in_the_middle_of_a_huge_event() {
    let (release, released) = tokio::sync::oneshot::channel();
    let base_url = start_half_event_server(8 * 1024 * 1024, released).await;
    let provider = ModelProviderInfo {
        id: "slow".into(),
        name: String::new(),
        base_url,
        env_key: None,
        wire_api: WireApi::Chat,
        http_headers: BTreeMap::new(),
        request_max_retries: Some(0),
        stream_idle_timeout_ms: Some(500),
    };
    let error = client(provider)
        .complete(&say("hi"))
        .await
        .expect_err("the event never ends");
    let _ = release.send(());
    let message = error.to_string();
    assert!(message.contains("idle"), "{message}");
}
