//! Payload-size benches: a 1 MiB message and a small one, one harness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use foundation::{Ctx, MailboxConfig, SpawnOpts};
use tokio::sync::oneshot;

use super::{Bench, Harness, Sizes, in_root, ns_per};

pub fn benches() -> Vec<Bench> {
    vec![
        // small first: large_1mib's target is relative to it.
        Bench { name: "message.small", unit: "ns", target: "-", run: small, warmup: true },
        Bench { name: "message.large_1mib", unit: "ns", target: "<= 2x small", run: large_1mib, warmup: true },
    ]
}

fn large_1mib(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let payload = Bytes::from(vec![7u8; 1 << 20]);
    deliver(sizes, h, payload)
}

fn small(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    deliver(sizes, h, Bytes::from_static(&[7u8; 16]))
}

/// Nanoseconds per message: `n` clones of `payload` (a shared buffer: the
/// send moves a handle), sent from one process to another, received and
/// checked. Both benches use this, mailbox and all: 64 messages, and bytes
/// enough for 64 of the large ones (a `Bytes` counts at its full length).
fn deliver(sizes: &Sizes, h: &Harness, payload: Bytes) -> anyhow::Result<f64> {
    let n = sizes.pick(200_000, 20_000);
    let len = payload.len();
    h.driver.block_on(async {
        let node = h.node();
        let elapsed = in_root(&node, move |ctx: Ctx<()>| async move {
            let mailbox = Arc::new(MailboxConfig { capacity: 64, max_bytes: 64 * ((1 << 20) + 64), ..MailboxConfig::default() });
            let (done_tx, done_rx) = oneshot::channel::<(Instant, usize)>();
            let receiver = ctx
                .node()
                .spawn_with(SpawnOpts { mailbox: Some(mailbox), ..SpawnOpts::default() }, move |mut ctx: Ctx<Bytes>| async move {
                    let mut bytes = 0usize;
                    for _ in 0..n {
                        let b = ctx.recv().await;
                        bytes += b.len() + usize::from(b[0] == 7);
                    }
                    let _ = done_tx.send((Instant::now(), bytes));
                })
                .ok()?;
            let start = Instant::now();
            for _ in 0..n {
                receiver.send(payload.clone()).await.ok()?;
            }
            let (end, bytes) = done_rx.await.ok()?;
            (bytes == n * (len + 1)).then(|| end - start)
        })
        .await?
        .context("the payloads did not all arrive intact")?;
        node.shutdown(Duration::from_secs(10)).await;
        Ok(ns_per(elapsed, n))
    })
}
