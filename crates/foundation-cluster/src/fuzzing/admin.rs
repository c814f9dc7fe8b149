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
use crate::server::{Server, ServerConfig};

/// Real requests, the admin seeds.
pub(super) const SEED_REQUESTS: [(&str, &str); 7] = [
    ("status", "GET /status HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"),
    ("metrics", "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"),
    ("kv-get", "GET /kv/config%2Fflag HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("kv-put-cas", "PUT /kv/x?expected=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\n2"),
    ("kv-delete", "DELETE /kv/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer 0123456789abcdef\r\n\r\n"),
    ("events", "GET /events?kind=kv.put&since_ms=0&limit=10 HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    (
        "pipelined-chunked",
        "PUT /kv/y?absent=true HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ),
];

fn router() -> Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            let config = ServerConfig {
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
            };
            let server = runtime().block_on(Server::start(config)).expect("the admin target's node starts");
            crate::admin::router(server)
        })
        .clone()
}

/// Raw HTTP/1.1 request bytes (then EOF) into the admin router.
pub fn admin(data: &[u8]) {
    let router = router();
    against_peer(data, |io| async move {
        let service = TowerToHyperService::new(router);
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).await;
    });
}
