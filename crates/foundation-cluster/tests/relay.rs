//! A relay that does not know the secret sits between two members, at the
//! address one of them dials, and meddles with the records after the
//! handshake: it flips a bit, drops a record, replays one, reorders two,
//! splices a record of one connection into another, and poses as another
//! node. Each time the connection closes and the message in the record it
//! touched is never delivered. A relay that forwards bytes unchanged
//! carries a working, authenticated session.
//!
//! Before the sealed records (protocol 2), the same relay rewrote a PUT in
//! flight and all three replicas took its value: nothing protected the
//! bytes after the handshake.

use std::sync::Arc;
use std::time::Duration;

use foundation::rt::{BoxStream, Network, TokioNetwork};
use foundation_cluster::handshake::HandshakeError;
use foundation_cluster::mesh::{Cluster, ClusterError, NodeEvent};
use foundation_cluster::seal::TAG_BYTES;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::broadcast;

mod common;
use common::{WAIT, start, until};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tamper {
    Forward,
    FlipBit,
    Drop,
    Replay,
    Reorder,
    /// The record marked `MARK-A` on one connection is captured, and put
    /// in place of the record marked `MARK-C` on another.
    Splice,
}

/// What the relay's pumps share: the captured record for a splice.
#[derive(Default)]
struct Shared {
    captured: Mutex<Option<Vec<u8>>>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads `[u32 len][len bytes]` (+ `extra` bytes): a handshake frame
/// (`extra` 0) or a sealed record (`extra` = the tag).
async fn read_unit(r: &mut ReadHalf<BoxStream>, extra: usize) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let mut unit = len.to_vec();
    unit.resize(4 + u32::from_be_bytes(len) as usize + extra, 0);
    r.read_exact(&mut unit[4..]).await.ok()?;
    Some(unit)
}

/// The dialer's side towards the acceptor: its two handshake frames pass
/// unchanged, then each record goes through `tamper` (once, on the first
/// marked record).
async fn pump_up(mut r: ReadHalf<BoxStream>, mut w: WriteHalf<BoxStream>, tamper: Tamper, shared: Arc<Shared>) {
    for _ in 0..2 {
        let Some(frame) = read_unit(&mut r, 0).await else { return };
        if w.write_all(&frame).await.is_err() {
            return;
        }
    }
    let (mut done, mut held) = (false, None::<Vec<u8>>);
    while let Some(mut record) = read_unit(&mut r, TAG_BYTES).await {
        let mut out = vec![];
        let marked = |m: &[u8], rec: &[u8]| find(rec, m);
        match tamper {
            _ if done => out.push(record),
            Tamper::Forward => out.push(record),
            Tamper::FlipBit => match marked(b"MARK-", &record) {
                Some(at) => {
                    record[at + 5] ^= 0x01;
                    done = true;
                    out.push(record);
                }
                None => out.push(record),
            },
            Tamper::Drop => {
                done = marked(b"MARK-", &record).is_some();
                if !done {
                    out.push(record);
                }
            }
            Tamper::Replay => {
                done = marked(b"MARK-", &record).is_some();
                if done {
                    out.push(record.clone());
                }
                out.push(record);
            }
            Tamper::Reorder => match held.take() {
                Some(first) => {
                    done = true;
                    out.extend([record, first]);
                }
                None if marked(b"MARK-", &record).is_some() => held = Some(record),
                None => out.push(record),
            },
            Tamper::Splice => {
                if marked(b"MARK-A", &record).is_some() {
                    *shared.captured.lock() = Some(record.clone());
                    out.push(record);
                } else if marked(b"MARK-C", &record).is_some() {
                    let captured = shared.captured.lock().clone().expect("MARK-A went first");
                    done = true;
                    out.push(captured);
                } else {
                    out.push(record);
                }
            }
        }
        for rec in out {
            if w.write_all(&rec).await.is_err() {
                return;
            }
        }
    }
}

async fn pump_down(mut r: ReadHalf<BoxStream>, mut w: WriteHalf<BoxStream>) {
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

/// A relay listening on a free loopback port, forwarding to `target`.
async fn relay(target: String, tamper: Tamper) -> String {
    let listener = TokioNetwork.bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("addr");
    let shared = Arc::new(Shared::default());
    foundation::rt::spawn(async move {
        while let Ok((from, _)) = listener.accept().await {
            let Ok(to) = TokioNetwork.connect(&target).await else { continue };
            let ((fr, fw), (tr, tw)) = (tokio::io::split(from), tokio::io::split(to));
            foundation::rt::spawn(pump_up(fr, tw, tamper, shared.clone()));
            foundation::rt::spawn(pump_down(tr, fw));
        }
    });
    addr
}

/// `b` with an RPC that records what it is sent.
async fn recording_b() -> (Cluster, Arc<Mutex<Vec<String>>>) {
    let b = start("b").await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    b.register_rpc("record", move |s: String| {
        seen.lock().push(s);
        async {}
    });
    (b, got)
}

fn send(from: &Cluster, what: &str) {
    let (from, what) = (from.clone(), what.to_owned());
    foundation::rt::spawn(async move {
        // Failing (the connection closed under it) is the point.
        let _ = from.rpc::<String, ()>("b", "record", what, Duration::from_secs(2)).await;
    });
}

async fn down(events: &mut broadcast::Receiver<NodeEvent>, peer: &str) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::Down { node, reason }) if node == peer => return reason,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{peer} was not reported down within {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_forwards_bytes_unchanged_carries_an_authenticated_session() {
    let ((b, got), a) = (recording_b().await, start("a").await);
    let via = relay(b.addr().to_owned(), Tamper::Forward).await;
    a.connect_to("b", &via).await.expect("connects through the relay");
    for i in 0..20 {
        a.rpc::<String, ()>("b", "record", format!("MARK-{i}"), WAIT).await.expect("delivered");
    }
    assert_eq!(got.lock().len(), 20);
    assert_eq!(a.peers(), ["b"]);
}

async fn tampered(tamper: Tamper) {
    let ((b, got), a) = (recording_b().await, start("a").await);
    let via = relay(b.addr().to_owned(), tamper).await;
    let mut events = b.subscribe();
    a.connect_to("b", &via).await.expect("connects through the relay");
    send(&a, "MARK-1");
    if tamper == Tamper::Reorder {
        // The next record (a heartbeat within 100 ms, or this) overtakes it.
        send(&a, "after");
    }
    let reason = down(&mut events, "a").await;
    assert!(reason.contains("authentication"), "{tamper:?}: closed for another reason: {reason}");
    assert!(!got.lock().iter().any(|s| s.starts_with("MARK")), "{tamper:?}: delivered {:?}", got.lock());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_closes_the_connection_and_delivers_nothing() {
    tampered(Tamper::FlipBit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_record_closes_the_connection_and_delivers_nothing_after_it() {
    tampered(Tamper::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_record_closes_the_connection() {
    let ((b, got), a) = (recording_b().await, start("a").await);
    let via = relay(b.addr().to_owned(), Tamper::Replay).await;
    let mut events = b.subscribe();
    a.connect_to("b", &via).await.expect("connects through the relay");
    send(&a, "MARK-1");
    let reason = down(&mut events, "a").await;
    assert!(reason.contains("authentication"), "closed for another reason: {reason}");
    // The original is delivered once; its replay never.
    assert!(got.lock().len() <= 1, "delivered {:?}", got.lock());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_records_close_the_connection_and_deliver_neither() {
    tampered(Tamper::Reorder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_spliced_from_another_connection_closes_it_and_is_not_delivered() {
    let ((b, got), a) = (recording_b().await, start("a").await);
    let c = start("c").await;
    let via = relay(b.addr().to_owned(), Tamper::Splice).await;
    let mut events = b.subscribe();
    a.connect_to("b", &via).await.expect("a connects through the relay");
    a.rpc::<String, ()>("b", "record", "MARK-A".into(), WAIT).await.expect("delivered on a's own connection");
    c.connect_to("b", &via).await.expect("c connects through the relay");
    // c's record is replaced by a's: sealed under a's keys and sequence.
    let _ = c.rpc::<String, ()>("b", "record", "MARK-C".into(), Duration::from_secs(2)).await;
    let reason = down(&mut events, "c").await;
    assert!(reason.contains("authentication"), "closed for another reason: {reason}");
    assert_eq!(*got.lock(), ["MARK-A"], "a's message delivered once, c's never");
    assert!(b.peers().contains(&"a".to_owned()), "a's own connection is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_posing_as_another_node_is_refused_before_the_dialer_proves_anything() {
    let ((b, got), a) = (recording_b().await, start("a").await);
    let c = start("c").await;
    // The relay sits where `a` expects `c`, and forwards to `b`.
    let via = relay(b.addr().to_owned(), Tamper::Forward).await;
    let err = a.connect_to("c", &via).await.expect_err("not c");
    assert!(
        matches!(err, ClusterError::Handshake { source: HandshakeError::WrongPeer { ref expected, ref found }, .. } if expected == "c" && found == "b"),
        "{err}"
    );
    until("nobody connected", || a.peers().is_empty() && b.peers().is_empty()).await;
    assert!(got.lock().is_empty());
    let _ = c;
}
