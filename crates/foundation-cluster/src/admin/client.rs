//! A small HTTP/1.1 client for the admin API (`foundation status`, tests):
//! one request per connection, the token in its `Authorization` header.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::token::AdminToken;

/// Sends `method path` (with `body`, and `token` as a bearer token) to
/// `addr`; returns the status code and the body.
pub async fn request(addr: &str, token: Option<&AdminToken>, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
    let auth = token.map(|t| format!("Authorization: {}\r\n", t.bearer())).unwrap_or_default();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    raw(addr, head.as_bytes(), body).await
}

/// Sends `head` (a request's start line and headers, as given) and `body`
/// to `addr`; returns the status code and the body.
pub async fn raw(addr: &str, head: &[u8], body: &[u8]) -> Result<(u16, String), String> {
    let net = foundation::rt::TokioNetwork;
    let mut stream = foundation::rt::Network::connect(&net, addr).await.map_err(|e| format!("cannot reach {addr}: {e}"))?;
    stream.write_all(head).await.map_err(|e| e.to_string())?;
    stream.write_all(body).await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("not an HTTP response from {addr}"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status line from {addr}"))?;
    Ok((status, body.to_owned()))
}
