//! Remote processes on three loopback nodes: send by pid and by name, per
//! pair ordering, what a lost connection loses, a process that stops
//! reading (its node's connection goes on), links and monitors across nodes, and RPC errors.

use std::sync::Arc;
use std::time::Duration;

use foundation::{Event, ExitReason, MailboxConfig, Pid, SpawnOpts};
use foundation_cluster::{Cluster, RemoteSendError, RpcError};
use parking_lot::Mutex;

mod common;
use common::{WAIT, eventually_peers, mesh_of_three, until, until_within};

/// A process on `at` that records every u64 it receives (and its exit and
/// down events as text); registered as `name`.
fn recorder(at: &Cluster, name: &str) -> (Pid, Arc<Mutex<Vec<u64>>>) {
    at.register_message::<u64>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let opts = SpawnOpts { name: Some(name.into()), ..SpawnOpts::default() };
    let addr = at
        .node()
        .spawn_with(opts, move |mut ctx: foundation::Ctx<u64>| async move {
            loop {
                let n = ctx.recv().await;
                log.lock().push(n);
            }
        })
        .expect("spawned");
    (addr.pid(), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_remote_pids_and_names_in_order() {
    let (a, b, c) = mesh_of_three().await;
    let (sink, seen) = recorder(&b, "sink");
    for i in 0..1000u64 {
        a.send_wait(sink, i).await.expect("queued");
    }
    for i in 1000..2000u64 {
        a.send_named("b", "sink", i).await.expect("queued");
    }
    // From a third node too; its own sequence stays in order.
    c.send_wait(sink, 5000u64).await.expect("queued");
    until("all 2001 messages arrive", || seen.lock().len() == 2001).await;
    let got = seen.lock().clone();
    let from_a: Vec<u64> = got.iter().copied().filter(|n| *n < 5000).collect();
    assert_eq!(from_a, (0..2000).collect::<Vec<_>>(), "a's messages in the order sent, none twice");
    // Local pids go through the same call.
    b.send(sink, 7000u64).expect("local send");
    until("the local message arrives", || seen.lock().last() == Some(&7000)).await;
    // A type b never registered is dropped there (and logged); a pid on a
    // node that is not connected is refused at once.
    a.send_wait(sink, "not a u64".to_string()).await.expect("queued");
    let ghost = Pid::new(foundation::NodeId::new("nowhere", 1), 1);
    assert_eq!(a.send(ghost, 1u64), Err(RemoteSendError::NoConnection(ghost)));
}

/// The tests that send floods run one at a time: the backpressure test
/// measures this process's memory, which a flood beside it would inflate.
static FLOODS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_loses_only_a_suffix_and_never_reorders() {
    let _serial = FLOODS.lock().await;
    let (a, b, _c) = mesh_of_three().await;
    let (sink, seen) = recorder(&b, "sink");
    // Send until the connection is cut (after 5000 accepted sends).
    let mut accepted = 0u64;
    for i in 1..=20_000u64 {
        if i == 5000 {
            assert!(a.disconnect("b"));
        }
        match a.send_wait(sink, i).await {
            Ok(()) => accepted = i,
            Err(RemoteSendError::NoConnection(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(accepted, 4999, "sends after the disconnect are refused, not queued");
    a.connect(b.addr()).await.expect("reconnect");
    eventually_peers(&a, &["b", "c"]).await;
    for i in 30_001..=31_000u64 {
        a.send_wait(sink, i).await.expect("queued");
    }
    until("every message sent after the reconnect arrives", || seen.lock().last() == Some(&31_000)).await;
    let got = seen.lock().clone();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "strictly increasing: in order, never twice");
    let before: Vec<u64> = got.iter().copied().filter(|n| *n < 30_000).collect();
    let k = before.len() as u64;
    assert!(before.iter().copied().eq(1..=k), "what arrived from before the loss is a prefix (got {k} messages, last {:?})", before.last());
    assert_eq!(got.iter().filter(|n| **n > 30_000).count(), 1000);
}

/// A process that stops reading pushes back on its remote sender (per
/// destination: `Full`, and `send_wait` waits) and never holds up its
/// node's connection: other processes there, and RPCs, go on; nothing is
/// dropped, and everything accepted arrives, in order, once it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_stops_reading_pushes_back_on_its_sender_only() {
    let _serial = FLOODS.lock().await;
    let (a, b, _c) = mesh_of_three().await;
    let mut a_events = a.subscribe();
    b.register_message::<Vec<u8>>();
    b.register_rpc("echo", |n: u64| async move { n });
    let (_other, other_seen) = recorder(&b, "other");
    // A process with a 16-message mailbox that does not read until told.
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let received = Arc::new(Mutex::new(Vec::<u32>::new()));
    let log = received.clone();
    let opts = SpawnOpts { mailbox: Some(Arc::new(MailboxConfig::bounded(16))), ..SpawnOpts::default() };
    let slow = b
        .node()
        .spawn_with(opts, move |mut ctx: foundation::Ctx<Vec<u8>>| async move {
            let _ = go_rx.await;
            loop {
                let m = ctx.recv().await;
                log.lock().push(u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
            }
        })
        .expect("spawned")
        .pid();
    let rss_before = foundation_testutil::rss_bytes().unwrap_or(0);
    let mut accepted = 0u32;
    let mut full = false;
    for _ in 0..200_000 {
        let mut m = vec![7u8; 4096];
        m[..4].copy_from_slice(&accepted.to_le_bytes());
        match a.send(slow, m) {
            Ok(()) => accepted += 1,
            Err(RemoteSendError::Full) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
        if accepted.is_multiple_of(256) {
            tokio::task::yield_now().await;
        }
    }
    assert!(full, "the sender was pushed back after {accepted} sends of 4 KiB");
    assert!(accepted < 20_000, "bounded: {accepted} sends accepted");
    let grew = foundation_testutil::rss_bytes().unwrap_or(0).saturating_sub(rss_before);
    eprintln!("rss grew by {} MiB", grew >> 20);
    assert!(grew < 512 << 20, "memory grew by {grew} bytes");
    // A waiting send to it waits...
    let waiting = tokio::time::timeout(Duration::from_millis(800), a.send_wait(slow, vec![1u8; 4096])).await;
    assert!(waiting.is_err(), "send_wait returned while the process was not reading");
    // ...while frames behind it are still read: another process, an RPC.
    a.send_named("b", "other", 7u64).await.expect("queued");
    until("the other process got its message", || other_seen.lock().as_slice() == [7]).await;
    let echoed: u64 = a.rpc("b", "echo", 42u64, WAIT).await.expect("an rpc beside the stalled process completes");
    assert_eq!(echoed, 42);
    assert_eq!(a.peers(), ["b", "c"]);
    go_tx.send(()).expect("still waiting");
    let mut m = vec![1u8; 4096];
    m[..4].copy_from_slice(&accepted.to_le_bytes());
    a.send_wait(slow, m).await.expect("room again");
    let all = accepted + 1;
    until_within("every accepted message arrives", Duration::from_secs(60), || received.lock().len() as u32 == all).await;
    assert!(received.lock().iter().copied().eq(0..all), "in order, none lost");
    assert_eq!(b.dropped_messages(), 0);
    let seen: Vec<_> = std::iter::from_fn(|| a_events.try_recv().ok()).collect();
    assert!(seen.is_empty(), "no node went down: {seen:?}");
}

/// What the watcher is asked to do.
enum Watch {
    Link(Pid),
    Monitor(Pid),
}
impl foundation::Message for Watch {}

/// A process on `at` that traps exits and reports every event as text.
fn watcher(at: &Cluster) -> (foundation::Addr<Watch>, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = SpawnOpts { trap_exit: true, ..SpawnOpts::default() };
    let addr = at
        .node()
        .spawn_with(opts, move |mut ctx: foundation::Ctx<Watch>| async move {
            loop {
                match ctx.recv_event().await {
                    Event::Message(w) => {
                        let r = match w {
                            Watch::Link(pid) => ctx.link(pid).map(|()| "linked".to_string()),
                            Watch::Monitor(pid) => Ok(format!("monitor {:?}", ctx.monitor(pid))),
                        };
                        let _ = tx.send(format!("{r:?}"));
                    }
                    Event::Exit { from, reason } => {
                        let _ = tx.send(format!("exit {from} {reason}"));
                    }
                    Event::Down { pid, reason, .. } => {
                        let _ = tx.send(format!("down {pid} {reason}"));
                    }
                }
            }
        })
        .expect("spawned");
    (addr, rx)
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("open")
}

/// A process on `at` that waits for a reason to exit with.
fn target(at: &Cluster) -> foundation::Addr<ExitReason> {
    at.node().spawn(|mut ctx: foundation::Ctx<ExitReason>| async move { ctx.recv().await })
}

/// Returns once every frame `from` queued for `to` before the call has been
/// applied there (one connection, read in order: an RPC round trip).
async fn barrier(from: &Cluster, to: &Cluster) {
    to.register_rpc("barrier", |(): ()| async {});
    from.rpc::<(), ()>(to.name(), "barrier", (), WAIT).await.expect("barrier");
}

/// `w` (on `a`) links to one new process on `b` and monitors another; both
/// are in place on `b` when this returns.
async fn link_and_monitor(
    w: &foundation::Addr<Watch>,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    a: &Cluster,
    b: &Cluster,
) -> (foundation::Addr<ExitReason>, foundation::Addr<ExitReason>) {
    let (t1, t2) = (target(b), target(b));
    w.send(Watch::Link(t1.pid())).await.unwrap();
    assert_eq!(next(events).await, "Ok(\"linked\")");
    w.send(Watch::Monitor(t2.pid())).await.unwrap();
    assert!(next(events).await.starts_with("Ok(\"monitor"));
    barrier(a, b).await;
    (t1, t2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_monitors_work_across_nodes() {
    let (a, b, c) = mesh_of_three().await;
    let (w, mut events) = watcher(&a);
    // Link to a process on b, monitor another; both end with an error.
    let (t1, t2) = link_and_monitor(&w, &mut events, &a, &b).await;
    t1.send(ExitReason::error("t1 failed")).await.unwrap();
    assert_eq!(next(&mut events).await, format!("exit {} error: t1 failed", t1.pid()));
    t2.send(ExitReason::error("t2 failed")).await.unwrap();
    assert_eq!(next(&mut events).await, format!("down {} error: t2 failed", t2.pid()));
    // Linking to or monitoring a pid that is already gone: NoProc, from the
    // remote node.
    w.send(Watch::Link(Pid::new(b.node().id(), 999_999))).await.unwrap();
    let first = next(&mut events).await;
    assert_eq!(first, "Ok(\"linked\")");
    assert_eq!(next(&mut events).await, format!("exit {} noproc", Pid::new(b.node().id(), 999_999)));
    w.send(Watch::Monitor(Pid::new(b.node().id(), 999_998))).await.unwrap();
    assert!(next(&mut events).await.starts_with("Ok(\"monitor"));
    assert_eq!(next(&mut events).await, format!("down {} noproc", Pid::new(b.node().id(), 999_998)));
    // An explicit exit signal across nodes reaches w (which traps it).
    c.node().exit(w.pid(), ExitReason::error("stop"));
    assert_eq!(next(&mut events).await, format!("exit {} error: stop", c.node().system_pid()));
    // The other direction: a process on c linked to w ends when w does.
    let dies = target(&c);
    w.send(Watch::Link(dies.pid())).await.unwrap();
    assert_eq!(next(&mut events).await, "Ok(\"linked\")");
    barrier(&a, &c).await;
    let gone = c.node().watch(dies.pid());
    c.node().exit(w.pid(), ExitReason::Kill);
    assert_eq!(tokio::time::timeout(WAIT, gone).await.expect("in time"), ExitReason::Killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_going_down_fires_links_and_monitors_with_noconnection() {
    let (a, b, _c) = mesh_of_three().await;
    let (w, mut events) = watcher(&a);
    let (t1, t2) = link_and_monitor(&w, &mut events, &a, &b).await;
    // b's side: its processes linked to w get NoConnection too.
    let t1_exit = b.node().watch(t1.pid());
    assert!(a.disconnect("b"));
    let mut got = vec![next(&mut events).await, next(&mut events).await];
    got.sort();
    let mut want = vec![format!("down {} noconnection", t2.pid()), format!("exit {} noconnection", t1.pid())];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(tokio::time::timeout(WAIT, t1_exit).await.expect("in time"), ExitReason::NoConnection);
    // While disconnected: linking fails, monitoring fires at once.
    w.send(Watch::Link(t2.pid())).await.unwrap();
    assert_eq!(next(&mut events).await, "Err(noconnection)");
    w.send(Watch::Monitor(t2.pid())).await.unwrap();
    assert!(next(&mut events).await.starts_with("Ok(\"monitor"));
    assert_eq!(next(&mut events).await, format!("down {} noconnection", t2.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_returns_results_and_each_failure_as_its_own_error() {
    let (a, b, _c) = mesh_of_three().await;
    b.register_rpc("double", |n: u64| async move { n * 2 });
    b.register_rpc("boom", |_: ()| async move {
        if true {
            panic!("handler exploded");
        }
    });
    b.register_rpc("slow", |_: ()| async move { tokio::time::sleep(Duration::from_secs(10)).await });
    let t = Duration::from_secs(2);
    assert_eq!(a.rpc::<u64, u64>("b", "double", 21, t).await, Ok(42));
    assert_eq!(b.rpc::<u64, u64>("b", "double", 4, t).await, Ok(8), "a node calls itself too");
    match a.rpc::<(), ()>("b", "boom", (), t).await {
        Err(RpcError::Panic { node, name, message }) => {
            assert_eq!((node.as_str(), name.as_str()), ("b", "boom"));
            assert!(message.contains("handler exploded"), "{message}");
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(a.rpc::<(), ()>("b", "nope", (), t).await, Err(RpcError::UnknownHandler { node: "b".into(), name: "nope".into() }));
    let after = Duration::from_millis(200);
    assert_eq!(a.rpc::<(), ()>("b", "slow", (), after).await, Err(RpcError::Timeout { node: "b".into(), name: "slow".into(), after }));
    // Twelve 0xff bytes (an array: no length prefix) are no varint of a
    // u64: the handler cannot decode the request.
    assert!(matches!(a.rpc::<[u8; 12], u64>("b", "double", [0xff; 12], t).await, Err(RpcError::BadRequest { .. })));
    assert!(matches!(a.rpc::<u64, String>("b", "double", 1, t).await, Err(RpcError::BadResponse(_))));
    // b still serves after all that.
    assert_eq!(a.rpc::<u64, u64>("b", "double", 1, t).await, Ok(2));
    // A call in flight when the node goes away fails at once, not at its timeout.
    let started = tokio::time::Instant::now();
    let pending = {
        let a = a.clone();
        foundation::rt::spawn(async move { a.rpc::<(), ()>("b", "slow", (), Duration::from_secs(30)).await })
    };
    until("the call is in flight", || b.node().live_processes() == 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(a.disconnect("b"));
    assert_eq!(pending.await.unwrap(), Err(RpcError::Lost { node: "b".into() }), "a call in flight may have run");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(a.rpc::<u64, u64>("b", "double", 1, t).await, Err(RpcError::NoConnection { node: "b".into() }));
}
