//! Getting a connection to the authenticated state: the accept loop (with
//! a cap on handshakes in progress, a backoff on accept errors, and
//! refusals logged at a bounded rate per source, through a
//! [`LogLimit`](crate::log_limit::LogLimit)) and the dial.

use std::sync::Arc;
use std::time::Duration;

use foundation::rt::Listener;
use tokio::sync::Semaphore;

use super::{ClusterError, Inner, established, hash_taken};
use crate::handshake::{self, DialKind};

/// Handshakes in progress at once; a connection over this is closed at
/// once (and the refusal logged): half-open connections cannot pile up.
pub const HANDSHAKES_MAX: usize = 64;
/// First pause after a failed accept (e.g. no file descriptors left).
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after failed accepts in a row.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Refusals logged per source in each [`REFUSAL_WINDOW`]; the rest are
/// counted and reported with the source's next logged refusal.
pub const REFUSALS_LOGGED_PER_WINDOW: u32 = 3;
/// The window of [`REFUSALS_LOGGED_PER_WINDOW`].
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// The source of a `host:port` peer address: its host.
fn source_of(from: &str) -> &str {
    from.rsplit_once(':').map_or(from, |(host, _)| host)
}

/// Logs a refused connection, unless its source is over its rate.
pub(crate) fn refused(inner: &Inner, from: &str, reason: &str) {
    let Some(suppressed) = inner.refusals.lock().check(source_of(from), inner.node.rt().now()) else { return };
    if suppressed > 0 {
        tracing::warn!(node = %inner.config.name, %from, reason, suppressed, "refused a connection (and {suppressed} more from this source, not logged)");
    } else {
        tracing::warn!(node = %inner.config.name, %from, reason, "refused a connection");
    }
}

/// A fresh challenge, from the runtime seam's secure source.
fn challenge(inner: &Inner) -> [u8; 32] {
    let mut c = [0u8; 32];
    inner.node.rt().fill_secure(&mut c);
    c
}

pub(super) async fn accept_loop(weak: std::sync::Weak<Inner>, listener: Box<dyn Listener>) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = {
            let Some(inner) = weak.upgrade() else { return };
            let stop = inner.stop_accepting.notified();
            tokio::select! {
                biased;
                _ = stop => return,
                a = listener.accept() => a,
            }
        };
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let (stream, from) = match accepted {
            Ok(a) => {
                backoff = ACCEPT_BACKOFF_MIN;
                a
            }
            Err(e) => {
                // EMFILE and friends: retrying at once would spin a core.
                refused(&inner, "accept", &format!("accept failed: {e}; pausing {backoff:?}"));
                drop(inner);
                foundation::rt::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            refused(&inner, &from, &format!("{HANDSHAKES_MAX} handshakes already in progress"));
            continue;
        };
        let rt = inner.node.rt().clone();
        rt.spawn(async move {
            let _permit = permit;
            match foundation::rt::timeout(inner.config.connect_timeout, shake(&inner, stream)).await {
                Ok(Ok((peer, stream))) => {
                    // A collision is logged where it is found.
                    let _ = established(&inner, peer, None, stream);
                }
                Ok(Err(e)) => refused(&inner, &from, &e),
                Err(_) => refused(&inner, &from, "handshake timed out"),
            }
        });
    }
}

/// The acceptor's side of TLS (if set) and the handshake.
async fn shake(inner: &Arc<Inner>, stream: foundation::rt::BoxStream) -> Result<(handshake::Peer, foundation::rt::BoxStream), String> {
    let mut stream = match &inner.config.tls {
        Some(tls) => tls.accept(stream).await.map_err(|e| e.to_string())?,
        None => stream,
    };
    // A peer this node disconnected stays out of the mesh's own re-dials
    // until either side calls `connect`.
    let admit = |peer: &str, kind: DialKind| {
        let mut peers = inner.peers.lock();
        if let Some(refused) = hash_taken(&inner.config.name, &peers, peer) {
            return Err(refused.to_string());
        }
        match peers.get_mut(peer) {
            Some(p) if p.manual && kind == DialKind::Redial => {
                Err(format!("{} disconnected from {peer}: no re-dial until a connect", inner.config.name))
            }
            Some(p) => {
                p.manual = false;
                Ok(())
            }
            None => Ok(()),
        }
    };
    let peer = handshake::accept_if(&mut stream, &inner.config.name, inner.incarnation, &inner.config.secret, challenge(inner), admit)
        .await
        .map_err(|e| e.to_string())?;
    Ok((peer, stream))
}

/// Dials `addr`; if `expected` is given, only that node is accepted there.
pub(super) async fn dial(inner: &Arc<Inner>, addr: &str, kind: DialKind, expected: Option<&str>) -> Result<String, ClusterError> {
    if inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ClusterError::Connect { addr: addr.into(), reason: "this node has shut down".into() });
    }
    let net = inner.node.rt().network().clone();
    let timeout = inner.config.connect_timeout;
    let attempt = async {
        let stream = net.connect(addr).await.map_err(|e| ClusterError::Connect { addr: addr.into(), reason: e.to_string() })?;
        let mut stream = match &inner.config.tls {
            Some(tls) => tls.dial(stream).await.map_err(|source| ClusterError::Tls { addr: addr.into(), source })?,
            None => stream,
        };
        let (me, incarnation, secret) = (&inner.config.name, inner.incarnation, &inner.config.secret);
        let peer = handshake::dial_expecting(&mut stream, me, incarnation, secret, challenge(inner), kind, expected)
            .await
            .map_err(|source| ClusterError::Handshake { addr: addr.into(), source })?;
        Ok::<_, ClusterError>((peer, stream))
    };
    let (peer, stream) = foundation::rt::timeout(timeout, attempt)
        .await
        .map_err(|_| ClusterError::Connect { addr: addr.into(), reason: format!("no answer within {timeout:?}") })??;
    let name = peer.name.clone();
    established(inner, peer, Some(addr.to_owned()), stream)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_the_host() {
        assert_eq!(source_of("10.0.0.1:5000"), "10.0.0.1");
        assert_eq!(source_of("[::1]:5000"), "[::1]");
        assert_eq!(source_of("accept"), "accept");
    }
}
