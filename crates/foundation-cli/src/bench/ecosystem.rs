//! Ecosystem benches: the seed's "ecosystem performance benchmarks".

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use foundation::ecosystem::{EcosystemConfig, ProcessSpec, shutdown_ecosystem, spawn_ecosystem};
use foundation::{Addr, Ctx, Message, Node};
use tokio::sync::oneshot;

use tokio::runtime::Runtime;

use super::{Bench, Sizes};

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: "ecosystem.spawn_1000_workers", unit: "ms", target: "<= 0.5", run: spawn_1000, warmup: true },
        Bench { name: "ecosystem.request_ack_10k", unit: "ms", target: "<= 1", run: request_ack_10k, warmup: true },
    ]
}

/// A request carries the address its ack goes to.
struct Request(Addr<u32>);
impl Message for Request {}

fn config() -> EcosystemConfig {
    let coordinator = ProcessSpec::new(|mut ctx: Ctx<Request>| async move {
        loop {
            let Request(to) = ctx.recv().await;
            let _ = to.send(0).await;
        }
    });
    let worker = ProcessSpec::new(|mut ctx: Ctx<Request>| async move {
        loop {
            let Request(to) = ctx.recv().await;
            let _ = to.send(1).await;
        }
    });
    EcosystemConfig::new(coordinator, worker, 1000).self_healing()
}

fn spawn_1000(_sizes: &Sizes, rt: &Runtime) -> anyhow::Result<f64> {
    rt.block_on(async {
        let node = Node::new("bench");
        // Timed from a task on the runtime, as the seed times it from a BEAM
        // process: the caller is on a scheduler, not an outside thread.
        let caller = node.clone();
        let (elapsed, eco) = tokio::spawn(async move {
            let start = Instant::now();
            let eco = spawn_ecosystem(&caller, config()).await;
            (start.elapsed(), eco)
        })
        .await
        .context("timing task")?;
        let eco = eco?;
        ensure!(eco.workers.len() == 1000, "expected 1000 workers, got {}", eco.workers.len());
        shutdown_ecosystem(&eco).await?;
        Ok(elapsed.as_secs_f64() * 1e3)
    })
}

fn request_ack_10k(_sizes: &Sizes, rt: &Runtime) -> anyhow::Result<f64> {
    const REQUESTS: usize = 10_000;
    rt.block_on(async {
        let node = Node::new("bench");
        let eco = spawn_ecosystem(&node, config()).await?;
        let workers: Vec<Addr<Request>> = eco.workers.iter().filter_map(|p| node.addr(*p)).collect();
        ensure!(workers.len() == 1000, "workers not addressable");
        let (done_tx, done_rx) = oneshot::channel::<Duration>();
        // The requester: sends all requests, then awaits all acks.
        let big_mailbox = std::sync::Arc::new(foundation::MailboxConfig::bounded(REQUESTS));
        let opts = foundation::SpawnOpts { mailbox: Some(big_mailbox), ..Default::default() };
        node.spawn_with(opts, move |mut ctx: Ctx<u32>| async move {
            let me = ctx.addr();
            let start = Instant::now();
            for i in 0..REQUESTS {
                if workers[i % workers.len()].send(Request(me.clone())).await.is_err() {
                    return;
                }
            }
            for _ in 0..REQUESTS {
                ctx.recv().await;
            }
            let _ = done_tx.send(start.elapsed());
        })?;
        let elapsed = done_rx.await.context("requester finished")?;
        shutdown_ecosystem(&eco).await?;
        node.shutdown(Duration::from_secs(10)).await;
        Ok(elapsed.as_secs_f64() * 1e3)
    })
}
