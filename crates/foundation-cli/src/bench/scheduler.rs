//! Scheduler bench: timer lateness while every worker runs sliced CPU work.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use foundation::schedulers::cpu_intensive_with_yielding;
use foundation::{Ctx, SpawnOpts};
use foundation_testkit::load::{burn, p99, tick_lateness};
use tokio::sync::oneshot;

use super::{Bench, Harness, Sizes};

pub fn benches() -> Vec<Bench> {
    vec![Bench { name: "scheduler.tick_lag_p99", unit: "ms", target: "<= 2", run: tick_lag_p99, warmup: false }]
}

/// The p99 lateness of a 1 ms ticker process while one CPU process per
/// worker runs `cpu_intensive_with_yielding` over items of ~50 µs. On the
/// scheduler pool the ticker shares scheduler 0 with a CPU process; with
/// `--tokio`, tokio places everything.
fn tick_lag_p99(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let ticks = sizes.pick(1000, 300);
    h.driver.block_on(async {
        let node = h.node();
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
        let mut lateness = lag_rx.await.context("the ticker ended early")?;
        for done in cpu {
            ensure!(done.await.context("a CPU process ended early")? == items, "CPU work incomplete");
        }
        node.shutdown(Duration::from_secs(10)).await;
        Ok(p99(&mut lateness).as_secs_f64() * 1e3)
    })
}
