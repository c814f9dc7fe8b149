//! Ecosystem benches: the seed's "ecosystem performance benchmarks".

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use foundation::ecosystem::{EcosystemConfig, ProcessSpec, shutdown_ecosystem, spawn_ecosystem};
use foundation::{Addr, Ctx, Message};

use super::{Bench, Harness, Sizes, in_root};

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: "ecosystem.spawn_1000_workers", unit: "ms", target: "<= 0.5", run: spawn_1000, warmup: true },
        Bench { name: "ecosystem.request_ack_10k", unit: "ms", target: "<= 1", run: request_ack_10k, warmup: true },
    ]
}

/// A request carries the address its ack goes to.
struct Request(Addr<u32>);
impl Message for Request {}

fn config() -> EcosystemConfig<Request, Request> {
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

fn spawn_1000(_sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    h.driver.block_on(async {
        let node = h.node();
        // Timed in the root process, as the seed times it from its test process.
        let (elapsed, eco) = in_root(&node, |ctx: Ctx<()>| async move {
            let start = Instant::now();
            let eco = spawn_ecosystem(ctx.node(), config()).await;
            (start.elapsed(), eco)
        })
        .await?;
        let eco = eco?;
        ensure!(eco.workers.len() == 1000, "expected 1000 workers, got {}", eco.workers.len());
        shutdown_ecosystem(&eco).await?;
        node.shutdown(Duration::from_secs(10)).await;
        Ok(elapsed.as_secs_f64() * 1e3)
    })
}

fn request_ack_10k(_sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    const REQUESTS: usize = 10_000;
    h.driver.block_on(async {
        let node = h.node();
        // The root process spawns the ecosystem, then is the requester:
        // sends all requests, then awaits all acks. Its mailbox holds them all.
        let big = std::sync::Arc::new(foundation::MailboxConfig::bounded(REQUESTS));
        let opts = foundation::SpawnOpts { mailbox: Some(big), ..Default::default() };
        let (tx, rx) = tokio::sync::oneshot::channel();
        node.spawn_with(opts, move |mut ctx: Ctx<u32>| async move {
            let result = async {
                let eco = spawn_ecosystem(ctx.node(), config()).await?;
                let workers = eco.worker_addrs();
                ensure!(workers.len() == 1000, "workers not addressable");
                let me = ctx.addr();
                let start = Instant::now();
                for i in 0..REQUESTS {
                    workers[i % workers.len()].send(Request(me.clone())).await.map_err(|e| anyhow::anyhow!("request: {e}"))?;
                }
                for _ in 0..REQUESTS {
                    ctx.recv().await;
                }
                let elapsed = start.elapsed();
                shutdown_ecosystem(&eco).await?;
                Ok(elapsed)
            }
            .await;
            let _ = tx.send(result);
        })?;
        let elapsed = rx.await.context("the requester ended without a result")??;
        node.shutdown(Duration::from_secs(10)).await;
        Ok(elapsed.as_secs_f64() * 1e3)
    })
}
