//! What users get: the process workloads written as the README teaches
//! (`Node::new` or a node on a `SchedulerPool`, a driver process spawned
//! from `main`, `Addr::call`, `Addr::request`, typed ecosystem handles),
//! with no placement by hand. `user.default.*` is `Node::new` (the shared
//! migrating pool, `Spawner::Shared`) under a 2-worker (one per core) tokio
//! `main`, as `#[tokio::main]` gives; `user.ambient.*` the same node with
//! its processes on that `main` runtime (`Spawner::Ambient`, the default
//! until 2026-12-04); `user.pool.*` a node with a scheduler pool of its own
//! and a current-thread `main`; `user.migrating.*` the same on a migrating
//! pool (`SchedulerPool::migrating`). All in one invocation, whatever
//! `--tokio` says.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use foundation::ecosystem::{EcosystemConfig, ProcessSpec, shutdown_ecosystem, spawn_ecosystem};
use foundation::rt::{RtConfig, SchedulerPool, Spawner};
use foundation::{Addr, Ctx, Message, Node, NodeConfig, Reply};
use tokio::sync::oneshot;

use super::{Bench, Harness, Sizes, ns_per};

const T: Duration = Duration::from_secs(5);

/// Each row once per kind of node: `user.default.NAME`, `user.ambient.NAME`,
/// `user.pool.NAME`, then `user.migrating.NAME`.
macro_rules! rows {
    ($($name:literal, $unit:literal, $target:literal, $work:ident);+) => {
        [
            rows!(@kind "user.default.", default; $($name, $unit, $target, $work);+),
            rows!(@kind "user.ambient.", ambient; $($name, $unit, $target, $work);+),
            rows!(@kind "user.pool.", pool; $($name, $unit, $target, $work);+),
            rows!(@kind "user.migrating.", migrating; $($name, $unit, $target, $work);+),
        ]
        .into_iter()
        .flatten()
        .collect()
    };
    (@kind $prefix:literal, $kind:ident; $($name:literal, $unit:literal, $target:literal, $work:ident);+) => {
        [$(Bench {
            name: concat!($prefix, $name),
            unit: $unit,
            target: $target,
            run: |sizes: &Sizes, _h: &Harness| user(sizes, Kind::$kind, $work),
            warmup: true,
        }),+]
    };
}

pub fn benches() -> Vec<Bench> {
    rows! {
        "spawn_idle", "ns", "<= 500", spawn_idle;
        "call_rtt", "ns", "<= 300", call_rtt;
        "ping_pong_rtt", "ns", "<= 250", ping_pong_rtt;
        "one_to_one", "msg/s", ">= 20M", one_to_one;
        "ecosystem_spawn_1000", "ms", "<= 1", ecosystem_spawn;
        "ecosystem_request_ack_10k", "ms", "<= 2", ecosystem_request_ack
    }
}

#[allow(non_camel_case_types)]
#[derive(Clone, Copy)]
enum Kind {
    default,
    ambient,
    pool,
    migrating,
}

/// Builds the user's runtime and node, runs `work` in a driver process
/// spawned from `main`, and shuts the node down.
fn user<Fut>(sizes: &Sizes, kind: Kind, work: fn(Ctx<()>, usize) -> Fut) -> anyhow::Result<f64>
where
    Fut: Future<Output = anyhow::Result<f64>> + Send + 'static,
{
    let n = sizes.pick(1, 10);
    let multi_thread = || tokio::runtime::Builder::new_multi_thread().worker_threads(sizes.workers).enable_all().build();
    let current_thread = || tokio::runtime::Builder::new_current_thread().enable_all().build();
    // `Spawner::Shared` is what `Node::new` gives.
    let (runtime, spawner) = match kind {
        Kind::default => (multi_thread()?, Spawner::Shared),
        Kind::ambient => (multi_thread()?, Spawner::Ambient),
        Kind::pool => (current_thread()?, Spawner::Pool(SchedulerPool::new(sizes.workers)?)),
        Kind::migrating => (current_thread()?, Spawner::Pool(SchedulerPool::migrating(sizes.workers)?)),
    };
    let rt = RtConfig { spawner, ..RtConfig::default() };
    let node = Node::with_config(NodeConfig { name: "user".into(), rt, ..NodeConfig::default() })?;
    runtime.block_on(async move {
        let (tx, rx) = oneshot::channel();
        node.spawn(move |ctx: Ctx<()>| async move {
            let _ = tx.send(work(ctx, n).await);
        });
        let figure = rx.await.context("the driver process ended without a figure")?;
        node.shutdown(Duration::from_secs(10)).await;
        figure
    })
}

async fn idle(mut ctx: Ctx<()>) {
    ctx.recv().await;
}

/// `n` is 1 for full sizes, 10 for `--quick`: the sizes divide by it.
async fn spawn_idle(ctx: Ctx<()>, n: usize) -> anyhow::Result<f64> {
    let count = 200_000 / n;
    let start = Instant::now();
    for _ in 0..count {
        ctx.node().spawn(idle);
    }
    Ok(ns_per(start.elapsed(), count))
}

async fn call_rtt(ctx: Ctx<()>, n: usize) -> anyhow::Result<f64> {
    let count = 500_000 / n;
    let echo = ctx.node().spawn(|mut ctx: Ctx<(u64, Reply<u64>)>| async move {
        loop {
            let (i, reply) = ctx.recv().await;
            let _ = reply.send(i);
        }
    });
    let start = Instant::now();
    for i in 0..count as u64 {
        ensure!(echo.call(|r| (i, r), T).await == Ok(i), "call {i} failed");
    }
    Ok(ns_per(start.elapsed(), count))
}

/// Where a pong goes back to.
struct To(Addr<()>);
impl Message for To {}

async fn ping_pong_rtt(mut ctx: Ctx<()>, n: usize) -> anyhow::Result<f64> {
    let count = 500_000 / n;
    let pong = ctx.node().spawn(|mut ctx: Ctx<To>| async move {
        loop {
            let To(back) = ctx.recv().await;
            if back.send(()).await.is_err() {
                return;
            }
        }
    });
    let me = ctx.addr();
    let start = Instant::now();
    for _ in 0..count {
        pong.send(To(me.clone())).await.map_err(|e| anyhow::anyhow!("ping: {e}"))?;
        ctx.recv().await;
    }
    Ok(ns_per(start.elapsed(), count))
}

async fn one_to_one(ctx: Ctx<()>, n: usize) -> anyhow::Result<f64> {
    let count = 5_000_000 / n;
    let (done_tx, done_rx) = oneshot::channel();
    let receiver = ctx.node().spawn(move |mut ctx: Ctx<u64>| async move {
        let mut sum = 0u64;
        for _ in 0..count {
            sum = sum.wrapping_add(ctx.recv().await);
        }
        let _ = done_tx.send(std::hint::black_box(sum));
    });
    let start = Instant::now();
    for i in 0..count as u64 {
        receiver.send(i).await.map_err(|e| anyhow::anyhow!("send: {e}"))?;
    }
    done_rx.await.context("the receiver ended early")?;
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// The ecosystem of the `ecosystem.*` benches: workers answer each
/// request with 1.
fn ecosystem() -> EcosystemConfig<Reply<u32>, Reply<u32>> {
    let answer = |mut ctx: Ctx<Reply<u32>>| async move {
        loop {
            let _ = ctx.recv().await.send(1);
        }
    };
    EcosystemConfig::new(ProcessSpec::new(answer), ProcessSpec::new(answer), 1000).self_healing()
}

async fn ecosystem_spawn(ctx: Ctx<()>, _n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let eco = spawn_ecosystem(ctx.node(), ecosystem()).await?;
    let took = start.elapsed();
    ensure!(eco.workers.len() == 1000, "expected 1000 workers, got {}", eco.workers.len());
    shutdown_ecosystem(&eco).await?;
    Ok(took.as_secs_f64() * 1e3)
}

/// 10,000 requests spread round-robin over the workers, all sent with
/// `Addr::request`, then all answers awaited.
async fn ecosystem_request_ack(ctx: Ctx<()>, _n: usize) -> anyhow::Result<f64> {
    const REQUESTS: usize = 10_000;
    let eco = spawn_ecosystem(ctx.node(), ecosystem()).await?;
    let workers = eco.worker_addrs();
    let start = Instant::now();
    let mut answers = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        answers.push(workers[i % workers.len()].request(|r| r, T).await?);
    }
    for a in answers {
        ensure!(a.await == Ok(1), "a request went unanswered");
    }
    let took = start.elapsed();
    shutdown_ecosystem(&eco).await?;
    Ok(took.as_secs_f64() * 1e3)
}
