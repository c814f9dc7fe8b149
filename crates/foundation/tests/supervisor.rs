//! Supervisor strategies, restart types, intensity, ordered start and
//! reverse-order shutdown with per-child timeouts.

use std::sync::Arc;
use std::time::Duration;

use foundation::supervisor::{ChildSpec, Restart, Shutdown, Strategy, Supervisor, SupervisorError, SupervisorSpec};
use foundation::{Ctx, ExitReason, Node, Pid};
use foundation_testutil::assert_eventually;
use parking_lot::Mutex;

const WAIT: Duration = Duration::from_secs(5);

/// A child that logs "start <id>" when started (synchronously, by its start
/// function) and "stop <id>" when it gets its shutdown signal.
fn logged(id: &'static str, log: Arc<Mutex<Vec<String>>>) -> ChildSpec {
    ChildSpec::new(id, move |mut ctx: Ctx<ExitReason>| {
        let log = log.clone();
        log.lock().push(format!("start {id}"));
        async move {
            loop {
                match ctx.recv_event().await {
                    foundation::Event::Message(reason) => return reason,
                    foundation::Event::Exit { reason, .. } => {
                        log.lock().push(format!("stop {id}"));
                        return reason;
                    }
                    foundation::Event::Down { .. } => {}
                }
            }
        }
    })
    .trapping_exits()
}

async fn pids(sup: &Supervisor) -> Vec<Option<Pid>> {
    sup.which_children().await.expect("supervisor answers").into_iter().map(|c| c.pid).collect()
}

async fn kill_and_wait_restart(node: &Node, sup: &Supervisor, victim: Pid) {
    let exited = node.watch(victim);
    node.exit(victim, ExitReason::Kill);
    exited.await;
    for _ in 0..500 {
        let now = pids(sup).await;
        if now.iter().all(|p| p.is_some_and(|p| node.is_alive(p))) && !now.contains(&Some(victim)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("children not restarted within the wait");
}

fn spec(strategy: Strategy, children: Vec<ChildSpec>) -> SupervisorSpec {
    SupervisorSpec { strategy, intensity: 10, period: Duration::from_secs(5), children }
}

/// A supervisor over three logged children a, b, c; returns their pids.
async fn start_abc(strategy: Strategy) -> (Node, Arc<Mutex<Vec<String>>>, Supervisor, Vec<Option<Pid>>) {
    let node = Node::new("t");
    let log = Arc::new(Mutex::new(Vec::new()));
    let children = vec![logged("a", log.clone()), logged("b", log.clone()), logged("c", log.clone())];
    let sup = Supervisor::start(&node, spec(strategy, children)).await.expect("starts");
    let before = pids(&sup).await;
    (node, log, sup, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_failed_child() {
    let (node, log, sup, before) = start_abc(Strategy::OneForOne).await;
    assert_eq!(*log.lock(), ["start a", "start b", "start c"], "ordered start");
    kill_and_wait_restart(&node, &sup, before[1].unwrap()).await;
    let after = pids(&sup).await;
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
    assert_eq!(after[2], before[2]);
    let infos = sup.which_children().await.unwrap();
    assert_eq!(infos.iter().map(|c| c.restarts).collect::<Vec<_>>(), [0, 1, 0]);
    assert_eq!(node.process_info(after[1].unwrap()).unwrap().restarts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_every_child_in_order() {
    let (node, log, sup, before) = start_abc(Strategy::OneForAll).await;
    log.lock().clear();
    kill_and_wait_restart(&node, &sup, before[1].unwrap()).await;
    let after = pids(&sup).await;
    assert!(before.iter().zip(&after).all(|(b, a)| b != a), "all replaced: {before:?} -> {after:?}");
    assert_eq!(*log.lock(), ["stop c", "stop a", "start a", "start b", "start c"], "others stop in reverse, all start in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_for_one_restarts_the_failed_child_and_later_ones() {
    let (node, log, sup, before) = start_abc(Strategy::RestForOne).await;
    log.lock().clear();
    kill_and_wait_restart(&node, &sup, before[1].unwrap()).await;
    let after = pids(&sup).await;
    assert_eq!(after[0], before[0], "a started before b: untouched");
    assert_ne!(after[1], before[1]);
    assert_ne!(after[2], before[2]);
    assert_eq!(*log.lock(), ["stop c", "start b", "start c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_limit_makes_the_supervisor_give_up() {
    let node = Node::new("t");
    let log = Arc::new(Mutex::new(Vec::new()));
    let spec = SupervisorSpec {
        strategy: Strategy::OneForOne,
        intensity: 3,
        period: Duration::from_secs(60),
        children: vec![logged("a", log.clone()), logged("b", log)],
    };
    let sup = Supervisor::start(&node, spec).await.expect("starts");
    let sup_exit = node.watch(sup.pid());
    for _ in 0..3 {
        let a = pids(&sup).await[0].unwrap();
        kill_and_wait_restart(&node, &sup, a).await;
    }
    let a = pids(&sup).await[0].unwrap();
    node.exit(a, ExitReason::Kill);
    assert_eq!(sup_exit.await, ExitReason::RestartIntensity, "the 4th restart in the period is one too many");
    assert_eventually("children stopped with it", || node.live_processes() == 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_types_permanent_transient_temporary() {
    let node = Node::new("t");
    let log = Arc::new(Mutex::new(Vec::new()));
    let children = vec![
        logged("perm", log.clone()).restart(Restart::Permanent),
        logged("trans", log.clone()).restart(Restart::Transient),
        logged("temp", log.clone()).restart(Restart::Temporary),
    ];
    let sup = Supervisor::start(&node, spec(Strategy::OneForOne, children)).await.expect("starts");
    let p = pids(&sup).await;
    let stop = |pid: Pid, reason: ExitReason| {
        let node = node.clone();
        async move {
            let exited = node.watch(pid);
            node.send(pid, reason).await.expect("alive");
            exited.await
        }
    };
    stop(p[0].unwrap(), ExitReason::Normal).await;
    stop(p[1].unwrap(), ExitReason::Normal).await;
    stop(p[2].unwrap(), ExitReason::error("bad")).await;
    for _ in 0..200 {
        let infos = sup.which_children().await.unwrap();
        if infos.len() == 2 && infos[0].pid.is_some() && infos[0].pid != p[0] {
            assert_eq!(infos[1].id, "trans");
            assert_eq!(infos[1].pid, None, "transient not restarted after a normal exit");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let infos = sup.which_children().await.unwrap();
    assert_eq!(infos.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["perm", "trans"], "temporary forgotten");
    // A transient child that crashes is restarted.
    let trans = sup.restart_child("trans").await.expect("restartable");
    stop(trans, ExitReason::error("crash")).await;
    for _ in 0..200 {
        if sup.which_children().await.unwrap()[1].pid.is_some_and(|p| p != trans) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("transient child not restarted after an abnormal exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_reverse_order_and_kills_after_the_timeout() {
    let node = Node::new("t");
    let log = Arc::new(Mutex::new(Vec::new()));
    // "stubborn" ignores shutdown and must be killed after its 50 ms.
    let stubborn = ChildSpec::new("stubborn", |mut ctx: Ctx<()>| async move {
        ctx.trap_exit(true);
        loop {
            ctx.recv_event().await;
        }
    })
    .shutdown(Shutdown::Timeout(Duration::from_millis(50)));
    let children =
        vec![logged("a", log.clone()), stubborn, logged("c", log.clone()).shutdown(Shutdown::BrutalKill), logged("d", log.clone())];
    let sup = Supervisor::start(&node, spec(Strategy::OneForOne, children)).await.expect("starts");
    let p = pids(&sup).await;
    let stubborn_exit = node.watch(p[1].unwrap());
    let c_exit = node.watch(p[2].unwrap());
    log.lock().clear();
    assert_eq!(sup.shutdown().await, ExitReason::Shutdown);
    assert_eq!(*log.lock(), ["stop d", "stop a"], "reverse order; c was brutally killed without a stop");
    assert_eq!(stubborn_exit.await, ExitReason::Killed);
    assert_eq!(c_exit.await, ExitReason::Killed);
    assert_eq!(node.live_processes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_stops_started_children_and_reports() {
    let node = Node::new("t");
    let log = Arc::new(Mutex::new(Vec::new()));
    let broken = ChildSpec::from_start("broken", Arc::new(|_: &Node, _| Err("no config".to_owned())));
    let err = Supervisor::start(&node, spec(Strategy::OneForOne, vec![logged("a", log.clone()), broken])).await.expect_err("fails");
    assert_eq!(err, SupervisorError::StartFailed { id: "broken".into(), reason: "no config".into() });
    assert_eventually("nothing left", || node.live_processes() == 0, WAIT).await;
    assert_eq!(*log.lock(), ["start a", "stop a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_children_and_nested_supervisors() {
    let node = Node::new("t");
    let log = Arc::new(Mutex::new(Vec::new()));
    let inner = SupervisorSpec { children: vec![logged("leaf", log.clone())], ..SupervisorSpec::default() };
    let nested = ChildSpec::from_start("inner", Supervisor::child_start(inner)).shutdown(Shutdown::Infinity);
    let sup = Supervisor::start(&node, spec(Strategy::OneForOne, vec![nested])).await.expect("starts");
    let extra = sup.start_child(logged("extra", log.clone())).await.expect("added");
    assert_eq!(sup.start_child(logged("extra", log.clone())).await, Err(SupervisorError::AlreadyPresent("extra".into())));
    // The inner supervisor starts its leaf from its own body, concurrently.
    assert_eventually("outer, inner, leaf and extra are alive", || node.live_processes() == 4, WAIT).await;
    sup.terminate_child("extra").await.expect("stops");
    assert!(!node.is_alive(extra));
    assert_eq!(sup.delete_child("extra").await, Ok(()));
    assert_eq!(sup.terminate_child("extra").await, Err(SupervisorError::NotFound("extra".into())));
    assert_eq!(sup.shutdown().await, ExitReason::Shutdown);
    assert_eq!(node.live_processes(), 0, "the nested tree is gone");
    assert!(log.lock().ends_with(&["stop leaf".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_forgets_temporary_siblings_it_stops() {
    let node = Node::new("t");
    let log = Arc::new(Mutex::new(Vec::new()));
    let children = vec![logged("a", log.clone()), logged("temp", log.clone()).restart(Restart::Temporary), logged("c", log.clone())];
    let sup = Supervisor::start(&node, spec(Strategy::OneForAll, children)).await.expect("starts");
    let a = pids(&sup).await[0].unwrap();
    let exited = node.watch(a);
    node.exit(a, ExitReason::Kill);
    exited.await;
    for _ in 0..500 {
        let infos = sup.which_children().await.unwrap();
        if infos.len() == 2 && infos.iter().all(|c| c.pid.is_some_and(|p| node.is_alive(p) && Some(p) != Some(a))) {
            assert_eq!(infos.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("expected a and c restarted and temp forgotten: {:?}", sup.which_children().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_stops_when_its_parent_exits_even_normally() {
    let node = Node::new("t");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let parent = node.spawn(move |mut ctx: Ctx<()>| async move {
        let opts = foundation::SpawnOpts { link: Some(ctx.pid()), ..Default::default() };
        let node = ctx.node().clone();
        let sup = Supervisor::start_with(&node, spec(Strategy::OneForOne, vec![logged("a", log)]), opts).await.expect("starts");
        let _ = tx.send(sup.pid());
        ctx.recv().await;
    });
    let sup = rx.await.expect("started");
    let sup_exit = node.watch(sup);
    parent.send(()).await.expect("alive");
    assert_eq!(sup_exit.await, ExitReason::Normal);
    assert_eventually("the tree is gone", || node.live_processes() == 0, WAIT).await;
}

/// A node counts its spawns, its exits by the kind of reason, and its
/// supervisors' restarts and give-ups, and tells its observers of each
/// restart (with the child and why it exited) and give-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_giving_up_are_counted_and_observed() {
    use foundation::Observed;
    let node = Node::new("t");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    node.observe(move |e| sink.lock().push(e.clone()));
    let log = Arc::new(Mutex::new(Vec::new()));
    let spec = SupervisorSpec {
        strategy: Strategy::OneForOne,
        intensity: 2,
        period: Duration::from_secs(60),
        children: vec![logged("a", log.clone()), logged("b", log)],
    };
    let sup = Supervisor::start(&node, spec).await.expect("starts");
    let sup_exit = node.watch(sup.pid());
    for _ in 0..2 {
        let a = pids(&sup).await[0].unwrap();
        kill_and_wait_restart(&node, &sup, a).await;
    }
    let a = pids(&sup).await[0].unwrap();
    node.exit(a, ExitReason::Kill);
    assert_eq!(sup_exit.await, ExitReason::RestartIntensity);
    assert_eventually("everything stopped", || node.live_processes() == 0, WAIT).await;
    let stats = node.stats();
    // The supervisor, a and b, and a twice more.
    assert_eq!((stats.spawned, stats.live, stats.restarts, stats.intensity_reached), (5, 0, 2, 1), "{stats:?}");
    let exited: Vec<(&str, u64)> = stats.exited.iter().map(|(k, n)| (*k, *n)).collect();
    assert_eq!(exited, [("killed", 3), ("restart_intensity", 1), ("shutdown", 1)], "{stats:?}");
    let seen = seen.lock().clone();
    let restarts: Vec<(String, ExitReason, u32)> = seen
        .iter()
        .filter_map(|e| match e {
            Observed::Restart { supervisor, child, reason, restarts } if *supervisor == sup.pid() => {
                Some((child.clone(), reason.clone(), *restarts))
            }
            _ => None,
        })
        .collect();
    assert_eq!(restarts, [("a".to_owned(), ExitReason::Killed, 1), ("a".to_owned(), ExitReason::Killed, 2)]);
    assert!(
        matches!(seen.last(), Some(Observed::IntensityReached { supervisor, intensity: 2, .. }) if *supervisor == sup.pid()),
        "{seen:?}"
    );
}

/// What an observer draws a supervision tree and its load from: each child
/// names its supervisor as its parent (a restarted one too), and a
/// process's memory counts the messages waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_info_places_children_under_their_supervisor_and_counts_memory() {
    let (node, _log, sup, before) = start_abc(Strategy::OneForOne).await;
    let parent = |pid: Pid| node.process_info(pid).expect("alive").parent;
    for child in before.iter().flatten() {
        assert_eq!(parent(*child), Some(sup.pid()), "{child} is under its supervisor");
    }
    assert_eq!(parent(sup.pid()), None, "started from outside any process");
    let victim = before[1].expect("b runs");
    kill_and_wait_restart(&node, &sup, victim).await;
    let restarted = pids(&sup).await[1].expect("b runs again");
    assert_eq!(parent(restarted), Some(sup.pid()));
    assert_eq!(node.process_info(restarted).expect("alive").restarts, 1);

    // A process that takes 3 messages, then stops taking them.
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let worker = node.spawn(move |mut ctx: Ctx<u64>| async move {
        for _ in 0..3 {
            ctx.recv().await;
        }
        let _ = wait.await;
    });
    for i in 0..5 {
        worker.send(i).await.expect("room");
    }
    let info = || node.process_info(worker.pid()).expect("alive");
    assert_eventually("3 taken, 2 waiting", || info().mailbox_len == 2, WAIT).await;
    assert!(info().memory_bytes >= info().mailbox_bytes + std::mem::size_of::<u64>(), "{:?}", info());
    drop(go);
}
