//! Serving the admin API over TCP: hyper's HTTP/1 connection (its header
//! read timeout, which also bounds a keep-alive connection's idle time,
//! since it starts again before each request's head), tower's request
//! timeout, load shedding and concurrency limit, and one semaphore permit
//! per accepted connection. No timer or counter here is hand-written.
//!
//! Bounds, back of the envelope: an idle connection costs hyper's 8 KiB
//! read buffer, a task and a socket: about 10–20 KiB, so
//! [`ADMIN_CONNECTIONS_MAX`] connections stay under ~20 MiB, and none
//! outlives [`HEADER_READ_TIMEOUT`] without sending a request.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};
use tower::ServiceBuilder;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;

use super::error;
// The same backoff as the mesh's accept loop, after an accept error such
// as EMFILE.
use crate::mesh::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN};

/// A connection must send a request's whole head within this, from its
/// accept or from the end of its previous response (the idle bound).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a request may take, its body and the consensus wait included
/// (a 503 after it).
pub const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections served at once; one past it is closed as soon as accepted.
pub const ADMIN_CONNECTIONS_MAX: usize = 1024;
/// Requests handled at once; one past it gets 503 `overloaded` at once.
pub const ADMIN_REQUESTS_MAX: usize = 64;
/// Largest request head (start line and headers).
pub const HEADER_BYTES_MAX: usize = 16 * 1024;

/// The 503 for a request shed, or one past [`HTTP_REQUEST_TIMEOUT`].
async fn refused(e: tower::BoxError) -> Response {
    if e.is::<tower::timeout::error::Elapsed>() {
        error(StatusCode::SERVICE_UNAVAILABLE, "timeout", format!("the request took longer than {HTTP_REQUEST_TIMEOUT:?}"))
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", format!("more than {ADMIN_REQUESTS_MAX} requests at once; try again"))
    }
}

/// Errors of one connection, not of the listener: accept again at once.
fn per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// How each admin connection speaks HTTP/1: the header timeout and size
/// bound, and responses written from one buffer (`writev(false)`). With
/// hyper's queued writes (its default on a socket that writes vectored), a
/// malformed pipelined request read while an earlier response was still
/// queued made hyper write its 400 head before that response's rest: a
/// debug assertion in hyper 1.12 (`can_write_head`, found by the admin
/// fuzz target after 3.7 M runs), and bytes out of order without one. One
/// buffer never queues, so the head always goes after what came before.
pub(crate) fn http1() -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_header_size(HEADER_BYTES_MAX).writev(false);
    http
}

/// Serves `router` on `listener` until `stop` turns true; in-flight
/// requests then finish, idle connections close.
pub(super) async fn serve(
    rt: foundation::rt::Rt,
    listener: Box<dyn foundation::rt::Listener>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let service = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(refused))
        .layer(TimeoutLayer::new(HTTP_REQUEST_TIMEOUT))
        .layer(LoadShedLayer::new())
        .layer(ConcurrencyLimitLayer::new(ADMIN_REQUESTS_MAX))
        .service(router);
    let connections = Arc::new(Semaphore::new(ADMIN_CONNECTIONS_MAX));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors (or worse): wait, so as not to spin.
                tracing::warn!(error = %e, wait = ?backoff, "admin API: accept failed");
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF_MIN;
        // At the limit the newcomer is closed at once: nothing queues.
        let Ok(permit) = connections.clone().try_acquire_owned() else { continue };
        let service = TowerToHyperService::new(service.clone());
        let mut stop = stop.clone();
        rt.spawn(async move {
            let http = http1();
            let mut conn = pin!(http.serve_connection(TokioIo::new(stream), service));
            let stopping = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => true,
                _ = conn.as_mut() => false,
            };
            if stopping {
                // In-flight requests finish; an idle connection closes now.
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            drop(permit);
        });
    }
}
