//! Host and Origin checks against DNS rebinding: a tower layer that answers 403 when `Host`
//! does not name this server or a browser's `Origin` is not allowed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The names this server answers to.
#[derive(Debug, Clone)]
pub struct AllowedPeers {
    port: u16,
    /// Lowercase host names (any port is not accepted for these: the listener's port only).
    local_hosts: Vec<String>,
    /// `[server] allowed_hosts`: `name` (any port) or `name:port`, lowercase.
    extra_hosts: Vec<String>,
    /// Lowercase origins without a trailing slash.
    origins: Vec<String>,
}

impl AllowedPeers {
    /// The listen address, `localhost` and the loopback addresses (at the listener's port),
    /// plus the configured hosts; the listener's own loopback origins plus the configured ones.
    pub fn new(listen: SocketAddr, allowed_hosts: &[String], allowed_origins: &[String]) -> Self {
        let port = listen.port();
        let mut local_hosts = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "[::1]".to_owned(),
        ];
        let ip = match listen {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        if !local_hosts.contains(&ip) {
            local_hosts.push(ip);
        }
        let mut origins: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|host| format!("http://{host}:{port}"))
            .collect();
        origins.extend(allowed_origins.iter().map(|o| normalize_origin(o)));
        Self {
            port,
            local_hosts,
            extra_hosts: allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            origins,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.extra_hosts.contains(&host) {
            return true;
        }
        let (name, port) = split_port(&host);
        // A configured name without a port accepts any port (a reverse proxy's).
        if self.extra_hosts.iter().any(|h| h == name) {
            return true;
        }
        let port = port.unwrap_or(80);
        port == self.port && self.local_hosts.iter().any(|h| h == name)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.contains(&normalize_origin(origin))
    }
}

/// `host:port` → (`host`, port); an IPv6 literal keeps its brackets.
fn split_port(host: &str) -> (&str, Option<u16>) {
    let colon = if host.starts_with('[') {
        host.find(']')
            .and_then(|end| host[end..].find(':').map(|offset| end + offset))
    } else {
        host.rfind(':')
    };
    match colon {
        Some(at) => match host[at + 1..].parse() {
            Ok(port) => (&host[..at], Some(port)),
            Err(_) => (host, None),
        },
        None => (host, None),
    }
}

fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The middleware function; mount with `axum::middleware::from_fn_with_state(peers, ...)`.
pub async fn check_host_and_origin(
    State(peers): State<Arc<AllowedPeers>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    if !host.as_deref().is_some_and(|host| peers.host_allowed(host)) {
        return forbidden(
            "the Host header does not name this server; add the name to `allowed_hosts` under [server] in config.toml",
        );
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| peers.origin_allowed(origin));
        if !allowed {
            return forbidden(
                "the Origin is not allowed; add it to `allowed_origins` under [server] in config.toml",
            );
        }
    }
    next.run(request).await
}

fn forbidden(message: &'static str) -> Response {
    (StatusCode::FORBIDDEN, format!("forbidden: {message}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let peers = AllowedPeers::new(
            "127.0.0.1:8080".parse().expect("addr"),
            &["baton.example.com".to_owned(), "team:9000".to_owned()],
            &["https://app.example.com".to_owned()],
        );
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "baton.example.com",
            "baton.example.com:443",
            "team:9000",
        ] {
            assert!(peers.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.com:8080",
            "127.0.0.1:8081",
            "localhost",
            "team:9001",
            "team",
        ] {
            assert!(!peers.host_allowed(bad), "{bad}");
        }
        assert!(peers.origin_allowed("http://localhost:8080"));
        assert!(peers.origin_allowed("https://app.example.com/"));
        assert!(!peers.origin_allowed("http://evil.com"));
        assert!(!peers.origin_allowed("http://localhost:9999"));
    }
}
