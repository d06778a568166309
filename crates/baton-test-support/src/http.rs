//! A minimal HTTP/1.1 server: one request per connection, answered and then closed.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::sse::{AnswerBody, Step, answer};
use crate::{RecordedRequest, Script, Wire};

pub(crate) struct ServerState {
    pub script: Arc<Script>,
    pub requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

/// Headers larger than this are refused; no client of this server sends anything close.
const MAX_HEAD_BYTES: usize = 1024 * 1024;

pub(crate) async fn serve(
    listener: std::net::TcpListener,
    state: ServerState,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("scripted model server: cannot listen: {error}");
            return;
        }
    };
    let state = Arc::new(state);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(handle_connection(stream, Arc::clone(&state)));
                }
                // Out of file descriptors and the like: wait a moment rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

async fn handle_connection(mut stream: TcpStream, state: Arc<ServerState>) {
    // An error here means the client went away; there is nobody left to tell.
    let _ = respond(&mut stream, &state).await;
    let _ = stream.shutdown().await;
}

struct HttpRequest {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn respond(stream: &mut TcpStream, state: &ServerState) -> io::Result<()> {
    let Some(request) = read_request(stream).await? else {
        return Ok(());
    };
    let path = request.path.split('?').next().unwrap_or_default();
    let wire = if path.ends_with("/chat/completions") {
        Wire::Chat
    } else if path.ends_with("/responses") {
        Wire::Responses
    } else {
        let message = format!("no endpoint at {path}; expected …/responses or …/chat/completions");
        return write_json(stream, 404, &error_body(&message), None).await;
    };
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(body) => body,
        Err(error) => {
            let message = format!("the request body is not JSON: {error}");
            return write_json(stream, 400, &error_body(&message), None).await;
        }
    };
    let recorded = RecordedRequest {
        path: request.path,
        headers: request.headers,
        body,
        wire,
    };
    state
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(recorded.clone());
    let reply = (state.script)(&recorded);
    let answer = answer(&reply, &recorded);
    for gate in &answer.gates {
        gate.wait().await;
    }
    tokio::time::sleep(answer.delay).await;
    match answer.body {
        AnswerBody::Json {
            status,
            body,
            retry_after,
        } => write_json(stream, status, &body, retry_after).await,
        AnswerBody::Stream(steps) => {
            // No Content-Length: the body ends when the connection closes, as SSE servers do.
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                        cache-control: no-cache\r\nconnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            for step in steps {
                match step {
                    Step::Write(text) => {
                        stream.write_all(text.as_bytes()).await?;
                        stream.flush().await?;
                    }
                    Step::Sleep(delay) => tokio::time::sleep(delay).await,
                }
            }
            Ok(())
        }
    }
}

/// Reads the request line, headers and `Content-Length` body; `None` if the client closed
/// the connection without sending a request.
async fn read_request(stream: &mut TcpStream) -> io::Result<Option<HttpRequest>> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "headers too large",
            ));
        }
        let mut chunk = [0u8; 8192];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let content_length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buffer.split_off(head_end + 4);
    while body.len() < content_length {
        let mut chunk = vec![0u8; (content_length - body.len()).min(64 * 1024)];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body shorter than content-length",
            ));
        }
        body.extend_from_slice(&chunk[..read]);
    }
    body.truncate(content_length);
    Ok(Some(HttpRequest {
        path,
        headers,
        body,
    }))
}

async fn write_json(
    stream: &mut TcpStream,
    status: u16,
    body: &Value,
    retry_after: Option<u64>,
) -> io::Result<()> {
    let body = body.to_string();
    let retry_after = retry_after
        .map(|seconds| format!("retry-after: {seconds}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         {retry_after}connection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await
}

fn error_body(message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Scripted",
    }
}
