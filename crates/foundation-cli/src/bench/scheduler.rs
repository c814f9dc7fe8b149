//! Scheduler bench: timer lateness while every worker runs sliced CPU work.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use foundation::schedulers::cpu_intensive_with_yielding;
use foundation::{Ctx, SpawnOpts};
use foundation_testkit::load::{burn, p99, tick_lateness};
use tokio::sync::oneshot;

use super::{Bench, Harness, Sizes};

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: "scheduler.tick_lag_p99", unit: "ms", target: "<= 2", run: tick_lag_p99, warmup: false },
        Bench { name: "scheduler.tick_lag_p99_migrating", unit: "ms", target: "<= 2", run: tick_lag_p99_migrating, warmup: false },
        Bench { name: "scheduler.tick_lag_max_after_exit", unit: "ms", target: "<= 5", run: tick_lag_max_after_exit, warmup: false },
        Bench { name: "scheduler.fanout_parallelism", unit: "cores", target: ">= 1.9 of 2", run: fanout_parallelism, warmup: false },
        Bench {
            name: "scheduler.fanout_parallelism_fixed",
            unit: "cores",
            target: "(no migration)",
            run: fanout_parallelism_fixed,
            warmup: false,
        },
        Bench { name: "scheduler.idle_cpu", unit: "% of a core", target: "(a ticker waking 100×/s)", run: idle_cpu, warmup: false },
        Bench {
            name: "scheduler.idle_cpu_no_busy_wait",
            unit: "% of a core",
            target: "(the same, busy_wait 0)",
            run: idle_cpu_no_busy_wait,
            warmup: false,
        },
    ]
}

/// What an idle node costs on a pool with the default busy wait: the CPU
/// time of this process's threads (those alive throughout) while the
/// node's one process wakes every 10 ms and does nothing, over the wall
/// time. (With `--tokio`, the node
/// runs on tokio's runtime and the two rows measure the same.)
fn idle_cpu(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    idle_cpu_with(sizes, h, foundation::rt::BUSY_WAIT)
}

/// [`idle_cpu`] on a pool that sleeps at once (`busy_wait(0)`).
fn idle_cpu_no_busy_wait(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    idle_cpu_with(sizes, h, Duration::ZERO)
}

fn idle_cpu_with(sizes: &Sizes, h: &Harness, window: Duration) -> anyhow::Result<f64> {
    let wakes = sizes.pick(100, 30);
    let node = if sizes.tokio {
        h.node()
    } else {
        let pool = foundation::rt::SchedulerPool::builder(sizes.workers).busy_wait(window).start().context("starting a pool")?;
        let rt = foundation::rt::RtConfig { spawner: foundation::rt::Spawner::Pool(pool), ..Default::default() };
        foundation::Node::with_config(foundation::NodeConfig { name: "idle".into(), rt, ..Default::default() })?
    };
    h.driver.block_on(async {
        let (tx, rx) = oneshot::channel();
        node.spawn(move |_ctx: Ctx<()>| async move {
            let measured = async {
                let (cpu, start) = (cpu_times()?, std::time::Instant::now());
                for _ in 0..wakes {
                    foundation::rt::sleep(Duration::from_millis(10)).await;
                }
                Some((cpu_between(&cpu, &cpu_times()?), start.elapsed()))
            };
            let _ = tx.send(measured.await);
        });
        let (cpu, wall) = rx.await.ok().flatten().context("the ticker ended early, or /proc/self/task is unreadable")?;
        node.shutdown(Duration::from_secs(10)).await;
        Ok(100.0 * cpu.as_secs_f64() / wall.as_secs_f64())
    })
}

/// CPU time of each thread of this process so far (by thread id), from
/// the kernel's per-thread `schedstat` (nanoseconds on CPU).
fn cpu_times() -> Option<std::collections::HashMap<String, u64>> {
    let mut times = std::collections::HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread that ended since the listing has no figure: skipped.
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat"))
            && let Some(Ok(ns)) = stat.split_whitespace().next().map(str::parse::<u64>)
        {
            times.insert(task.file_name().to_string_lossy().into_owned(), ns);
        }
    }
    Some(times)
}

/// CPU time spent between two [`cpu_times`] by the threads in both (the
/// threads of pools dropped by earlier runs end in between).
fn cpu_between(before: &std::collections::HashMap<String, u64>, after: &std::collections::HashMap<String, u64>) -> Duration {
    let ns = after.iter().filter_map(|(tid, ns)| Some(ns.saturating_sub(*before.get(tid)?))).sum();
    Duration::from_nanos(ns)
}

/// Issue 16's fan-out: one process spawns 1,000 processes (no placement by
/// hand) and sends each 10 messages, each costing ~50 µs of CPU. The
/// figure is the work done (10,000 × 50 µs) over the wall time: 2.0 is
/// every core of a 2-core machine busy all along. On a migrating pool
/// (`SchedulerPool::migrating`, as many schedulers as the harness's), or
/// tokio's runtime with `--tokio`.
fn fanout_parallelism(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    fanout(sizes, h, migrating_node(sizes, h, "fanout")?)
}

/// A node on a migrating pool with as many schedulers as the harness's
/// (the harness's own node with `--tokio`).
pub(super) fn migrating_node(sizes: &Sizes, h: &Harness, name: &str) -> anyhow::Result<foundation::Node> {
    if sizes.tokio {
        return Ok(h.node());
    }
    let pool = foundation::rt::SchedulerPool::migrating(sizes.workers).context("starting a migrating pool")?;
    let rt = foundation::rt::RtConfig { spawner: foundation::rt::Spawner::Pool(pool), ..Default::default() };
    Ok(foundation::Node::with_config(foundation::NodeConfig { name: name.into(), rt, ..Default::default() })?)
}

/// [`fanout_parallelism`] on the harness's pool, where processes stay
/// where they start (the figure before migration).
fn fanout_parallelism_fixed(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    fanout(sizes, h, h.node())
}

fn fanout(sizes: &Sizes, h: &Harness, node: foundation::Node) -> anyhow::Result<f64> {
    const ROUNDS: usize = 10;
    const WORK_US: u64 = 50;
    let processes = sizes.pick(1000, 200);
    h.driver.block_on(async {
        let (tx, rx) = oneshot::channel();
        node.spawn(move |ctx: Ctx<()>| async move {
            let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
            let start = std::time::Instant::now();
            let workers: Vec<_> = (0..processes)
                .map(|_| {
                    let done = done_tx.clone();
                    ctx.node().spawn(move |mut ctx: Ctx<u32>| async move {
                        for _ in 0..ROUNDS {
                            ctx.recv().await;
                            burn(WORK_US);
                        }
                        let _ = done.send(());
                    })
                })
                .collect();
            for _ in 0..ROUNDS {
                for w in &workers {
                    let _ = w.send(1).await;
                }
            }
            for _ in 0..processes {
                let _ = done_rx.recv().await;
            }
            let _ = tx.send(start.elapsed());
        });
        let elapsed = rx.await.context("the spawner ended early")?;
        node.shutdown(Duration::from_secs(10)).await;
        let work = Duration::from_micros(WORK_US) * (processes * ROUNDS) as u32;
        Ok(work.as_secs_f64() / elapsed.as_secs_f64())
    })
}

/// The p99 lateness of a 1 ms ticker process while one CPU process per
/// worker runs `cpu_intensive_with_yielding` over items of ~50 µs. On the
/// scheduler pool the ticker shares scheduler 0 with a CPU process; with
/// `--tokio`, tokio places everything.
fn tick_lag_p99(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    tick_lag(sizes, h, h.node())
}

/// [`tick_lag_p99`] on a migrating pool: the same placement to start
/// with, and the loaded schedulers free to move processes (the ticker
/// among them) to each other.
fn tick_lag_p99_migrating(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    tick_lag(sizes, h, migrating_node(sizes, h, "ticks")?)
}

/// The worst lateness of the same ticker, beside the same CPU work, over
/// 2 s that start as soon as 1,000,000 idle processes have exited on
/// another pool and that pool's threads have ended (about 466 MB freed at
/// once, as when a node's own pool, or a burst of blocking threads, goes
/// away). The allocator (mimalloc in the `foundation` binary) returns
/// such memory to the OS about a second later, and on a machine whose
/// schedulers fill every core that return stalls them: 10–20 ms in some
/// runs. `MIMALLOC_PURGE_DELAY=-1` (never return freed memory) removes the
/// stalls; see the README.
fn tick_lag_max_after_exit(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let n = sizes.pick(1_000_000, 100_000);
    {
        let gone = Harness::new(sizes)?;
        gone.driver.block_on(async {
            let node = gone.node();
            super::process::spawn_many(&node, n).await?;
            let left = node.shutdown(Duration::from_secs(60)).await;
            ensure!(left == 0, "{left} processes outlived shutdown");
            anyhow::Ok(())
        })?;
    }
    let mut lateness = tick_lateness_beside_cpu(sizes, h, h.node(), sizes.pick(2000, 300))?;
    // `p99` sorts: the last is then the worst.
    eprintln!("  scheduler.tick_lag_max_after_exit: p99 {:.2} ms", p99(&mut lateness).as_secs_f64() * 1e3);
    Ok(lateness.last().context("no ticks")?.as_secs_f64() * 1e3)
}

fn tick_lag(sizes: &Sizes, h: &Harness, node: foundation::Node) -> anyhow::Result<f64> {
    let mut lateness = tick_lateness_beside_cpu(sizes, h, node, sizes.pick(1000, 300))?;
    Ok(p99(&mut lateness).as_secs_f64() * 1e3)
}

/// How late each of `ticks` 1 ms ticks of a process on scheduler 0 was
/// while one process per scheduler runs sliced CPU work (see
/// [`tick_lag_p99`]); the node is shut down after.
fn tick_lateness_beside_cpu(sizes: &Sizes, h: &Harness, node: foundation::Node, ticks: usize) -> anyhow::Result<Vec<Duration>> {
    h.driver.block_on(async {
        let placed = |i: usize| SpawnOpts { scheduler: (!sizes.tokio).then_some(i), ..SpawnOpts::default() };
        let (started_tx, started_rx) = oneshot::channel();
        let (lag_tx, lag_rx) = oneshot::channel();
        node.spawn_with(placed(0), move |_c: Ctx<()>| async move {
            let _ = lag_tx.send(tick_lateness(ticks, started_tx).await);
        })?;
        started_rx.await.context("the ticker did not start")?;
        // Enough work per worker to outlast the ticker.
        let items = ticks * 1000 / 50 + 2000;
        let mut cpu = Vec::new();
        for i in 0..sizes.workers {
            let (tx, rx) = oneshot::channel();
            cpu.push(rx);
            node.spawn_with(placed(i), move |_c: Ctx<()>| async move {
                let out = cpu_intensive_with_yielding(0..items, |_| burn(50)).await;
                let _ = tx.send(out.len());
            })?;
        }
        let lateness = lag_rx.await.context("the ticker ended early")?;
        for done in cpu {
            ensure!(done.await.context("a CPU process ended early")? == items, "CPU work incomplete");
        }
        node.shutdown(Duration::from_secs(10)).await;
        Ok(lateness)
    })
}
