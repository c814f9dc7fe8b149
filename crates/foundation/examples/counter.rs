//! The README's "process in ten lines": a counter process answering calls.
//! Run with `cargo run -p foundation --example counter`.

use std::time::Duration;

use foundation::{Ctx, Node, Reply};

#[tokio::main]
async fn main() {
    let node = Node::new("demo");
    let counter = node.spawn(|mut ctx: Ctx<(u64, Reply<u64>)>| async move {
        let mut total = 0;
        loop {
            let (n, reply) = ctx.recv().await;
            total += n;
            let _ = reply.send(total);
        }
    });
    assert_eq!(counter.call(|r| (5, r), Duration::from_secs(1)).await, Ok(5));
    // Or send now and await the answer later (several can be out at once).
    let answer = counter.request(|r| (2, r), Duration::from_secs(1)).await.expect("the counter is alive");
    assert_eq!(answer.await, Ok(7));
    println!("counter at 7; {} process(es) alive", node.live_processes());
    assert_eq!(node.shutdown(Duration::from_secs(1)).await, 0);
}
