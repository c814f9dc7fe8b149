//! Links, monitors, trap-exit and exit signals.

use std::time::Duration;

use foundation::{Ctx, Event, ExitReason, Node, Pid};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

/// Messages a test process reacts to.
enum Cmd {
    Link(Pid),
    Monitor(Pid),
    Demonitor,
    Exit(ExitReason),
}
impl foundation::Message for Cmd {}

/// A process that reports every event it sees and obeys commands.
fn observer(node: &Node, trap: bool, out: mpsc::UnboundedSender<Event<()>>) -> foundation::Addr<Cmd> {
    node.spawn(move |mut ctx: Ctx<Cmd>| async move {
        ctx.trap_exit(trap);
        let mut last_monitor = None;
        loop {
            match ctx.recv_event().await {
                Event::Message(Cmd::Link(p)) => {
                    if let Err(reason) = ctx.link(p) {
                        let _ = out.send(Event::Exit { from: p, reason });
                    }
                }
                Event::Message(Cmd::Monitor(p)) => last_monitor = Some(ctx.monitor(p)),
                Event::Message(Cmd::Demonitor) => {
                    if let Some(m) = last_monitor.take() {
                        ctx.demonitor(m);
                    }
                    let _ = out.send(Event::Message(()));
                }
                Event::Message(Cmd::Exit(r)) => return r,
                Event::Exit { from, reason } => {
                    let _ = out.send(Event::Exit { from, reason });
                }
                Event::Down { monitor, pid, reason } => {
                    let _ = out.send(Event::Down { monitor, pid, reason });
                }
            }
        }
    })
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event<()>>) -> Event<()> {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("an event in time").expect("observer alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_propagates_abnormal_exit_to_non_trapping_process() {
    let node = Node::new("t");
    let (tx, _rx) = mpsc::unbounded_channel();
    let a = observer(&node, false, tx.clone());
    let b = observer(&node, false, tx);
    let (a_exit, b_exit) = (node.watch(a.pid()), node.watch(b.pid()));
    a.send(Cmd::Link(b.pid())).await.expect("alive");
    tokio::task::yield_now().await;
    foundation_testutil::assert_eventually(
        "link established",
        || node.process_info(b.pid()).is_some_and(|i| i.links == vec![a.pid()]),
        WAIT,
    )
    .await;
    b.send(Cmd::Exit(ExitReason::error("boom"))).await.expect("alive");
    assert_eq!(b_exit.await, ExitReason::error("boom"));
    assert_eq!(a_exit.await, ExitReason::error("boom"), "a dies with b's reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_exit_does_not_kill_linked_process() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = observer(&node, false, tx.clone());
    let b = observer(&node, false, tx);
    a.send(Cmd::Link(b.pid())).await.expect("alive");
    let b_exit = node.watch(b.pid());
    foundation_testutil::assert_eventually("linked", || !node.process_info(b.pid()).unwrap().links.is_empty(), WAIT).await;
    b.send(Cmd::Exit(ExitReason::Normal)).await.expect("alive");
    assert_eq!(b_exit.await, ExitReason::Normal);
    a.send(Cmd::Demonitor).await.expect("a survives a normal exit of its link");
    assert_eq!(next(&mut rx).await, Event::Message(()));
    assert!(node.is_alive(a.pid()));
    assert!(node.process_info(a.pid()).unwrap().links.is_empty(), "the link went with b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_exit_turns_exit_signals_into_messages() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let trapper = observer(&node, true, tx.clone());
    let victim = observer(&node, false, mpsc::unbounded_channel().0);
    trapper.send(Cmd::Link(victim.pid())).await.expect("alive");
    foundation_testutil::assert_eventually("linked", || !node.process_info(victim.pid()).unwrap().links.is_empty(), WAIT).await;
    assert!(node.exit(victim.pid(), ExitReason::Kill));
    assert_eq!(next(&mut rx).await, Event::Exit { from: victim.pid(), reason: ExitReason::Killed });
    // An explicit non-kill exit signal is trapped too, and so is Normal.
    node.exit(trapper.pid(), ExitReason::Shutdown);
    assert_eq!(next(&mut rx).await, Event::Exit { from: node.system_pid(), reason: ExitReason::Shutdown });
    node.exit(trapper.pid(), ExitReason::Normal);
    assert_eq!(next(&mut rx).await, Event::Exit { from: node.system_pid(), reason: ExitReason::Normal });
    assert!(node.is_alive(trapper.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_is_untrappable_and_normal_is_ignored_without_trap() {
    let node = Node::new("t");
    let plain = observer(&node, false, mpsc::unbounded_channel().0);
    node.exit(plain.pid(), ExitReason::Normal);
    let trapper = observer(&node, true, mpsc::unbounded_channel().0);
    let exited = node.watch(trapper.pid());
    assert!(node.exit(trapper.pid(), ExitReason::Kill));
    assert_eq!(exited.await, ExitReason::Killed);
    assert!(node.is_alive(plain.pid()), "an explicit Normal does not stop a non-trapping process");
    let exited = node.watch(plain.pid());
    node.exit(plain.pid(), ExitReason::Shutdown);
    assert_eq!(exited.await, ExitReason::Shutdown);
    assert!(!node.exit(plain.pid(), ExitReason::Kill), "signals to dead pids report false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_to_dead_pid_fails_with_noproc() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = observer(&node, false, tx);
    let dead = Pid::new(node.id(), 999_999);
    a.send(Cmd::Link(dead)).await.expect("alive");
    assert_eq!(next(&mut rx).await, Event::Exit { from: dead, reason: ExitReason::NoProc });
    assert!(node.is_alive(a.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_delivers_down_with_reason_once() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = observer(&node, false, tx);
    let target = observer(&node, false, mpsc::unbounded_channel().0);
    watcher.send(Cmd::Monitor(target.pid())).await.expect("alive");
    foundation_testutil::assert_eventually("monitoring", || !node.process_info(watcher.pid()).unwrap().monitors.is_empty(), WAIT).await;
    node.exit(target.pid(), ExitReason::Kill);
    match next(&mut rx).await {
        Event::Down { pid, reason, .. } => {
            assert_eq!(pid, target.pid());
            assert_eq!(reason, ExitReason::Killed);
        }
        other => panic!("expected Down, got {other:?}"),
    }
    assert!(node.is_alive(watcher.pid()), "a monitor never kills the watcher");
    watcher.send(Cmd::Demonitor).await.expect("alive");
    assert_eq!(next(&mut rx).await, Event::Message(()), "no second Down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_on_already_dead_pid_gives_noproc_down() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = observer(&node, false, tx);
    let gone = node.spawn(|mut c: Ctx<()>| async move { c.recv().await });
    let exited = node.watch(gone.pid());
    gone.send(()).await.expect("alive");
    exited.await;
    watcher.send(Cmd::Monitor(gone.pid())).await.expect("alive");
    match next(&mut rx).await {
        Event::Down { pid, reason, .. } => assert_eq!((pid, reason), (gone.pid(), ExitReason::NoProc)),
        other => panic!("expected Down, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demonitor_before_exit_suppresses_down() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = observer(&node, false, tx);
    let target = observer(&node, false, mpsc::unbounded_channel().0);
    watcher.send(Cmd::Monitor(target.pid())).await.expect("alive");
    watcher.send(Cmd::Demonitor).await.expect("alive");
    assert_eq!(next(&mut rx).await, Event::Message(()));
    let exited = node.watch(target.pid());
    node.exit(target.pid(), ExitReason::Kill);
    exited.await;
    watcher.send(Cmd::Demonitor).await.expect("alive");
    assert_eq!(next(&mut rx).await, Event::Message(()), "no Down after demonitor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_reaches_links_and_monitors_as_exit_reason() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let trapper = observer(&node, true, tx);
    let crasher = node.spawn(|mut c: Ctx<()>| async move {
        c.recv().await;
        panic!("handler bug");
    });
    trapper.send(Cmd::Link(crasher.pid())).await.expect("alive");
    trapper.send(Cmd::Monitor(crasher.pid())).await.expect("alive");
    foundation_testutil::assert_eventually("monitored", || !node.process_info(trapper.pid()).unwrap().monitors.is_empty(), WAIT).await;
    crasher.send(()).await.expect("alive");
    let reason = ExitReason::Panic("handler bug".into());
    let mut got = [next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|e| matches!(e, Event::Down { .. }));
    assert_eq!(got[0], Event::Exit { from: crasher.pid(), reason: reason.clone() });
    assert!(matches!(&got[1], Event::Down { pid, reason: r, .. } if *pid == crasher.pid() && *r == reason));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_link_chain_dies_together_on_kill() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel::<Pid>();
    let root = node.spawn(move |ctx: Ctx<()>| async move {
        let child = ctx.spawn_link(move |ctx: Ctx<()>| async move {
            let grandchild = ctx.spawn_link(|mut c: Ctx<()>| async move { c.recv().await });
            let _ = tx.send(grandchild.pid());
            let mut ctx = ctx;
            ctx.recv().await
        });
        let _ = child;
        let mut ctx = ctx;
        ctx.recv().await
    });
    let grandchild = tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("pid");
    let gc_exit = node.watch(grandchild);
    node.exit(root.pid(), ExitReason::Kill);
    assert_eq!(gc_exit.await, ExitReason::Killed, "kill propagates through links as killed");
    foundation_testutil::assert_eventually("all gone", || node.live_processes() == 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_end_with_their_down() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = observer(&node, false, tx);
    for _ in 0..3 {
        let target = observer(&node, false, mpsc::unbounded_channel().0);
        watcher.send(Cmd::Monitor(target.pid())).await.expect("alive");
        foundation_testutil::assert_eventually("monitoring", || node.process_info(watcher.pid()).unwrap().monitors.len() == 1, WAIT).await;
        node.exit(target.pid(), ExitReason::Kill);
        assert!(matches!(next(&mut rx).await, Event::Down { .. }));
        assert!(node.process_info(watcher.pid()).unwrap().monitors.is_empty(), "a fired monitor is gone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_exit_signal_arrives_after_unlink() {
    let node = Node::new("t");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let trapper = node.spawn(move |mut ctx: Ctx<Pid>| async move {
        ctx.trap_exit(true);
        loop {
            match ctx.recv_event().await {
                Event::Message(p) => {
                    ctx.link(p).expect("alive");
                    ctx.unlink(p);
                    let _ = tx.send(Event::Message(()));
                }
                Event::Exit { from, reason } => {
                    let _ = tx.send(Event::Exit { from, reason });
                }
                Event::Down { .. } => {}
            }
        }
    });
    let victim = observer(&node, false, mpsc::unbounded_channel().0);
    trapper.send(victim.pid()).await.expect("alive");
    assert_eq!(next(&mut rx).await, Event::Message(()));
    let exited = node.watch(victim.pid());
    node.exit(victim.pid(), ExitReason::error("late"));
    exited.await;
    assert!(tokio::time::timeout(Duration::from_millis(50), rx.recv()).await.is_err(), "unlinked: no Exit");
}
