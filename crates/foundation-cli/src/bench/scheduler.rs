//! Scheduler bench: timer lateness while every worker runs sliced CPU work.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use foundation::schedulers::cpu_intensive_with_yielding;
use foundation::{Ctx, SpawnOpts};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Bench, Harness, Sizes};

pub fn benches() -> Vec<Bench> {
    vec![Bench { name: "scheduler.tick_lag_p99", unit: "ms", target: "<= 2", run: tick_lag_p99, warmup: false }]
}

/// CPU work of about `micros` µs.
fn burn(micros: u64) -> u64 {
    let start = std::time::Instant::now();
    let mut x = 1u64;
    while start.elapsed() < Duration::from_micros(micros) {
        for _ in 0..100 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
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
            let mut lateness = Vec::with_capacity(ticks);
            let mut started = Some(started_tx);
            let mut next = Instant::now() + Duration::from_millis(1);
            for _ in 0..ticks {
                tokio::time::sleep_until(next).await;
                lateness.push(Instant::now().saturating_duration_since(next));
                next += Duration::from_millis(1);
                if let Some(s) = started.take() {
                    let _ = s.send(());
                }
            }
            let _ = lag_tx.send(lateness);
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
        lateness.sort();
        Ok(lateness[lateness.len() * 99 / 100].as_secs_f64() * 1e3)
    })
}
