//! A context travels with local messages: a process sees the context of the
//! message it is handling, and passes it on with what it sends.

use std::time::Duration;

use foundation::context::{self, Context, with_global_context};
use foundation::{Addr, Ctx, Node};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_follows_messages_through_processes() {
    let node = Node::new("ctx");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u32, Option<String>)>();
    // last: reports what it sees.
    let last = node.spawn(move |mut ctx: Ctx<u32>| async move {
        loop {
            let n = ctx.recv().await;
            // Across an await, the context stays the message's.
            tokio::task::yield_now().await;
            let _ = tx.send((n, context::current().and_then(|c| c.get("hop").map(str::to_owned))));
        }
    });
    // relay: bumps the hop counter and forwards.
    let relay: Addr<u32> = node.spawn(move |mut ctx: Ctx<u32>| async move {
        loop {
            let n = ctx.recv().await;
            match context::current() {
                Some(c) => {
                    let hop: u32 = c.get("hop").and_then(|h| h.parse().ok()).unwrap_or(0);
                    let next = c.with("hop", (hop + 1).to_string()).unwrap();
                    with_global_context(next, last.send(n)).await.unwrap();
                }
                None => last.send(n).await.unwrap(),
            }
        }
    });
    let ctx = Context::new(42).with("hop", "1").unwrap();
    with_global_context(ctx, relay.send(1)).await.unwrap();
    relay.send(2).await.unwrap();
    let got1 = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    let got2 = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    assert_eq!(got1, (1, Some("2".into())), "the hop counter went up on the way");
    assert_eq!(got2, (2, None), "a message sent outside any context carries none");
    // try_send carries it too.
    with_global_context(Context::new(7).with("hop", "10").unwrap(), async { relay.try_send(3).unwrap() }).await;
    assert_eq!(tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap(), (3, Some("11".into())));
}
