//! The chaos agent: what every test-kit node runs besides its services,
//! so that the seed's process-level nemeses have something to hit.
//!
//! - an ecosystem named `chaos` under a self-healing supervisor: a
//!   coordinator that takes `Bytes` messages, local or remote (the target
//!   of message floods), and [`WORKERS`] workers that echo `(Bytes, Reply)`
//!   requests (the message workload's `chaos.echo` RPC asks a random one);
//! - with a fault table (a node in its own OS process), `chaos.faults`:
//!   replaces the table its network judges its connections by;
//! - RPCs: `chaos.kill_process` (kills a random worker; the supervisor
//!   restarts it), `chaos.memory` (holds a bounded allocation, touched, for
//!   a while) and `chaos.cpu` (keeps a task busy, yielding every
//!   100 µs, for a while);
//! - a slow consumer: a process registered as [`SLOW_TARGET`] with a
//!   mailbox of [`SLOW_MAILBOX`] messages that `chaos.stall` stops from
//!   reading for a while, and `chaos.flood`, which sends to another node's
//!   slow consumer (the `slow_consumer` nemesis has every other node flood
//!   one);
//! - `chaos.clock` ([`CLOCK_RPC`]): skews the node's wall clock;
//!   `chaos.applied`: the consensus member's applied index (a small answer,
//!   whatever the size of the state);
//! - the services the lock and service workloads call, in the node's
//!   own services (see [`services`]).

pub mod services;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foundation::ecosystem::{EcosystemConfig, ProcessSpec, spawn_ecosystem};
use foundation::mailbox::MailboxConfig;
use foundation::{Ctx, ExitReason, Reply, SpawnOpts};
use foundation_cluster::server::Server;
use rand::Rng;

use crate::cluster::faulty::{FaultTable, Faults};

/// Workers in the agent's ecosystem.
pub const WORKERS: usize = 4;
/// The flood target: the agent coordinator's registered name.
pub const FLOOD_TARGET: &str = "chaos.coordinator";
/// Largest allocation `chaos.memory` makes.
pub const MEMORY_MAX: usize = 256 << 20;
/// Longest `chaos.memory` / `chaos.cpu` hold.
pub const HOLD_MAX: Duration = Duration::from_secs(10);

/// The slow consumer's registered name.
pub const SLOW_TARGET: &str = "chaos.slow";
/// The slow consumer's mailbox (messages).
pub const SLOW_MAILBOX: usize = 64;
/// Most messages one `chaos.flood` call sends (the simulator's sockets
/// hold a bounded number of segments).
pub const FLOOD_MAX: usize = 4_000;
/// Size of a flood message.
pub const FLOOD_BYTES: usize = 1024;
/// The RPC that skews a node's clock: `i64` ms (negative: behind) ->
/// the previous offset.
pub const CLOCK_RPC: &str = "chaos.clock";

/// What the echo workers take.
pub type EchoRequest = (Bytes, Reply<Bytes>);

async fn sink(mut ctx: Ctx<Bytes>) {
    loop {
        drop(ctx.recv().await);
    }
}

/// Until when the slow consumer does not read (monotonic time).
type StallUntil = Arc<parking_lot::Mutex<Option<tokio::time::Instant>>>;

async fn slow(mut ctx: Ctx<Bytes>, until: StallUntil) {
    loop {
        // Copied out: the lock is not held across the sleep.
        let stalled = *until.lock();
        match stalled {
            Some(t) if t > tokio::time::Instant::now() => tokio::time::sleep_until(t).await,
            _ => drop(ctx.recv().await),
        }
    }
}

async fn echo(mut ctx: Ctx<EchoRequest>) {
    loop {
        let (data, reply) = ctx.recv().await;
        let _ = reply.send(data);
    }
}

/// Installs the agent on a started server; `faults` is the table under the
/// server's network, when it runs in a process of its own.
pub async fn install(server: &Server, faults: Option<Arc<Faults>>) -> Result<(), String> {
    let cluster = server.cluster().clone();
    let node = cluster.node().clone();
    cluster.register_message::<Bytes>();
    let mut config = EcosystemConfig::new(ProcessSpec::new(sink), ProcessSpec::new(echo), WORKERS).self_healing();
    config.name = Some("chaos".into());
    // Kills are the point: the supervisor must not give up on them.
    config.max_restarts = 10_000;
    spawn_ecosystem(&node, config).await.map_err(|e| e.to_string())?;
    install_slow_consumer(&cluster)?;
    services::install(server)?;
    let n = node.clone();
    cluster.register_rpc(CLOCK_RPC, move |offset_ms: i64| {
        let before = n.rt().clock_offset();
        n.rt().set_clock_offset(offset_ms);
        async move { before }
    });
    let consensus = server.consensus().cloned();
    cluster.register_rpc("chaos.applied", move |(): ()| {
        let consensus = consensus.clone();
        async move {
            match consensus {
                Some(c) => c.applied_index().await,
                None => None,
            }
        }
    });
    if let Some(faults) = faults {
        cluster.register_rpc("chaos.faults", move |table: FaultTable| {
            faults.replace(&table);
            async {}
        });
    }
    let n = node.clone();
    cluster.register_rpc("chaos.kill_process", move |(): ()| {
        let workers = n.members("chaos.workers");
        let killed = (!workers.is_empty())
            .then(|| workers[n.rt().with_rng(|r| r.random_range(0..workers.len()))])
            .filter(|pid| n.exit(*pid, ExitReason::Kill))
            .map(|pid| pid.to_string());
        async move { killed }
    });
    let n = node.clone();
    cluster.register_rpc("chaos.echo", move |(data, timeout): (Bytes, Duration)| {
        let workers = n.members("chaos.workers");
        let worker = (!workers.is_empty())
            .then(|| workers[n.rt().with_rng(|r| r.random_range(0..workers.len()))])
            .and_then(|pid| n.addr::<EchoRequest>(pid));
        async move {
            let Some(worker) = worker else { return Err("no echo worker running".to_owned()) };
            worker.call(|reply| (data, reply), timeout).await.map_err(|e| e.to_string())
        }
    });
    cluster.register_rpc("chaos.memory", |(bytes, hold): (usize, Duration)| async move {
        let len = bytes.min(MEMORY_MAX);
        let mut block = vec![0u8; len];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        tokio::time::sleep(hold.min(HOLD_MAX)).await;
        drop(block);
        len
    });
    cluster.register_rpc("chaos.cpu", |hold: Duration| async move {
        let end = tokio::time::Instant::now() + hold.min(HOLD_MAX);
        let mut spins = 0u64;
        while tokio::time::Instant::now() < end {
            let slice = std::time::Instant::now();
            while slice.elapsed() < Duration::from_micros(100) {
                spins = spins.wrapping_add(1);
                std::hint::spin_loop();
            }
            tokio::task::yield_now().await;
        }
        spins
    });
    Ok(())
}

/// The slow consumer and the RPCs around it: `chaos.stall` (hold ->
/// whether the consumer runs), `chaos.slow_len` (its mailbox length),
/// `chaos.flood` ((node, count, within) -> messages queued towards that
/// node's consumer before `within` ran out).
fn install_slow_consumer(cluster: &foundation_cluster::mesh::Cluster) -> Result<(), String> {
    let node = cluster.node().clone();
    let until: StallUntil = Arc::default();
    let mailbox = MailboxConfig { capacity: SLOW_MAILBOX, ..MailboxConfig::default() };
    let opts = SpawnOpts { mailbox: Some(Arc::new(mailbox)), name: Some(SLOW_TARGET.into()), ..SpawnOpts::default() };
    let u = until.clone();
    node.spawn_with(opts, move |ctx| slow(ctx, u)).map_err(|e| e.to_string())?;
    let n = node.clone();
    cluster.register_rpc("chaos.stall", move |hold: Duration| {
        *until.lock() = Some(tokio::time::Instant::now() + hold.min(HOLD_MAX));
        let running = n.whereis(SLOW_TARGET).is_some();
        async move { running }
    });
    let n = node.clone();
    cluster.register_rpc("chaos.slow_len", move |(): ()| {
        let len = n.whereis(SLOW_TARGET).and_then(|pid| n.process_info(pid)).map(|i| i.mailbox_len);
        async move { len }
    });
    // Weak: a handler must not keep its own cluster alive.
    let weak = cluster.downgrade();
    cluster.register_rpc("chaos.flood", move |(to, count, within): (String, usize, Duration)| {
        let cluster = weak.upgrade();
        async move {
            let Some(cluster) = cluster else { return 0 };
            let deadline = tokio::time::Instant::now() + within.min(HOLD_MAX);
            let msg = Bytes::from(vec![0u8; FLOOD_BYTES]);
            let mut sent = 0;
            while sent < count.min(FLOOD_MAX) {
                match tokio::time::timeout_at(deadline, cluster.send_named(&to, SLOW_TARGET, msg.clone())).await {
                    Ok(Ok(())) => sent += 1,
                    _ => break,
                }
            }
            sent
        }
    });
    Ok(())
}
