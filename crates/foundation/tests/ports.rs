//! Ports: framed stdio, crashes, restarts, garbage, and no orphans.

use std::time::Duration;

use bytes::Bytes;
use foundation::port::{PortCommand, PortConfig, PortData, PortError, port_child, start_port};
use foundation::supervisor::{ChildSpec, Strategy, Supervisor, SupervisorSpec};
use foundation::{Addr, Ctx, ExitReason, Node, SendError, SpawnOpts};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

/// An owner process that forwards every frame to the test.
fn owner(node: &Node) -> (Addr<PortData>, mpsc::UnboundedReceiver<PortData>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = node.spawn(move |mut ctx: Ctx<PortData>| async move {
        loop {
            if tx.send(ctx.recv().await).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// `cat` echoes every frame back unchanged.
fn echo() -> PortConfig {
    PortConfig::new("cat", Vec::<String>::new())
}

/// Alive: present and not a zombie (a killed grandchild waits for init to
/// reap it, which a container's init may never do).
fn os_process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

async fn os_pid(port: &Addr<PortCommand>) -> u32 {
    port.call(PortCommand::os_pid, WAIT).await.expect("port answers").expect("child running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_go_through_the_command_and_back_in_order() {
    let node = Node::new("t");
    let (owner, mut frames) = owner(&node);
    let port = start_port(&node, echo(), owner, SpawnOpts::default()).expect("cat starts");
    let big = Bytes::from((0..1_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    for payload in [Bytes::from_static(b"hello"), Bytes::new(), big.clone()] {
        port.send(PortCommand::send(payload.clone())).await.expect("port alive");
        let got = tokio::time::timeout(WAIT, frames.recv()).await.expect("in time").expect("owner alive");
        assert_eq!(got.port, port.pid());
        assert_eq!(got.data, payload);
    }
    let child = os_pid(&port).await;
    let exited = node.watch(port.pid());
    node.exit(port.pid(), ExitReason::Shutdown);
    assert_eq!(exited.await, ExitReason::Shutdown);
    assert!(!os_process_exists(child), "the command is gone with its port");
}

#[tokio::test]
async fn a_command_that_cannot_start_is_a_clear_error_naming_it() {
    let node = Node::new("t");
    let (owner, _frames) = owner(&node);
    let err = start_port(&node, PortConfig::new("no-such-command-for-foundation", ["--flag"]), owner, SpawnOpts::default())
        .expect_err("no such program");
    assert!(matches!(err, PortError::Spawn { .. }));
    let msg = err.to_string();
    assert!(msg.contains("no-such-command-for-foundation --flag"), "{msg}");
    assert_eq!(node.live_processes(), 1, "only the owner; no port process");
}

/// A trapping process linked to each port it is given: reports exits. The
/// link exists before the port runs, so no exit can be missed.
fn exit_observer(node: &Node) -> (foundation::Pid, mpsc::UnboundedReceiver<ExitReason>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = node.spawn(move |mut ctx: Ctx<()>| async move {
        ctx.trap_exit(true);
        loop {
            if let foundation::Event::Exit { reason, .. } = ctx.recv_event().await {
                let _ = tx.send(reason);
            }
        }
    });
    (addr.pid(), rx)
}

async fn port_exit(node: &Node, config: PortConfig) -> ExitReason {
    let (observer, mut exits) = exit_observer(node);
    let (owner, _frames) = owner(node);
    let opts = SpawnOpts { link: Some(observer), ..SpawnOpts::default() };
    start_port(node, config, owner, opts).expect("command starts");
    tokio::time::timeout(WAIT, exits.recv()).await.expect("port ends").expect("observer alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_becomes_the_exit_reason() {
    let node = Node::new("t");
    for (script, want) in [("exit 0", None), ("exit 3", Some("exited with exit status: 3"))] {
        let reason = port_exit(&node, PortConfig::new("sh", ["-c", script])).await;
        match want {
            None => assert_eq!(reason, ExitReason::Normal),
            Some(text) => assert!(reason.to_string().contains(text), "{reason}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_crash_the_port_not_the_node() {
    let node = Node::new("t");
    let (owner, _frames) = owner(&node);
    // "garb" read as a length is 1.7 GB: far over the limit.
    drop(owner);
    let reason = port_exit(&node, PortConfig::new("sh", ["-c", "printf 'garbage!'; exec sleep 30"])).await;
    assert!(reason.to_string().contains("garbage on stdout"), "{reason}");
    // The node keeps serving: a new port works.
    let (owner2, mut frames) = self::owner(&node);
    let echo_port = start_port(&node, echo(), owner2, SpawnOpts::default()).expect("cat starts");
    echo_port.send(PortCommand::send(Bytes::from_static(b"still here"))).await.expect("alive");
    assert_eq!(tokio::time::timeout(WAIT, frames.recv()).await.expect("in time").expect("frame").data, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_at_the_sender() {
    let node = Node::new("t");
    let (owner, _frames) = owner(&node);
    let config = PortConfig { max_frame_bytes: 1024, ..echo() };
    let port = start_port(&node, config, owner, SpawnOpts::default()).expect("cat starts");
    let err = port.try_send(PortCommand::send(Bytes::from(vec![0u8; 4096]))).expect_err("too large");
    assert!(matches!(err, SendError::TooLarge { .. }), "{err}");
    assert!(node.is_alive(port.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_port_is_restarted_and_shutdown_leaves_no_os_process() {
    let node = Node::new("t");
    let (owner, mut frames) = owner(&node);
    let spec = SupervisorSpec {
        strategy: Strategy::OneForOne,
        intensity: 5,
        period: Duration::from_secs(10),
        children: vec![ChildSpec::from_start("echo", port_child(echo(), owner))],
    };
    let sup = Supervisor::start(&node, spec).await.expect("starts");
    let first = sup.child_pids().await.expect("answers")[0].expect("running");
    let first_port: Addr<PortCommand> = node.addr(first).expect("a port");
    let first_os = os_pid(&first_port).await;
    // Crash the command from outside, as an OOM killer would.
    let killed = std::process::Command::new("kill").args(["-9", &first_os.to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let deadline = tokio::time::Instant::now() + WAIT;
    let second = loop {
        if let Some(p) = sup.child_pids().await.expect("answers")[0].filter(|p| *p != first && node.is_alive(*p)) {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "the port was not restarted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let second_port: Addr<PortCommand> = node.addr(second).expect("a port");
    let second_os = os_pid(&second_port).await;
    assert_ne!(first_os, second_os, "a new command runs");
    second_port.send(PortCommand::send(Bytes::from_static(b"again"))).await.expect("alive");
    assert_eq!(tokio::time::timeout(WAIT, frames.recv()).await.expect("in time").expect("frame").data, "again");
    assert_eq!(sup.shutdown().await, ExitReason::Shutdown);
    assert!(!os_process_exists(second_os), "no orphan after shutdown");
    assert!(!os_process_exists(first_os));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_inside_a_frame_header_is_garbage() {
    let node = Node::new("t");
    let (owner, _frames) = owner(&node);
    drop(owner);
    let reason = port_exit(&node, PortConfig::new("sh", ["-c", "printf ab"])).await;
    assert!(reason.to_string().contains("inside a frame header"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_closes_when_its_owner_dies() {
    let node = Node::new("t");
    let (owner, _frames) = owner(&node);
    let port = start_port(&node, echo(), owner.clone(), SpawnOpts::default()).expect("cat starts");
    let child = os_pid(&port).await;
    let port_exit = node.watch(port.pid());
    node.exit(owner.pid(), ExitReason::Kill);
    let reason = tokio::time::timeout(WAIT, port_exit).await.expect("port ends");
    assert!(reason.to_string().contains("owner exited: killed"), "{reason}");
    assert!(!os_process_exists(child));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descendants_of_the_command_die_with_the_port() {
    let node = Node::new("t");
    let (owner, mut frames) = owner(&node);
    // sh forks a grandchild and reports its pid in one 8-byte frame.
    let script = r"sleep 300 & printf '\000\000\000\010%8d' $!; wait";
    let port = start_port(&node, PortConfig::new("sh", ["-c", script]), owner, SpawnOpts::default()).expect("sh starts");
    let frame = tokio::time::timeout(WAIT, frames.recv()).await.expect("in time").expect("frame");
    let grandchild: u32 = std::str::from_utf8(&frame.data).expect("digits").trim().parse().expect("a pid");
    assert!(os_process_exists(grandchild));
    let exited = node.watch(port.pid());
    node.exit(port.pid(), ExitReason::Shutdown);
    assert_eq!(exited.await, ExitReason::Shutdown);
    // SIGKILL is delivered asynchronously to a process the port does not wait for.
    foundation_testutil::assert_eventually("the command's whole process group is killed", || !os_process_exists(grandchild), WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_stops_reading_does_not_wedge_the_port() {
    let node = Node::new("t");
    let (owner, _frames) = owner(&node);
    // `sleep` never reads its stdin: the pipe fills, then the port's queues.
    let port = start_port(&node, PortConfig::new("sleep", ["300"]), owner, SpawnOpts::default()).expect("sleep starts");
    let frame = Bytes::from(vec![0u8; 64 * 1024]);
    let mut accepted = 0;
    for _ in 0..5_000 {
        match port.try_send(PortCommand::send(frame.clone())) {
            Ok(()) => accepted += 1,
            Err(SendError::Full(_)) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(accepted < 5_000, "backpressure reached the sender");
    // Still answering: signals are watched while frames pile up.
    let exited = node.watch(port.pid());
    node.exit(port.pid(), ExitReason::Shutdown);
    assert_eq!(tokio::time::timeout(WAIT, exited).await.expect("port answers its shutdown"), ExitReason::Shutdown);
}

#[tokio::test]
async fn an_impossible_frame_limit_is_refused() {
    let node = Node::new("t");
    let (owner, _frames) = owner(&node);
    let err = start_port(&node, PortConfig { max_frame_bytes: 0, ..echo() }, owner, SpawnOpts::default()).expect_err("0 is no limit");
    assert!(matches!(err, PortError::Config(_)), "{err}");
}

/// A port whose command never reads its stdin holds a bounded number of
/// bytes: its mailbox, [`foundation::port::PENDING_BYTES_MAX`] and two
/// frames in its writer's queue. Senders then see `Full`. (Before, it
/// took 256 frames of any size beyond its mailbox: 320 MiB of 1 MiB
/// frames.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_whose_command_never_reads_holds_a_bounded_number_of_bytes() {
    let node = Node::new("t");
    let (owner, _frames) = owner(&node);
    let port = start_port(&node, PortConfig::new("sleep", ["60"]), owner, SpawnOpts::default()).expect("sleep starts");
    const MIB: usize = 1 << 20;
    let frame = Bytes::from(vec![7u8; MIB]);
    let (mut accepted, mut refused_in_a_row) = (0usize, 0);
    // Until the port has taken nothing for a second (or far past the bound).
    while accepted < 600 && refused_in_a_row < 20 {
        match port.try_send(PortCommand::send(frame.clone())) {
            Ok(()) => {
                accepted += 1;
                refused_in_a_row = 0;
            }
            Err(SendError::Full(_)) => {
                refused_in_a_row += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the port refused with {e}"),
        }
    }
    let bound = foundation::mailbox::MAILBOX_BYTES_DEFAULT + foundation::port::PENDING_BYTES_MAX + 3 * MIB;
    assert!(accepted * MIB <= bound, "the port took {accepted} MiB, over its bound of {} MiB", bound / MIB);
    assert!(node.is_alive(port.pid()), "the port keeps running");
    node.exit(port.pid(), ExitReason::Shutdown);
}
