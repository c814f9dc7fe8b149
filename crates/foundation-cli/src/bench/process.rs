//! Process-layer benches: spawn, idle memory, one-to-one throughput, ping-pong.

use std::time::Instant;

use anyhow::{Context as _, ensure};
use foundation::{Addr, Ctx, Node};
use tokio::sync::oneshot;

use tokio::runtime::Runtime;

use super::{Bench, Sizes, ns_per};

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: "process.spawn_idle", unit: "ns", target: "<= 500", run: spawn_idle, warmup: true },
        Bench { name: "process.idle_bytes", unit: "B", target: "<= 512", run: idle_bytes, warmup: false },
        Bench { name: "message.one_to_one", unit: "msg/s", target: ">= 20M", run: one_to_one, warmup: true },
        Bench { name: "message.ping_pong_rtt", unit: "ns", target: "<= 250", run: ping_pong_rtt, warmup: true },
    ]
}

/// An idle process: waits for one message that never comes.
async fn idle(mut ctx: Ctx<()>) {
    ctx.recv().await;
}

/// Spawns `n` idle processes from inside a process-like task; returns the
/// spawn loop's duration.
async fn spawn_many(node: &Node, n: usize) -> std::time::Duration {
    let node2 = node.clone();
    tokio::spawn(async move {
        let start = Instant::now();
        for _ in 0..n {
            node2.spawn(idle);
        }
        start.elapsed()
    })
    .await
    .expect("spawner task")
}

fn spawn_idle(sizes: &Sizes, rt: &Runtime) -> anyhow::Result<f64> {
    let n = sizes.pick(1_000_000, 100_000);
    rt.block_on(async {
        let node = Node::new("bench");
        let elapsed = spawn_many(&node, n).await;
        ensure!(node.live_processes() == n, "expected {n} live processes, found {}", node.live_processes());
        let left = node.shutdown(std::time::Duration::from_secs(60)).await;
        ensure!(left == 0, "{left} processes outlived shutdown");
        Ok(ns_per(elapsed, n))
    })
}

/// Resident memory per idle process, measured in a fresh child process of
/// this binary: in this one, memory freed by earlier benches would be reused
/// and hide the real cost.
fn idle_bytes(sizes: &Sizes, _rt: &Runtime) -> anyhow::Result<f64> {
    let n = sizes.pick(1_000_000, 100_000);
    let exe = std::env::current_exe().context("locating the foundation binary")?;
    let out = std::process::Command::new(exe)
        .args(["bench-probe", "idle-bytes", &n.to_string(), "--workers", &sizes.workers.to_string()])
        .output()
        .context("running the idle-bytes probe")?;
    ensure!(out.status.success(), "idle-bytes probe failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().context("parsing the probe's figure")
}

/// The probe run by [`idle_bytes`] in a fresh process.
pub fn idle_bytes_probe(n: usize, workers: usize) -> anyhow::Result<f64> {
    let sizes = Sizes { quick: false, workers };
    let rt = sizes.runtime()?;
    rt.block_on(async {
        let node = Node::new("bench");
        // Warm the runtime and the allocator so the baseline holds them.
        spawn_many(&node, 1000).await;
        node.shutdown(std::time::Duration::from_secs(10)).await;
        let before = foundation_testkit::rss_bytes().context("reading resident memory")?;
        spawn_many(&node, n).await;
        let after = foundation_testkit::rss_bytes().context("reading resident memory")?;
        let left = node.shutdown(std::time::Duration::from_secs(60)).await;
        ensure!(left == 0, "{left} processes outlived shutdown");
        Ok(after.saturating_sub(before) as f64 / n as f64)
    })
}

fn one_to_one(sizes: &Sizes, rt: &Runtime) -> anyhow::Result<f64> {
    let n = sizes.pick(10_000_000, 1_000_000);
    rt.block_on(async {
        let node = Node::new("bench");
        let (done_tx, done_rx) = oneshot::channel::<Instant>();
        let receiver: Addr<u64> = node.spawn(move |mut ctx: Ctx<u64>| async move {
            let mut sum = 0u64;
            for _ in 0..n {
                sum = sum.wrapping_add(ctx.recv().await);
            }
            std::hint::black_box(sum);
            let _ = done_tx.send(Instant::now());
        });
        let (start_tx, start_rx) = oneshot::channel::<Instant>();
        node.spawn(move |_ctx: Ctx<()>| async move {
            let start = Instant::now();
            for i in 0..n as u64 {
                if receiver.send(i).await.is_err() {
                    return;
                }
            }
            let _ = start_tx.send(start);
        });
        let end = done_rx.await.context("receiver finished")?;
        let start = start_rx.await.context("sender finished")?;
        node.shutdown(std::time::Duration::from_secs(10)).await;
        Ok(n as f64 / (end - start).as_secs_f64())
    })
}

/// Ping-pong messages carry the address to answer to.
enum Ball {
    Serve(Addr<Ball>),
    Hit,
}
impl foundation::Message for Ball {}

fn ping_pong_rtt(sizes: &Sizes, rt: &Runtime) -> anyhow::Result<f64> {
    let n = sizes.pick(1_000_000, 100_000);
    rt.block_on(async {
        let node = Node::new("bench");
        let pong = node.spawn(|mut ctx: Ctx<Ball>| async move {
            let Ball::Serve(ping) = ctx.recv().await else { return };
            loop {
                ctx.recv().await;
                if ping.send(Ball::Hit).await.is_err() {
                    return;
                }
            }
        });
        let (done_tx, done_rx) = oneshot::channel();
        node.spawn(move |mut ctx: Ctx<Ball>| async move {
            let _ = pong.send(Ball::Serve(ctx.addr())).await;
            let start = Instant::now();
            for _ in 0..n {
                let _ = pong.send(Ball::Hit).await;
                ctx.recv().await;
            }
            let _ = done_tx.send(start.elapsed());
        });
        let elapsed = done_rx.await.context("ping finished")?;
        node.shutdown(std::time::Duration::from_secs(10)).await;
        Ok(ns_per(elapsed, n))
    })
}
