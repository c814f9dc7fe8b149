//! The admin target: raw HTTP/1.1 bytes into [`crate::admin::router`],
//! served by hyper over an in-memory duplex, so every layer the router has
//! (limits, authentication, ...) is in the way of the input.
//!
//! The node behind the router is built once: no data directory, a network
//! with no sockets, and the services that answer from memory (events,
//! telemetry); the consensus routes parse their key, query and body, then
//! answer that consensus does not run here.

use std::sync::OnceLock;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

use super::{admin_services, against_peer, no_network, runtime, secret};
use crate::admin::{AdminConfig, AdminToken, Guard};
use crate::server::{Server, ServerConfig};

/// The admin token the seeds carry (the router checks it like any other).
const FUZZ_TOKEN: &str = "fuzz-admin-token-0123456789abcdef0123456789";

/// Real requests, the admin seeds.
pub(super) const SEED_REQUESTS: [(&str, &str); 7] = [
    ("status", "GET /status HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer fuzz-admin-token-0123456789abcdef0123456789\r\n\r\n"),
    (
        "metrics",
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer fuzz-admin-token-0123456789abcdef0123456789\r\nConnection: close\r\n\r\n",
    ),
    (
        "kv-get",
        "GET /kv/config%2Fflag HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer fuzz-admin-token-0123456789abcdef0123456789\r\n\r\n",
    ),
    (
        "kv-put-cas",
        "PUT /kv/x?expected=1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer fuzz-admin-token-0123456789abcdef0123456789\r\nContent-Length: 1\r\n\r\n2",
    ),
    ("kv-delete", "DELETE /kv/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer fuzz-admin-token-0123456789abcdef0123456789\r\n\r\n"),
    (
        "events",
        "GET /events?kind=kv.put&since_ms=0&limit=10 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer fuzz-admin-token-0123456789abcdef0123456789\r\n\r\n",
    ),
    (
        "pipelined-chunked",
        "PUT /kv/y?absent=true HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer fuzz-admin-token-0123456789abcdef0123456789\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /nope HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer fuzz-admin-token-0123456789abcdef0123456789\r\n\r\n",
    ),
];

fn router() -> Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            let config = ServerConfig {
                traces: None,
                id: 1,
                name: "fuzz".into(),
                listen: "fuzz:1".into(),
                http: None,
                peers: Vec::new(),
                data_dir: None,
                secret: secret(),
                cluster_id: "fuzz".into(),
                lan: false,
                services: admin_services(),
                rt: foundation::rt::RtConfig { network: no_network(), ..Default::default() },
                disk: None,
                frame_limit: None,
                disk_faults: Default::default(),
                admin: AdminConfig::default(),
                tls: None,
                snapshots: Default::default(),
            };
            let server = runtime().block_on(Server::start(config)).expect("the admin target's node starts");
            let token = AdminToken::new(FUZZ_TOKEN, "the fuzz target").expect("a long token");
            let admin = AdminConfig { token: Some(token.clone()), hosts: vec!["localhost".into()], ..AdminConfig::default() };
            let bound = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
            crate::admin::router(server, std::sync::Arc::new(Guard::new(&admin, token, None, bound)))
        })
        .clone()
}

/// Raw HTTP/1.1 request bytes (then EOF) into the admin router.
pub fn admin(data: &[u8]) {
    served(data);
}

/// [`admin`]; what the router answered.
fn served(data: &[u8]) -> Vec<u8> {
    let router = router();
    against_peer(data, |io| async move {
        let service = TowerToHyperService::new(router);
        // A client's EOF after its requests still gets their responses.
        // The served connections' settings, plus half-close.
        let mut http = crate::admin::serve::http1();
        http.half_close(true);
        let _ = http.serve_connection(TokioIo::new(io), service).await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_requests_reach_the_router_and_get_their_answers() {
        let answer = |request: &str| String::from_utf8_lossy(&served(request.as_bytes())).into_owned();
        let status = answer(SEED_REQUESTS[0].1);
        assert!(status.starts_with("HTTP/1.1 404") && status.contains("service_not_running"), "{status}");
        // The status request above is counted.
        let metrics = answer(SEED_REQUESTS[1].1);
        assert!(metrics.starts_with("HTTP/1.1 200") && metrics.contains("foundation_http_requests_total"), "{metrics}");
        let events = answer(SEED_REQUESTS[5].1);
        assert!(events.starts_with("HTTP/1.1 200"), "{events}");
        let pipelined = answer(SEED_REQUESTS[6].1);
        assert_eq!(pipelined.matches("HTTP/1.1 404").count(), 2, "{pipelined}");
        assert!(pipelined.contains("service_not_running") && pipelined.contains("no such endpoint"), "{pipelined}");
    }
}
