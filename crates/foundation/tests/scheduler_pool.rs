//! Nodes on a scheduler pool: processes stay next to their parent, and the
//! whole runtime (ecosystems, supervision, shutdown) works the same there.

mod common;

use std::time::Duration;

use common::thread_name;

use foundation::ecosystem::{EcosystemConfig, ProcessSpec, ecosystem_info, shutdown_ecosystem, spawn_ecosystem};
use foundation::rt::{RtConfig, SchedulerPool, Spawner};
use foundation::{Ctx, ExitReason, Node, NodeConfig};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(5);

fn pooled_node(schedulers: usize) -> Node {
    node_on(SchedulerPool::new(schedulers).expect("scheduler threads"))
}

fn migrating_node(schedulers: usize) -> Node {
    node_on(SchedulerPool::migrating(schedulers).expect("scheduler threads"))
}

fn node_on(pool: std::sync::Arc<SchedulerPool>) -> Node {
    node_with(Spawner::Pool(pool))
}

fn node_with(spawner: Spawner) -> Node {
    let rt = RtConfig { spawner, ..RtConfig::default() };
    Node::with_config(NodeConfig { name: "pooled".into(), rt, ..NodeConfig::default() }).expect("valid config")
}

/// `Node::new` puts its processes on the process-wide migrating pool, one
/// scheduler per core, shared by every default node whatever runtime made
/// it: placement by index works there, and a process's thread is one of
/// the pool's, not the caller's (issue 16: the pool as the default).
#[test]
fn a_default_node_runs_on_the_shared_migrating_pool() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (a, b) = (Node::new("a"), Node::new("b"));
    assert_eq!((a.rt().schedulers(), b.rt().schedulers()), (cores, cores), "default nodes have the shared pool's schedulers");
    let shared = SchedulerPool::shared().expect("the shared pool");
    assert!(shared.migrates() && shared.schedulers() == cores);
    let driver = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("driver runtime");
    driver.block_on(async {
        let mut names = Vec::new();
        for (node, scheduler) in [(&a, None), (&b, Some(cores - 1))] {
            let (tx, rx) = oneshot::channel();
            let opts = foundation::SpawnOpts { scheduler, ..Default::default() };
            node.spawn_with(opts, move |_c: Ctx<()>| async move {
                let _ = tx.send(thread_name());
            })
            .expect("a scheduler of the shared pool");
            names.push(tokio::time::timeout(WAIT, rx).await.expect("in time").expect("ran"));
        }
        assert!(names[0].starts_with("foundation-sched-"), "not the driver's thread: {names:?}");
        assert_eq!(names[1], format!("foundation-sched-{}", cores - 1));
        assert_eq!((a.shutdown(WAIT).await, b.shutdown(WAIT).await), (0, 0));
    });
}

#[test]
fn children_run_on_their_parents_scheduler() {
    let node = pooled_node(2);
    let driver = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("driver runtime");
    driver.block_on(async {
        let (tx, rx) = oneshot::channel();
        node.spawn(move |mut ctx: Ctx<()>| async move {
            let (child_tx, child_rx) = oneshot::channel();
            ctx.spawn_link(move |_c: Ctx<()>| async move {
                let _ = child_tx.send(thread_name());
            });
            let _ = tx.send((thread_name(), child_rx.await.expect("child ran")));
            ctx.recv().await
        });
        let (parent, child) = tokio::time::timeout(WAIT, rx).await.expect("in time").expect("parent ran");
        assert!(parent.starts_with("foundation-sched-"), "{parent}");
        assert_eq!(parent, child);
        assert_eq!(node.shutdown(WAIT).await, 0);
    });
}

#[test]
fn ecosystems_heal_and_shut_down_on_a_pool() {
    let node = pooled_node(2);
    let driver = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("driver runtime");
    driver.block_on(async {
        let idle = || {
            ProcessSpec::new(|mut ctx: Ctx<u64>| async move {
                loop {
                    ctx.recv().await;
                }
            })
        };
        let eco = spawn_ecosystem(&node, EcosystemConfig::new(idle(), idle(), 100).self_healing()).await.expect("spawns");
        assert_eq!(ecosystem_info(&eco).await.expect("info").total_processes, 101);
        let victim = eco.workers[7];
        let exited = node.watch(victim);
        node.exit(victim, ExitReason::Kill);
        assert_eq!(exited.await, ExitReason::Killed);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let info = ecosystem_info(&eco).await.expect("info");
            if info.total_processes == 101 && !info.workers.contains(&victim) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "not healed: {info:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown_ecosystem(&eco).await.expect("clean shutdown");
        assert_eq!(node.live_processes(), 0);
    });
}

#[test]
fn placement_spreads_work_and_bad_placement_is_refused() {
    let node = pooled_node(2);
    let driver = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("driver runtime");
    driver.block_on(async {
        let mut names = Vec::new();
        for index in [0, 1] {
            let (tx, rx) = oneshot::channel();
            let opts = foundation::SpawnOpts { scheduler: Some(index), ..Default::default() };
            let p = node
                .spawn_with(opts, move |_c: Ctx<()>| async move {
                    let _ = tx.send(thread_name());
                })
                .expect("a scheduler of the pool");
            let exited = node.watch(p.pid());
            names.push(rx.await.expect("ran"));
            exited.await;
        }
        assert_eq!(names, ["foundation-sched-0", "foundation-sched-1"]);
        let opts = foundation::SpawnOpts { scheduler: Some(2), ..Default::default() };
        let err = node.spawn_with(opts, |_c: Ctx<()>| async {}).expect_err("no scheduler 2");
        assert_eq!(err, foundation::SpawnError::NoScheduler { index: 2, available: 2 });
        assert_eq!(node.live_processes(), 0);
    });
    let ambient = node_with(Spawner::Ambient);
    let opts = foundation::SpawnOpts { scheduler: Some(0), ..Default::default() };
    let err = ambient.spawn_with(opts, |_c: Ctx<()>| async {}).expect_err("no pool");
    assert!(err.to_string().contains("without a pool"), "{err}");
}

/// `SpawnOpts::spread` is a hint every node takes: on a pool, processes
/// spawned with it from one scheduler land on both; on a node without a
/// pool, the same code runs (tokio's runtime places them).
#[test]
fn the_spread_hint_uses_every_scheduler_and_works_without_a_pool() {
    async fn spawn_spread(node: Node, n: usize) -> Vec<String> {
        let (tx, rx) = oneshot::channel();
        node.spawn(move |ctx: Ctx<()>| async move {
            let mut names = Vec::new();
            for _ in 0..n {
                let (one_tx, one_rx) = oneshot::channel();
                let opts = foundation::SpawnOpts { spread: true, ..Default::default() };
                ctx.node()
                    .spawn_with(opts, move |_c: Ctx<()>| async move {
                        let _ = one_tx.send(thread_name());
                    })
                    .expect("a hint is never refused");
                names.push(one_rx.await.expect("ran"));
            }
            let _ = tx.send(names);
        });
        tokio::time::timeout(WAIT, rx).await.expect("in time").expect("spawner ran")
    }
    let node = pooled_node(2);
    let driver = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("driver runtime");
    driver.block_on(async {
        let mut names = spawn_spread(node.clone(), 4).await;
        names.sort();
        names.dedup();
        assert_eq!(names, ["foundation-sched-0", "foundation-sched-1"], "spawned from one scheduler, run on both");
        assert_eq!(node.shutdown(WAIT).await, 0);
    });
    let ambient = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    ambient.block_on(async {
        let node = node_with(Spawner::Ambient);
        assert_eq!(spawn_spread(node.clone(), 4).await.len(), 4);
        assert_eq!(node.shutdown(WAIT).await, 0);
    });
}

/// Work spawned from one process spreads over a migrating pool with no
/// placement by hand: the spawner's scheduler runs heavy polls while the
/// other is idle, so it exports processes to it (issue 16's fan-out; on a
/// pool without migration, as before, all 200 workers finish on their
/// spawner's scheduler: "200 and 0").
#[test]
fn heavy_work_spawned_from_one_process_moves_to_the_idle_scheduler() {
    // Where each worker finished: the thread its last item ran on.
    let names: Vec<String> = common::fan_out(&migrating_node(2), 200, 10).into_iter().filter_map(|mut ran_on| ran_on.pop()).collect();
    let on = |s: &str| names.iter().filter(|n| n.as_str() == s).count();
    let (zero, one) = (on("foundation-sched-0"), on("foundation-sched-1"));
    assert_eq!(zero + one, 200, "{names:?}");
    assert!(zero >= 20 && one >= 20, "workers finished on both schedulers: {zero} and {one}");
}

/// Where a pong goes back to.
struct Back(foundation::Addr<u32>);
impl foundation::Message for Back {}

/// Light polls never export: two processes in a ping-pong stay on one
/// scheduler of a migrating pool while the other idles. Each side counts
/// its round trips per thread; the pair must share one for at least 90 %
/// of them (a move late in the run, after a rare slow stretch, is
/// tolerated; a pool that split chatty pairs would run them apart nearly
/// throughout).
#[test]
fn a_ping_pong_pair_stays_together_while_the_other_scheduler_idles() {
    const TRIPS: usize = 100_000;
    fn count(on: &mut std::collections::BTreeMap<String, usize>) {
        *on.entry(thread_name()).or_default() += 1;
    }
    let node = migrating_node(2);
    let driver = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("driver runtime");
    let (ping, pong) = driver.block_on(async {
        let (tx, rx) = oneshot::channel();
        node.spawn(move |ctx: Ctx<()>| async move {
            let (pong_tx, pong_rx) = oneshot::channel();
            let pong = ctx.node().spawn(move |mut ctx: Ctx<Back>| async move {
                let mut on = std::collections::BTreeMap::new();
                for _ in 0..TRIPS {
                    let Back(back) = ctx.recv().await;
                    count(&mut on);
                    let _ = back.send(0).await;
                }
                let _ = pong_tx.send(on);
            });
            ctx.node().spawn(move |mut ctx: Ctx<u32>| async move {
                let mut on = std::collections::BTreeMap::new();
                for _ in 0..TRIPS {
                    let _ = pong.send(Back(ctx.addr())).await;
                    ctx.recv().await;
                    count(&mut on);
                }
                let _ = tx.send((on, pong_rx.await.unwrap_or_default()));
            });
        });
        tokio::time::timeout(Duration::from_secs(120), rx).await.expect("in time").expect("pair ran")
    });
    let together: usize = ping.iter().map(|(thread, n)| (*n).min(pong.get(thread).copied().unwrap_or(0))).sum();
    assert!(together * 10 >= TRIPS * 9, "the pair shared a scheduler for {together} of {TRIPS} round trips: ping {ping:?}, pong {pong:?}");
}

/// Kills race migrations: heavy processes killed while their scheduler
/// exports them all end killed, once, and nothing is left running.
#[test]
fn processes_killed_while_they_move_end_once() {
    let node = migrating_node(2);
    let driver = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("driver runtime");
    driver.block_on(async {
        let (tx, rx) = oneshot::channel();
        let n = node.clone();
        node.spawn(move |ctx: Ctx<()>| async move {
            let workers: Vec<_> = (0..200)
                .map(|_| {
                    ctx.node().spawn(move |mut ctx: Ctx<u32>| async move {
                        loop {
                            ctx.recv().await;
                            foundation_testutil::load::burn(100);
                        }
                    })
                })
                .collect();
            let watches: Vec<_> = workers.iter().map(|w| n.watch(w.pid())).collect();
            for round in 0..5 {
                for (i, w) in workers.iter().enumerate() {
                    let _ = w.try_send(1);
                    if i % 5 == round {
                        n.exit(w.pid(), ExitReason::Kill);
                    }
                }
                tokio::task::yield_now().await;
            }
            let mut reasons = Vec::new();
            for w in watches {
                reasons.push(w.await);
            }
            let _ = tx.send(reasons);
        });
        let reasons = tokio::time::timeout(Duration::from_secs(60), rx).await.expect("in time").expect("killer ran");
        assert_eq!(reasons.len(), 200);
        assert!(reasons.iter().all(|r| *r == ExitReason::Killed), "{reasons:?}");
        let deadline = tokio::time::Instant::now() + WAIT;
        while node.live_processes() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "{} processes left", node.live_processes());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}
