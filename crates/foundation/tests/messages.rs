//! The seed's 2.2 "Message Passing Tests", plus zero-copy and broadcast.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foundation::messages::{FlowError, broadcast, send_optimized, send_with_flow_control};
use foundation::{Ctx, MailboxConfig, Message, Node, SendError, SpawnOpts};
use tokio::sync::{mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(5);

/// The seed's `generate_large_binary`: deterministic, not all one byte.
fn generate_large_binary(size: usize) -> Bytes {
    (0..size).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect::<Vec<u8>>().into()
}

enum Data {
    Data(Bytes),
}
impl Message for Data {
    fn heap_bytes(&self) -> usize {
        let Data::Data(b) = self;
        b.len()
    }
}

// 2.2: "optimized message passing preserves data integrity".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimized_message_passing_preserves_data_integrity() {
    let node = Node::new("t");
    let large_data = generate_large_binary(1_000_000);
    let (tx, rx) = oneshot::channel();
    let receiver = node.spawn(move |mut ctx: Ctx<Data>| async move {
        let Data::Data(received) = ctx.recv().await;
        let _ = tx.send(received);
    });
    send_optimized(&receiver, Data::Data(large_data.clone())).await.expect("receiver alive");
    let received = tokio::time::timeout(Duration::from_secs(1), rx).await.expect("within 1 s").expect("received");
    assert_eq!(received.len(), 1_000_000);
    assert_eq!(received, large_data, "every byte intact");
    assert_eq!(received.as_ptr(), large_data.as_ptr(), "the same buffer: nothing was copied");
}

// 2.2: "flow control prevents mailbox overflow".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_prevents_mailbox_overflow() {
    let node = Node::new("t");
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    // The seed's slow_receiver_loop: 1 ms per message, mailbox of 100.
    let opts = SpawnOpts { mailbox: Some(Arc::new(MailboxConfig::bounded(100))), ..SpawnOpts::default() };
    let slow_receiver = node
        .spawn_with(opts, move |mut ctx: Ctx<(&'static str, u32)>| async move {
            loop {
                let (_, i) = ctx.recv().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                let _ = seen_tx.send(i);
            }
        })
        .expect("valid mailbox");
    let results: Vec<_> = (1..=1000).map(|i| send_with_flow_control(&slow_receiver, ("msg", i))).collect();
    assert!(results.iter().any(|r| matches!(r, Err(FlowError::Backpressure(_)))), "should get backpressure errors");
    assert!(results.iter().all(|r| r.as_ref().map_or_else(FlowError::is_backpressure, |()| true)), "backpressure is the only refusal");
    let accepted: Vec<u32> = results.iter().zip(1..).filter(|(r, _)| r.is_ok()).map(|(_, i)| i).collect();
    assert!(accepted.len() >= 100, "at least a mailbox's worth accepted");
    // Nothing that was accepted is lost, and it arrives in order.
    let mut seen = Vec::with_capacity(accepted.len());
    while seen.len() < accepted.len() {
        seen.push(tokio::time::timeout(WAIT, seen_rx.recv()).await.expect("in time").expect("receiver alive"));
    }
    assert_eq!(seen, accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_shares_one_buffer_among_receivers() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let receivers: Vec<_> = (0..4)
        .map(|_| {
            let tx = tx.clone();
            node.spawn(move |mut ctx: Ctx<Bytes>| async move {
                let b = ctx.recv().await;
                let _ = tx.send(b);
            })
        })
        .collect();
    let payload = generate_large_binary(64 * 1024);
    assert!(broadcast(&receivers, &payload).iter().all(Result::is_ok));
    for _ in 0..4 {
        let got = tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("sent");
        assert_eq!(got.as_ptr(), payload.as_ptr(), "shared, not copied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_is_refused_with_a_typed_error() {
    let node = Node::new("t");
    let cfg = MailboxConfig { max_message_bytes: 1 << 20, ..MailboxConfig::default() };
    let opts = SpawnOpts { mailbox: Some(Arc::new(cfg)), ..SpawnOpts::default() };
    let p = node.spawn_with(opts, |_c: Ctx<Bytes>| std::future::pending::<()>()).expect("valid");
    match send_with_flow_control(&p, Bytes::from(vec![0u8; 2 << 20])) {
        Err(FlowError::Refused(SendError::TooLarge { bytes, limit, .. })) => {
            assert!(bytes > 2 << 20);
            assert_eq!(limit, 1 << 20);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The receiver and the node are untouched: a message within the limit goes through.
    send_with_flow_control(&p, Bytes::from(vec![0u8; 1024])).expect("a small payload is accepted");
    assert_eq!(node.process_info(p.pid()).expect("alive").mailbox_len, 1);
}

/// `ProcessInfo` counts what a process received and how often it ran, across
/// the batches its receiver takes and within one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_counts_the_messages_it_received_and_the_times_it_ran() {
    let node = Node::new("t");
    let (go_tx, mut go_rx) = mpsc::unbounded_channel::<usize>();
    let (took_tx, mut took_rx) = mpsc::unbounded_channel::<usize>();
    let p = node.spawn(move |mut ctx: Ctx<u64>| async move {
        while let Some(n) = go_rx.recv().await {
            for _ in 0..n {
                ctx.recv().await;
            }
            let _ = took_tx.send(n);
        }
    });
    let info = || node.process_info(p.pid()).expect("alive");
    let mut took = async |n: usize| {
        go_tx.send(n).expect("alive");
        assert_eq!(tokio::time::timeout(WAIT, took_rx.recv()).await.expect("in time"), Some(n));
    };
    for i in 0..10 {
        p.try_send(i).expect("room");
    }
    foundation_testutil::assert_eventually("first poll", || info().polls >= 1, WAIT).await;
    let start = info();
    assert_eq!((start.received, start.mailbox_len), (0, 10));

    // Four of one batch of ten: the count is exact within a batch.
    took(4).await;
    let part = info();
    assert_eq!((part.received, part.mailbox_len), (4, 6));
    // A poll is counted when it returns, which can be just after the reply.
    foundation_testutil::assert_eventually("counted the polls that received", || info().polls > start.polls, WAIT).await;

    took(6).await;
    p.try_send(10).expect("room");
    took(1).await;
    let end = info();
    assert_eq!((end.received, end.mailbox_len), (11, 0), "counted across batches");
    foundation_testutil::assert_eventually("counted later polls", || info().polls > part.polls, WAIT).await;
}

/// A message that says it holds `.0` bytes (nothing is allocated).
struct Claims(usize);
impl Message for Claims {
    fn heap_bytes(&self) -> usize {
        self.0
    }
}

/// Byte counts are 32-bit inside a mailbox; near the largest bound they are
/// still exact, and the bound still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_bounds_near_four_gib_are_exact() {
    use foundation::mailbox::MAILBOX_BYTES_MAX;
    const PART: usize = 1300 << 20;
    let node = Node::new("t");
    let too_big = MailboxConfig { max_bytes: MAILBOX_BYTES_MAX + 1, ..MailboxConfig::default() };
    assert_eq!(too_big.validate().expect_err("over the limit").field, "mailbox.max_bytes");
    let cfg = MailboxConfig { max_message_bytes: PART + 1024, ..MailboxConfig::unbounded() };
    let (go_tx, mut go_rx) = mpsc::unbounded_channel::<()>();
    let opts = SpawnOpts { mailbox: Some(Arc::new(cfg)), ..SpawnOpts::default() };
    let p = node
        .spawn_with(opts, move |mut ctx: Ctx<Claims>| async move {
            while go_rx.recv().await.is_some() {
                ctx.recv().await;
            }
        })
        .expect("valid");
    for _ in 0..3 {
        if let Err(e) = p.try_send(Claims(PART)) {
            panic!("room: {e}")
        }
    }
    let bytes = || node.process_info(p.pid()).expect("alive").mailbox_bytes;
    assert_eq!(bytes(), 3 * (PART + std::mem::size_of::<Claims>()), "over 4 GiB would not be");
    assert!(matches!(p.try_send(Claims(PART)), Err(SendError::Full(_))), "a fourth passes the bound");
    go_tx.send(()).expect("alive");
    foundation_testutil::assert_eventually("one taken", || bytes() == 2 * (PART + std::mem::size_of::<Claims>()), WAIT).await;
    p.try_send(Claims(PART)).unwrap_or_else(|_| panic!("room again"));
    assert!(matches!(p.try_send(Claims(PART)), Err(SendError::Full(_))));
}
