//! What more than one test binary of this crate runs (each includes it
//! with `mod common;`).

use std::time::Duration;

use foundation::{Ctx, Node};
use tokio::sync::oneshot;

/// Issue 16's fan-out on `node`: one process spawns `workers` processes
/// (no placement by hand) and sends each `items` messages, round by round;
/// each message burns 200 µs of CPU. Per worker, the thread each of its
/// items ran on.
pub fn fan_out(node: &Node, workers: usize, items: usize) -> Vec<Vec<String>> {
    let driver = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("driver runtime");
    driver.block_on(async {
        let (tx, rx) = oneshot::channel();
        node.spawn(move |ctx: Ctx<()>| async move {
            let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
            let addrs: Vec<_> = (0..workers)
                .map(|_| {
                    let done = done_tx.clone();
                    ctx.node().spawn(move |mut ctx: Ctx<u32>| async move {
                        let mut ran_on = Vec::with_capacity(items);
                        for _ in 0..items {
                            ctx.recv().await;
                            foundation_testutil::load::burn(200);
                            ran_on.push(thread_name());
                        }
                        let _ = done.send(ran_on);
                    })
                })
                .collect();
            for _ in 0..items {
                for w in &addrs {
                    let _ = w.send(1).await;
                }
            }
            let mut threads = Vec::new();
            for _ in 0..workers {
                threads.push(done_rx.recv().await.expect("a worker finished"));
            }
            let _ = tx.send(threads);
        });
        tokio::time::timeout(Duration::from_secs(60), rx).await.expect("in time").expect("spawner ran")
    })
}

/// The calling thread's name (a pool's schedulers are `foundation-sched-N`).
pub fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}
