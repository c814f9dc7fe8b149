//! Nodes on a scheduler pool: processes stay next to their parent, and the
//! whole runtime (ecosystems, supervision, shutdown) works the same there.

use std::time::Duration;

use foundation::ecosystem::{EcosystemConfig, ProcessSpec, ecosystem_info, shutdown_ecosystem, spawn_ecosystem};
use foundation::rt::{RtConfig, SchedulerPool, Spawner};
use foundation::{Ctx, ExitReason, Node, NodeConfig};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(5);

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

fn pooled_node(schedulers: usize) -> Node {
    let pool = SchedulerPool::new(schedulers).expect("scheduler threads");
    let rt = RtConfig { spawner: Spawner::Pool(pool), ..RtConfig::default() };
    Node::with_config(NodeConfig { name: "pooled".into(), rt, ..NodeConfig::default() }).expect("valid config")
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
    let ambient = Node::new("ambient");
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
        let node = Node::new("ambient");
        assert_eq!(spawn_spread(node.clone(), 4).await.len(), 4);
        assert_eq!(node.shutdown(WAIT).await, 0);
    });
}
