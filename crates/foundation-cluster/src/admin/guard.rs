//! Who may drive the admin API: the `Host` check (421) and the bearer token
//! (401), in one middleware over every route and the fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error;
use super::token::AdminToken;

/// How the admin API admits requests. The default has no token, and a node
/// with `http` and no token refuses to start: there is no open API.
#[derive(Clone, Debug, Default)]
pub struct AdminConfig {
    /// The bearer token every request must carry.
    pub token: Option<AdminToken>,
    /// Without `token`: use the data directory's `admin.token`, created on
    /// first start (see [`AdminToken::in_data_dir`]).
    pub token_in_data_dir: bool,
    /// `GET /status` and `GET /metrics` without a token (for scrapers).
    pub open_reads: bool,
    /// `Host` names accepted besides the bound address (`NAME` or
    /// `NAME:PORT`; a bare name also matches `NAME:bound port`).
    pub hosts: Vec<String>,
}

/// The endpoints `open_reads` opens, for `GET` only.
pub const OPEN_READS: [&str; 2] = ["/status", "/metrics"];

/// The checks, resolved against the bound address.
pub(crate) struct Guard {
    token: AdminToken,
    open_reads: bool,
    /// Accepted `Host` values, lowercase.
    hosts: Vec<String>,
    bound: SocketAddr,
    /// The data directory's token file, if the token came from there.
    pub token_file: Option<PathBuf>,
}

impl Guard {
    pub(crate) fn new(config: &AdminConfig, token: AdminToken, token_file: Option<PathBuf>, bound: SocketAddr) -> Self {
        let port = bound.port();
        let mut hosts = vec![bound.to_string()];
        if bound.ip().is_loopback() {
            hosts.push(format!("localhost:{port}"));
        }
        for name in &config.hosts {
            let name = name.to_ascii_lowercase();
            if !name.contains(':') || name.ends_with(']') {
                hosts.push(format!("{name}:{port}"));
            }
            hosts.push(name);
        }
        Self { token, open_reads: config.open_reads, hosts, bound, token_file }
    }

    fn host_ok(&self, headers: &HeaderMap) -> bool {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
        host.is_some_and(|h| self.hosts.contains(&h))
    }

    fn token_ok(&self, headers: &HeaderMap) -> bool {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let value = headers.get(header::AUTHORIZATION).map_or(&b""[..], |h| h.as_bytes());
        let (scheme, presented) = value.split_at(value.len().min(7));
        scheme.eq_ignore_ascii_case(b"bearer ") && self.token.matches(presented)
    }

    fn open(&self, method: &Method, path: &str) -> bool {
        self.open_reads && method == Method::GET && OPEN_READS.contains(&path)
    }

    /// The observer's session cookie, which admits its page and stream only
    /// (`GET`: a cookie a browser sends by itself never changes anything).
    fn session_ok(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        method == Method::GET
            && SESSION_PATHS.contains(&path)
            && headers.get_all(header::COOKIE).iter().filter_map(|h| h.to_str().ok()).flat_map(|h| h.split(';')).any(|c| {
                c.trim()
                    .strip_prefix(SESSION_COOKIE)
                    .and_then(|v| v.strip_prefix('='))
                    .is_some_and(|v| self.token.session_matches(v.as_bytes()))
            })
    }

    /// The token, for the observer's login.
    pub(crate) fn token(&self) -> &AdminToken {
        &self.token
    }
}

/// The observer's session cookie.
pub const SESSION_COOKIE: &str = "foundation_session";
/// What the session cookie admits (`GET` only).
pub const SESSION_PATHS: [&str; 2] = ["/ui", "/ui/events"];

/// 421 for a foreign `Host` (DNS rebinding), then 401 without the token.
pub(crate) async fn guard(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if !guard.host_ok(req.headers()) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            format!("the Host header is not this node's admin address; use {} or start the node with --http-host NAME", guard.bound),
        );
    }
    let (method, path) = (req.method(), req.uri().path());
    if guard.open(method, path) || guard.token_ok(req.headers()) || guard.session_ok(method, path, req.headers()) {
        return next.run(req).await;
    }
    // The observer's login: its form, and the token it posts (checked there).
    if path == "/ui" && method == Method::GET {
        return super::observer::login_page(StatusCode::UNAUTHORIZED, "");
    }
    if path == "/ui/login" && method == Method::POST {
        return next.run(req).await;
    }
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send `Authorization: Bearer TOKEN`, with the token from the node's --admin-token-file or DATA_DIR/admin.token",
    );
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    resp.into_response()
}
