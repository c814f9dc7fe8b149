//! Process-layer benches: spawn, idle memory, one-to-one throughput, ping-pong.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use foundation::{Addr, Ctx, Node, Reply};
use tokio::sync::oneshot;

use super::{Bench, Harness, Sizes, in_root, ns_per};

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: "process.spawn_idle", unit: "ns", target: "<= 500", run: spawn_idle, warmup: true },
        Bench { name: "process.idle_bytes", unit: "B", target: "<= 512", run: idle_bytes, warmup: false },
        Bench { name: "process.migrating_idle_bytes", unit: "B", target: "<= 512", run: idle_bytes_migrating, warmup: false },
        Bench { name: "message.one_to_one", unit: "msg/s", target: ">= 20M", run: one_to_one, warmup: true },
        Bench { name: "message.ping_pong_rtt", unit: "ns", target: "<= 250", run: ping_pong_rtt, warmup: true },
        Bench { name: "message.call_rtt", unit: "ns", target: "<= 300", run: call_rtt, warmup: true },
        Bench { name: "message.call_rtt_by_hand", unit: "ns", target: "(reference)", run: call_rtt_by_hand, warmup: true },
    ]
}

/// An idle process: waits for one message that never comes.
async fn idle(mut ctx: Ctx<()>) {
    ctx.recv().await;
}

/// Spawns `n` idle processes from the root process; returns the spawn
/// loop's duration.
pub(super) async fn spawn_many(node: &Node, n: usize) -> anyhow::Result<Duration> {
    in_root(node, move |ctx: Ctx<()>| async move {
        let start = Instant::now();
        for _ in 0..n {
            ctx.node().spawn(idle);
        }
        start.elapsed()
    })
    .await
}

fn spawn_idle(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let n = sizes.pick(1_000_000, 100_000);
    h.driver.block_on(async {
        let node = h.node();
        let elapsed = spawn_many(&node, n).await?;
        ensure!(node.live_processes() == n, "expected {n} live processes, found {}", node.live_processes());
        let left = node.shutdown(Duration::from_secs(60)).await;
        ensure!(left == 0, "{left} processes outlived shutdown");
        Ok(ns_per(elapsed, n))
    })
}

/// Resident memory per idle process, measured in a fresh child process of
/// this binary: in this one, memory freed by earlier benches would be reused
/// and hide the real cost.
fn idle_bytes(sizes: &Sizes, _h: &Harness) -> anyhow::Result<f64> {
    run_idle_bytes_probe(sizes, "idle-bytes")
}

/// [`idle_bytes`] on a migrating pool (`SchedulerPool::migrating`; the
/// harness's node with `--tokio`).
fn idle_bytes_migrating(sizes: &Sizes, _h: &Harness) -> anyhow::Result<f64> {
    run_idle_bytes_probe(sizes, "idle-bytes-migrating")
}

fn run_idle_bytes_probe(sizes: &Sizes, which: &str) -> anyhow::Result<f64> {
    let n = sizes.pick(1_000_000, 100_000);
    let exe = std::env::current_exe().context("locating the foundation binary")?;
    let mut probe = std::process::Command::new(exe);
    probe.args(["bench-probe", which, &n.to_string(), "--workers", &sizes.workers.to_string()]);
    if sizes.tokio {
        probe.arg("--tokio");
    }
    let out = probe.output().context("running the idle-bytes probe")?;
    ensure!(out.status.success(), "idle-bytes probe failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().context("parsing the probe's figure")
}

/// The probe run by [`idle_bytes`] (and, `migrating`, by
/// [`idle_bytes_migrating`]) in a fresh process.
pub fn idle_bytes_probe(n: usize, workers: usize, tokio: bool, migrating: bool) -> anyhow::Result<f64> {
    let sizes = Sizes { quick: false, workers, tokio };
    let h = Harness::new(&sizes)?;
    h.driver.block_on(async {
        let node = if migrating { super::scheduler::migrating_node(&sizes, &h, "bench")? } else { h.node() };
        // Warm the runtime and the allocator so the baseline holds them.
        spawn_many(&node, 1000).await?;
        node.shutdown(Duration::from_secs(10)).await;
        let before = foundation_testkit::rss_bytes().context("reading resident memory")?;
        spawn_many(&node, n).await?;
        let after = foundation_testkit::rss_bytes().context("reading resident memory")?;
        let left = node.shutdown(Duration::from_secs(60)).await;
        ensure!(left == 0, "{left} processes outlived shutdown");
        Ok(after.saturating_sub(before) as f64 / n as f64)
    })
}

/// A process that receives `n` numbers (summing them, so the work is not
/// optimised away), then says when it took the last.
pub(super) fn sink(node: &Node, n: u64) -> (Addr<u64>, oneshot::Receiver<Instant>) {
    let (done_tx, done_rx) = oneshot::channel::<Instant>();
    let receiver = node.spawn(move |mut ctx: Ctx<u64>| async move {
        let mut sum = 0u64;
        for _ in 0..n {
            sum = sum.wrapping_add(ctx.recv().await);
        }
        std::hint::black_box(sum);
        let _ = done_tx.send(Instant::now());
    });
    (receiver, done_rx)
}

fn one_to_one(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let n = sizes.pick(10_000_000, 1_000_000);
    h.driver.block_on(async {
        let node = h.node();
        let elapsed = in_root(&node, move |ctx: Ctx<()>| async move {
            let (receiver, done_rx) = sink(ctx.node(), n as u64);
            let (start_tx, start_rx) = oneshot::channel::<Instant>();
            ctx.node().spawn(move |_ctx: Ctx<()>| async move {
                let start = Instant::now();
                for i in 0..n as u64 {
                    if receiver.send(i).await.is_err() {
                        return;
                    }
                }
                let _ = start_tx.send(start);
            });
            let end = done_rx.await.ok()?;
            let start = start_rx.await.ok()?;
            Some(end - start)
        })
        .await?
        .context("sender or receiver ended early")?;
        node.shutdown(Duration::from_secs(10)).await;
        Ok(n as f64 / elapsed.as_secs_f64())
    })
}

/// Ping-pong messages carry the address to answer to.
enum Ball {
    Serve(Addr<Ball>),
    Hit,
}
impl foundation::Message for Ball {}

fn ping_pong_rtt(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let n = sizes.pick(1_000_000, 100_000);
    h.driver.block_on(async {
        let node = h.node();
        let elapsed = in_root(&node, move |ctx: Ctx<()>| async move {
            let pong = ctx.node().spawn(|mut ctx: Ctx<Ball>| async move {
                let Ball::Serve(ping) = ctx.recv().await else { return };
                loop {
                    ctx.recv().await;
                    if ping.send(Ball::Hit).await.is_err() {
                        return;
                    }
                }
            });
            let (done_tx, done_rx) = oneshot::channel();
            ctx.node().spawn(move |mut ctx: Ctx<Ball>| async move {
                let _ = pong.send(Ball::Serve(ctx.addr())).await;
                let start = Instant::now();
                for _ in 0..n {
                    let _ = pong.send(Ball::Hit).await;
                    ctx.recv().await;
                }
                let _ = done_tx.send(start.elapsed());
            });
            done_rx.await.ok()
        })
        .await?
        .context("ping ended early")?;
        node.shutdown(Duration::from_secs(10)).await;
        Ok(ns_per(elapsed, n))
    })
}

/// Round trips of `Addr::call` (a request with a fresh `Reply` and a 5 s
/// timeout) between two processes, as the README teaches request/reply.
fn call_rtt(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    round_trips(sizes, h, |pong, i| async move { pong.call(|r| (i, r), Duration::from_secs(5)).await.ok() })
}

/// [`call_rtt`] with the reply channel built by hand
/// (`foundation::reply_channel`) and no deadline: the floor `call` is
/// measured against.
fn call_rtt_by_hand(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    round_trips(sizes, h, |pong, i| async move {
        let (reply, answer) = foundation::reply_channel();
        pong.send((i, reply)).await.ok()?;
        answer.await.ok()
    })
}

/// `n` requests from one process to an echoing one, each made by `ask`.
fn round_trips<F, Fut>(sizes: &Sizes, h: &Harness, ask: F) -> anyhow::Result<f64>
where
    F: Fn(Addr<(u64, Reply<u64>)>, u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<u64>> + Send,
{
    let n = sizes.pick(1_000_000, 100_000);
    h.driver.block_on(async {
        let node = h.node();
        let elapsed = in_root(&node, move |ctx: Ctx<()>| async move {
            let echo = ctx.node().spawn(|mut ctx: Ctx<(u64, Reply<u64>)>| async move {
                loop {
                    let (i, reply) = ctx.recv().await;
                    let _ = reply.send(i);
                }
            });
            let (done_tx, done_rx) = oneshot::channel();
            ctx.node().spawn(move |_ctx: Ctx<()>| async move {
                let start = Instant::now();
                for i in 0..n as u64 {
                    if ask(echo.clone(), i).await != Some(i) {
                        return;
                    }
                }
                let _ = done_tx.send(start.elapsed());
            });
            done_rx.await.ok()
        })
        .await?
        .context("the caller ended early")?;
        node.shutdown(Duration::from_secs(10)).await;
        Ok(ns_per(elapsed, n))
    })
}
