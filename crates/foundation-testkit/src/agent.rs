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
//!   100 µs, for a while).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foundation::ecosystem::{EcosystemConfig, ProcessSpec, spawn_ecosystem};
use foundation::{Ctx, ExitReason, Reply};
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

/// What the echo workers take.
pub type EchoRequest = (Bytes, Reply<Bytes>);

async fn sink(mut ctx: Ctx<Bytes>) {
    loop {
        drop(ctx.recv().await);
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
