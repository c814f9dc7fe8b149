//! Processes, mailboxes, call, registry, groups, process info.

use std::sync::Arc;
use std::time::Duration;

use foundation::{
    ByteBudget, CallError, Ctx, ExitReason, MailboxConfig, Message, Node, Overflow, RegistryError, Reply, SendError, SpawnError, SpawnOpts,
};
use foundation_testutil::assert_eventually;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(5);

/// A process that forwards every message it gets to a test channel.
fn forwarder(node: &Node, out: tokio::sync::mpsc::UnboundedSender<u64>) -> foundation::Addr<u64> {
    node.spawn(move |mut ctx: Ctx<u64>| async move {
        loop {
            let m = ctx.recv().await;
            if out.send(m).is_err() {
                return;
            }
        }
    })
}

/// A process that waits for a oneshot before it starts receiving.
fn gated(
    node: &Node,
    cfg: MailboxConfig,
    gate: oneshot::Receiver<()>,
    out: tokio::sync::mpsc::UnboundedSender<u64>,
) -> foundation::Addr<u64> {
    let opts = SpawnOpts { mailbox: Some(Arc::new(cfg)), ..SpawnOpts::default() };
    node.spawn_with(opts, move |mut ctx: Ctx<u64>| async move {
        let _ = gate.await;
        loop {
            let m = ctx.recv().await;
            if out.send(m).is_err() {
                return;
            }
        }
    })
    .expect("valid mailbox config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_in_send_order() {
    let node = Node::new("t");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let p = forwarder(&node, tx);
    for i in 0..10_000 {
        p.send(i).await.expect("receiver alive");
    }
    for i in 0..10_000 {
        assert_eq!(rx.recv().await, Some(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_refuses_when_full_and_loses_nothing_accepted() {
    let node = Node::new("t");
    let (gate_tx, gate_rx) = oneshot::channel();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let p = gated(&node, MailboxConfig::bounded(100), gate_rx, tx);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..1000u64 {
        match p.try_send(i) {
            Ok(()) => accepted.push(i),
            Err(SendError::Full(m)) => {
                assert_eq!(m, i, "the refused message comes back");
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(accepted.len(), 100, "exactly the capacity is accepted");
    assert_eq!(refused, 900);
    assert_eq!(node.process_info(p.pid()).expect("alive").mailbox_len, 100);
    gate_tx.send(()).expect("gate");
    for want in accepted {
        assert_eq!(rx.recv().await, Some(want));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaitable_send_waits_for_room() {
    let node = Node::new("t");
    let (gate_tx, gate_rx) = oneshot::channel();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let p = gated(&node, MailboxConfig::bounded(4), gate_rx, tx);
    let sender = foundation::rt::spawn(async move {
        for i in 0..100u64 {
            p.send(i).await.expect("alive");
        }
    });
    // The sender cannot finish while the receiver is gated: 4 fit, 96 wait.
    assert!(tokio::time::timeout(Duration::from_millis(50), rx.recv()).await.is_err());
    gate_tx.send(()).expect("gate");
    for i in 0..100 {
        assert_eq!(rx.recv().await, Some(i));
    }
    sender.await.expect("sender done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_and_drop_oldest_follow_their_policy() {
    let node = Node::new("t");
    for (policy, expect) in [(Overflow::DropNewest, vec![0, 1, 2]), (Overflow::DropOldest, vec![7, 8, 9])] {
        let (gate_tx, gate_rx) = oneshot::channel();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let p = gated(&node, MailboxConfig::bounded(3).with_overflow(policy), gate_rx, tx);
        let mut dropped_errors = 0;
        for i in 0..10u64 {
            if let Err(SendError::Dropped(_)) = p.try_send(i) {
                dropped_errors += 1;
            }
        }
        let info = node.process_info(p.pid()).expect("alive");
        assert_eq!(info.dropped, 7, "{policy:?} counts what it drops");
        assert_eq!(dropped_errors, if policy == Overflow::DropNewest { 7 } else { 0 });
        gate_tx.send(()).expect("gate");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(rx.recv().await.expect("message"));
        }
        assert_eq!(got, expect, "{policy:?}");
    }
    assert_eq!(node.stats().mailbox_dropped, 14, "the node counts every drop too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_counts_the_sends_that_found_a_mailbox_full() {
    let node = Node::new("t");
    let (gate_tx, gate_rx) = oneshot::channel();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let p = gated(&node, MailboxConfig::bounded(2), gate_rx, tx);
    let full = (0..5u64).filter(|i| matches!(p.try_send(*i), Err(SendError::Full(_)))).count();
    assert_eq!(full, 3);
    // A send that waits for room is counted when it finds none.
    let waiting = {
        let p = p.clone();
        foundation::rt::spawn(async move { p.send(9).await })
    };
    assert_eventually("the waiting send is counted", || node.stats().mailbox_full == 4, Duration::from_secs(5)).await;
    gate_tx.send(()).expect("gate");
    for want in [0, 1, 9] {
        assert_eq!(rx.recv().await, Some(want));
    }
    waiting.await.expect("joined").expect("sent");
    assert_eq!(node.stats().mailbox_dropped, 0);
}

struct Blob(Vec<u8>);
impl Message for Blob {
    fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_limits_refuse_oversized_and_overfull() {
    let node = Node::new("t");
    let cfg = MailboxConfig { max_bytes: 10_000, max_message_bytes: 4_000, ..MailboxConfig::default() };
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    let opts = SpawnOpts { mailbox: Some(Arc::new(cfg)), ..SpawnOpts::default() };
    let p = node
        .spawn_with(opts, move |mut ctx: Ctx<Blob>| async move {
            let _ = gate_rx.await;
            loop {
                ctx.recv().await;
            }
        })
        .expect("valid");
    match p.try_send(Blob(vec![0; 5_000])) {
        Err(SendError::TooLarge { bytes, limit, .. }) => {
            assert!(bytes > 5_000);
            assert_eq!(limit, 4_000);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut accepted = 0;
    while p.try_send(Blob(vec![0; 3_000])).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, 3, "three 3 KB blobs fit in 10 KB, a fourth does not");
    assert!(node.process_info(p.pid()).expect("alive").mailbox_bytes <= 10_000);
    drop(gate_tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_dead_pid_is_an_error_not_a_panic() {
    let node = Node::new("t");
    let p = node.spawn(|mut ctx: Ctx<u64>| async move {
        ctx.recv().await;
    });
    let gone = node.watch(p.pid());
    p.send(0).await.expect("alive");
    assert_eq!(gone.await, ExitReason::Normal);
    assert!(matches!(p.try_send(1), Err(SendError::NoProc(Some(1)))));
    assert!(matches!(p.send(2).await, Err(SendError::NoProc(Some(2)))));
    assert!(matches!(node.send(p.pid(), 3u64).await, Err(SendError::NoProc(Some(3)))));
    assert!(!node.is_alive(p.pid()));
    assert_eq!(node.process_info(p.pid()), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_by_pid_checks_the_message_type() {
    let node = Node::new("t");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let p = forwarder(&node, tx);
    node.send(p.pid(), 5u64).await.expect("right type");
    assert_eq!(rx.recv().await, Some(5));
    match node.try_send(p.pid(), "wrong") {
        Err(SendError::WrongType { expected, .. }) => assert_eq!(expected, "u64"),
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert!(node.addr::<String>(p.pid()).is_none());
    assert!(node.addr::<u64>(p.pid()).is_some());
}

enum Req {
    Echo(u64, Reply<u64>),
    Ignore(Reply<u64>),
    Stop(Reply<u64>),
}
impl Message for Req {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_replies_times_out_and_reports_no_reply() {
    let node = Node::new("t");
    let server = node.spawn(|mut ctx: Ctx<Req>| async move {
        let mut parked = Vec::new();
        loop {
            match ctx.recv().await {
                Req::Echo(n, r) => {
                    let _ = r.send(n);
                }
                Req::Ignore(r) => parked.push(r),
                Req::Stop(r) => {
                    drop(r);
                    return;
                }
            }
        }
    });
    let t = Duration::from_millis(200);
    assert_eq!(server.call(|r| Req::Echo(9, r), t).await, Ok(9));
    assert_eq!(server.call(Req::Ignore, Duration::from_millis(20)).await, Err(CallError::Timeout));
    let exited = node.watch(server.pid());
    assert_eq!(server.call(Req::Stop, t).await, Err(CallError::NoReply));
    // The reply handle is dropped just before the body returns: wait for the
    // exit itself before calling a dead process.
    assert_eq!(exited.await, ExitReason::Normal);
    assert_eq!(server.call(|r| Req::Echo(1, r), t).await, Err(CallError::NoProc));
}

/// `request` sends now and answers later: several requests are out at
/// once, answered in any order; one whose caller gave up shows the replier
/// `is_closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_answered_later_in_any_order_and_a_given_up_one_shows_closed() {
    let node = Node::new("t");
    let (closed_tx, closed_rx) = oneshot::channel();
    let server = node.spawn(|mut ctx: Ctx<Req>| async move {
        let mut held = Vec::new();
        for _ in 0..3 {
            match ctx.recv().await {
                Req::Echo(n, r) => held.push((n, r)),
                Req::Ignore(r) | Req::Stop(r) => held.push((0, r)),
            }
        }
        // Answer the last first; the caller dropped the second answer.
        while let Some((n, r)) = held.pop() {
            if r.is_closed() {
                let _ = closed_tx.send(n);
                break;
            }
            let _ = r.send(n * 10);
        }
    });
    let t = Duration::from_secs(5);
    let first = server.request(|r| Req::Echo(1, r), t).await.expect("sent");
    let second = server.request(|r| Req::Echo(2, r), t).await.expect("sent");
    let third = server.request(|r| Req::Echo(3, r), t).await.expect("sent");
    drop(second);
    assert_eq!(third.await, Ok(30));
    assert_eq!(closed_rx.await, Ok(2), "the replier saw the abandoned request as closed");
    assert_eq!(first.await, Err(CallError::NoReply), "the server ended without answering the first");
}

/// The deadline covers the wait for mailbox room: a request to a full
/// mailbox that never drains times out instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_room_times_out() {
    let node = Node::new("t");
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    let opts = SpawnOpts { mailbox: Some(Arc::new(MailboxConfig::bounded(1))), ..SpawnOpts::default() };
    let server = node
        .spawn_with(opts, |mut ctx: Ctx<Req>| async move {
            let _ = gate_rx.await;
            loop {
                if let Req::Echo(n, r) = ctx.recv().await {
                    let _ = r.send(n);
                }
            }
        })
        .expect("spawned");
    let t = Duration::from_secs(5);
    let queued = server.request(|r| Req::Echo(1, r), t).await.expect("room for one");
    let waited = server.request(|r| Req::Echo(2, r), Duration::from_millis(50)).await;
    assert_eq!(waited.err(), Some(CallError::Timeout), "no room within the deadline");
    gate_tx.send(()).expect("server waiting");
    assert_eq!(queued.await, Ok(1));
    assert_eq!(server.call(|r| Req::Echo(3, r), t).await, Ok(3), "the mailbox works after the timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_an_exit_reason_and_the_node_keeps_serving() {
    let node = Node::new("t");
    let p = node.spawn(|mut ctx: Ctx<u64>| async move {
        let n = ctx.recv().await;
        if n == 13 {
            panic!("unlucky {n}");
        }
    });
    let exited = node.watch(p.pid());
    p.send(13).await.expect("alive");
    assert_eq!(exited.await, ExitReason::Panic("unlucky 13".into()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let q = forwarder(&node, tx);
    q.send(1).await.expect("node still spawns and delivers");
    assert_eq!(rx.recv().await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_results_become_exit_reasons() {
    let node = Node::new("t");
    // Each body waits for a go message, so the watch starts before the exit.
    let ok = node.spawn(|mut c: Ctx<()>| async move {
        c.recv().await;
        Ok::<(), String>(())
    });
    let err = node.spawn(|mut c: Ctx<()>| async move {
        c.recv().await;
        Err::<(), _>("disk on fire")
    });
    let custom = node.spawn(|mut c: Ctx<()>| async move {
        c.recv().await;
        ExitReason::Shutdown
    });
    let watches = [node.watch(ok.pid()), node.watch(err.pid()), node.watch(custom.pid())];
    for p in [&ok, &err, &custom] {
        p.send(()).await.expect("alive");
    }
    let [w_ok, w_err, w_custom] = watches;
    assert_eq!(w_ok.await, ExitReason::Normal);
    assert_eq!(w_err.await, ExitReason::error("disk on fire"));
    assert_eq!(w_custom.await, ExitReason::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_register_lookup_whereis_unregister() {
    let node = Node::new("t");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let p = forwarder(&node, tx);
    node.register("logger", p.pid()).expect("free name");
    assert_eq!(node.whereis("logger"), Some(p.pid()));
    let other = node.spawn(|mut c: Ctx<u64>| async move {
        c.recv().await;
    });
    assert_eq!(node.register("logger", other.pid()), Err(RegistryError::AlreadyRegistered("logger".into(), p.pid())));
    assert!(matches!(node.register("", p.pid()), Err(RegistryError::InvalidName(_))));
    node.lookup::<u64>("logger").expect("typed lookup").send(7).await.expect("alive");
    assert_eq!(rx.recv().await, Some(7));
    assert!(node.lookup::<String>("logger").is_none(), "wrong type finds nothing");
    assert_eq!(node.process_info(p.pid()).expect("alive").names, vec!["logger".to_owned()]);
    assert_eq!(node.unregister("logger"), Some(p.pid()));
    assert_eq!(node.whereis("logger"), None);
    // A name dies with its process.
    node.register("short-lived", other.pid()).expect("free");
    let exited = node.watch(other.pid());
    other.send(0).await.expect("alive");
    assert_eq!(exited.await, ExitReason::Normal);
    assert_eq!(node.whereis("short-lived"), None);
    assert_eq!(node.register("dead", other.pid()), Err(RegistryError::NoProc(other.pid())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_join_leave_members_and_exit_cleanup() {
    let node = Node::new("t");
    let idle = |n: &Node| {
        n.spawn(|mut c: Ctx<u64>| async move {
            c.recv().await;
        })
    };
    let (a, b) = (idle(&node), idle(&node));
    node.join("workers", a.pid()).expect("alive");
    node.join("workers", b.pid()).expect("alive");
    node.join("workers", b.pid()).expect("idempotent");
    let mut want = vec![a.pid(), b.pid()];
    want.sort();
    assert_eq!(node.members("workers"), want);
    assert!(node.leave("workers", a.pid()));
    assert!(!node.leave("workers", a.pid()));
    assert_eq!(node.members("workers"), vec![b.pid()]);
    let exited = node.watch(b.pid());
    b.send(1).await.expect("alive");
    exited.await;
    assert!(node.members("workers").is_empty(), "members leave when they exit");
    assert!(node.groups().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_info_reports_mailbox_and_liveness() {
    let node = Node::new("t");
    let (gate_tx, gate_rx) = oneshot::channel();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let p = gated(&node, MailboxConfig::bounded(50), gate_rx, tx);
    for i in 0..20 {
        p.try_send(i).expect("room");
    }
    let info = node.process_info(p.pid()).expect("alive");
    assert_eq!((info.mailbox_len, info.restarts, info.trap_exit), (20, 0, false));
    assert_eq!(info.message_type, "u64");
    gate_tx.send(()).expect("gate");
    for _ in 0..20 {
        rx.recv().await;
    }
    assert_eventually("mailbox drained", || node.process_info(p.pid()).is_some_and(|i| i.mailbox_len == 0), WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_shrink_releases_mailbox_buffers_after_a_burst() {
    let node = Node::new("t");
    let cfg = MailboxConfig { shrink_to: Some(8), capacity: 10_000, ..MailboxConfig::default() };
    let (gate_tx, gate_rx) = oneshot::channel();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let p = gated(&node, cfg, gate_rx, tx);
    for i in 0..5_000 {
        p.try_send(i).expect("room");
    }
    assert!(node.process_info(p.pid()).expect("alive").mailbox_allocated >= 5_000);
    gate_tx.send(()).expect("gate");
    for _ in 0..5_000 {
        rx.recv().await;
    }
    p.try_send(1).expect("room");
    rx.recv().await;
    assert_eventually(
        "buffers shrink back once the mailbox drains",
        || node.process_info(p.pid()).is_some_and(|i| i.mailbox_allocated <= 8),
        WAIT,
    )
    .await;
}

#[tokio::test]
async fn invalid_mailbox_config_names_the_field() {
    let node = Node::new("t");
    let opts = SpawnOpts { mailbox: Some(Arc::new(MailboxConfig::bounded(0))), ..SpawnOpts::default() };
    let err = node.spawn_with(opts, |_c: Ctx<()>| async {}).expect_err("capacity 0 is invalid");
    assert!(matches!(err, SpawnError::Config(ref e) if e.field == "mailbox.capacity"), "{err}");
    assert_eq!(node.live_processes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_shutdown_leaves_no_process() {
    let node = Node::new("t");
    for _ in 0..1000 {
        node.spawn(|mut c: Ctx<u64>| async move {
            c.recv().await;
        });
    }
    assert_eq!(node.live_processes(), 1000);
    assert_eq!(node.shutdown(WAIT).await, 0);
    assert!(node.processes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_table_slot_never_answers_to_an_old_pid() {
    let node = Node::new("t");
    let mut old = Vec::new();
    for _ in 0..200 {
        let p = node.spawn(|mut c: Ctx<u64>| async move {
            c.recv().await;
        });
        let exited = node.watch(p.pid());
        p.send(0).await.expect("alive");
        exited.await;
        old.push(p.pid());
    }
    // Slots are reused newest first, so these take the slots the old ones had.
    let new: Vec<_> = (0..200)
        .map(|_| {
            node.spawn(|mut c: Ctx<u64>| async move {
                c.recv().await;
            })
            .pid()
        })
        .collect();
    for pid in &old {
        assert!(!node.is_alive(*pid), "{pid:?} is dead; its slot's new occupant must not answer to it");
        assert!(matches!(node.try_send(*pid, 1u64), Err(SendError::NoProc(_))));
        assert!(!new.contains(pid));
    }
    assert!(new.iter().all(|p| node.is_alive(*p)));
    assert_eq!(node.processes().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_name_fails_the_spawn_and_runs_nothing() {
    let node = Node::new("t");
    let first = node.spawn(|mut c: Ctx<u64>| async move {
        c.recv().await;
    });
    node.register("svc", first.pid()).expect("free");
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ran2 = ran.clone();
    let opts = SpawnOpts { name: Some("svc".into()), ..SpawnOpts::default() };
    let err = node
        .spawn_with(opts, move |_c: Ctx<u64>| async move {
            ran2.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .expect_err("name taken");
    assert_eq!(err, SpawnError::Registry(RegistryError::AlreadyRegistered("svc".into(), first.pid())));
    assert_eq!(node.live_processes(), 1, "the failed spawn left nothing behind");
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    let opts = SpawnOpts { name: Some("other".into()), group: Some("g".into()), ..SpawnOpts::default() };
    let second = node.spawn_with(opts, |_c: Ctx<u64>| std::future::pending::<()>()).expect("free name");
    assert_eq!(node.whereis("other"), Some(second.pid()));
    assert_eq!(node.members("g"), vec![second.pid()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_body_constructor_leaves_no_zombie() {
    let node = Node::new("t");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        node.spawn(|_c: Ctx<u64>| -> std::future::Ready<()> { panic!("constructor bug") });
    }));
    assert!(caught.is_err(), "the panic reaches the caller");
    assert_eq!(node.live_processes(), 0);
    assert!(node.processes().is_empty());
    assert_eq!(node.shutdown(WAIT).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_blocked_on_a_shared_budget_wakes_when_another_mailbox_frees_it() {
    let node = Node::new("t");
    let budget = ByteBudget::new(100);
    let per_msg = std::mem::size_of::<Vec<u8>>() + 40;
    let cfg = Arc::new(MailboxConfig { shared_budget: Some(budget.clone()), ..MailboxConfig::default() });
    let opts = || SpawnOpts { mailbox: Some(cfg.clone()), ..SpawnOpts::default() };
    // `a` holds the whole budget until it is told to read.
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let a = node
        .spawn_with(opts(), move |mut c: Ctx<Vec<u8>>| async move {
            let _ = go_rx.await;
            loop {
                c.recv().await;
            }
        })
        .expect("valid");
    let b = node.spawn_with(opts(), |_c: Ctx<Vec<u8>>| std::future::pending::<()>()).expect("valid");
    let mut sent = 0;
    while a.try_send(vec![0; 40]).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 100 / per_msg);
    assert!(matches!(b.try_send(vec![0; 40]), Err(SendError::Full(_))), "b's mailbox is empty but the budget is spent");
    let blocked = foundation::rt::spawn(async move { b.send(vec![0; 40]).await });
    let still_blocked = tokio::time::timeout(Duration::from_millis(30), async {
        while !blocked.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(still_blocked.is_err(), "b's sender waits while the budget is spent");
    go_tx.send(()).expect("a waits");
    tokio::time::timeout(WAIT, blocked).await.expect("b's sender woken by a's release").expect("task").expect("sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_eviction_may_send_to_the_same_process() {
    struct Loud(Option<foundation::Addr<Loud>>);
    impl Message for Loud {}
    impl Drop for Loud {
        fn drop(&mut self) {
            if let Some(to) = self.0.take() {
                let _ = to.try_send(Loud(None));
            }
        }
    }
    let node = Node::new("t");
    let mailbox = Arc::new(MailboxConfig::bounded(2).with_overflow(Overflow::DropOldest));
    let p = node.spawn_with(SpawnOpts { mailbox: Some(mailbox), ..SpawnOpts::default() }, |_c: Ctx<Loud>| std::future::pending::<()>());
    let p = p.expect("valid");
    for _ in 0..5 {
        // Each eviction drops a Loud that sends to `p` itself: no deadlock.
        p.try_send(Loud(Some(p.clone()))).expect("drop-oldest accepts");
    }
    assert!(node.process_info(p.pid()).expect("alive").dropped >= 3);
}
