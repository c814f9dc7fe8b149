//! A flood never grows resident memory past the mailbox byte limit. Alone
//! in its test binary (its own OS process), so other tests' allocations do
//! not blur the measurement.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foundation::messages::send_with_flow_control;
use foundation::{Ctx, MailboxConfig, Node, SpawnOpts};
use foundation_testutil::rss_bytes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_messages_stays_within_the_byte_limit() {
    const LIMIT_BYTES: usize = 32 << 20;
    const MESSAGE_BYTES: usize = 1 << 20;
    /// Allocator and runtime slack allowed on top of the limit.
    const SLACK_BYTES: usize = 16 << 20;
    let node = Node::new("t");
    let cfg = MailboxConfig { capacity: 100_000, max_bytes: LIMIT_BYTES, max_message_bytes: MESSAGE_BYTES * 2, ..MailboxConfig::default() };
    let opts = SpawnOpts { mailbox: Some(Arc::new(cfg)), ..SpawnOpts::default() };
    // A receiver that never reads: everything accepted stays queued.
    let stuck = node.spawn_with(opts, |_c: Ctx<Bytes>| std::future::pending::<()>()).expect("valid");
    let before = rss_bytes().expect("resident memory readable");
    let (mut accepted, mut refused) = (0usize, 0usize);
    // 1 GiB offered in 1 MiB messages, each a fresh, fully written buffer.
    for i in 0..1024u32 {
        let msg = Bytes::from(vec![i as u8; MESSAGE_BYTES]);
        match send_with_flow_control(&stuck, msg) {
            Ok(()) => accepted += 1,
            Err(e) => {
                assert!(e.is_backpressure(), "{e}");
                refused += 1;
            }
        }
    }
    let after = rss_bytes().expect("resident memory readable");
    let grown = after.saturating_sub(before);
    eprintln!("flood: {accepted} accepted, {refused} refused; resident memory grew {} MiB (limit {} MiB)", grown >> 20, LIMIT_BYTES >> 20);
    assert_eq!(accepted, LIMIT_BYTES / (MESSAGE_BYTES + std::mem::size_of::<Bytes>()));
    assert!(grown <= LIMIT_BYTES + SLACK_BYTES, "grew {grown} B, over the {LIMIT_BYTES} B limit plus {SLACK_BYTES} B slack");
    let info = node.process_info(stuck.pid()).expect("alive");
    assert!(info.mailbox_bytes <= LIMIT_BYTES);
    assert_eq!(node.shutdown(Duration::from_secs(5)).await, 0);
}
