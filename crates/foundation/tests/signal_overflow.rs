//! Exit signals past `SIGNAL_QUEUE_MAX` are never dropped silently: the
//! receiving process ends with `ExitReason::SignalOverflow` (fail-stop).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use foundation::{Ctx, Event, ExitReason, Node, SIGNAL_QUEUE_MAX};

const WAIT: Duration = Duration::from_secs(60);

/// 70,000 linked children exit at once while their trapping parent does not
/// read: either the parent handles every exit, or it dies with the
/// overflow reason. It never carries on having missed some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_past_the_signal_queue_bound_kill_the_receiver_with_the_overflow_reason() {
    const CHILDREN: usize = 70_000;
    const { assert!(CHILDREN > SIGNAL_QUEUE_MAX) };
    let node = Node::new("t");
    let (go, gone) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let (read_tx, read_rx) = tokio::sync::oneshot::channel::<()>();
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let parent = node.spawn(move |mut ctx: Ctx<()>| async move {
        ctx.trap_exit(true);
        for _ in 0..CHILDREN {
            let mut gone = gone.clone();
            ctx.spawn_link(move |_: Ctx<()>| async move {
                let _ = gone.wait_for(|g| *g).await;
                ExitReason::error("done")
            });
        }
        let _ = ready_tx.send(());
        let _ = read_rx.await;
        loop {
            if let Event::Exit { .. } = ctx.recv_event().await {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let parent_exit = node.watch(parent.pid());
    tokio::time::timeout(WAIT, ready_rx).await.expect("children spawned in time").expect("parent alive");
    go.send_replace(true);
    foundation_testutil::assert_eventually("every child has exited", || node.live_processes() <= 1, WAIT).await;
    let _ = read_tx.send(());
    if node.is_alive(parent.pid()) {
        foundation_testutil::assert_eventually_eq("exits the parent handled", || handled.load(Ordering::SeqCst), CHILDREN, WAIT).await;
    } else {
        assert_eq!(parent_exit.await, ExitReason::SignalOverflow);
    }
}
