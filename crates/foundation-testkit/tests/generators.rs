//! The seed's generators, each driving a property over the real system.

use std::time::Duration;

use bytes::Bytes;
use foundation::ecosystem::{ProcessSpec, ecosystem_info, shutdown_ecosystem, spawn_ecosystem};
use foundation::{Ctx, Node, Reply};
use foundation_cluster::consensus::{CLIENT_SUBMIT, Command, ConsensusError, Decision};
use foundation_testkit::cluster::{Backend, ClusterSpec, run};
use foundation_testkit::generators::{GenOperation, distributed_operation, ecosystem_config, message_payload};
use proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn idle(mut ctx: Ctx<u8>) {
    loop {
        ctx.recv().await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Any generated ecosystem starts with its coordinator and exactly its
    /// workers, and shuts down.
    #[test]
    fn every_generated_ecosystem_starts_whole(generated in ecosystem_config()) {
        runtime().block_on(async {
            let node = Node::new("eco");
            let config = generated.to_config(ProcessSpec::new(idle), ProcessSpec::new(idle));
            let eco = spawn_ecosystem(&node, config).await.expect("starts");
            let info = ecosystem_info(&eco).await.expect("info");
            assert_eq!(info.workers.len(), generated.worker_count);
            assert!(info.coordinator.is_some());
            shutdown_ecosystem(&eco).await.expect("stops");
        });
    }

    /// Any generated payload (up to 1 MB) arrives whole through a mailbox.
    #[test]
    fn every_generated_payload_arrives_whole(p in message_payload(1_000_000)) {
        runtime().block_on(async {
            let node = Node::new("msg");
            let echo = node.spawn(|mut ctx: Ctx<(Bytes, Reply<Bytes>)>| async move {
                loop {
                    let (data, reply) = ctx.recv().await;
                    let _ = reply.send(data);
                }
            });
            let back = echo.call(|r| (p.data.clone(), r), Duration::from_secs(5)).await.expect("echoed");
            assert_eq!(back.len(), p.size);
            assert_eq!(back, p.data);
        });
    }
}

/// Runs `op` on a simulated cluster seeded by it: each target (by name
/// hash) writes the operation's key, through consensus or (not required)
/// as a local read of state. Returns what each call answered.
fn run_operation(op: &GenOperation) -> Vec<String> {
    let spec = ClusterSpec::new(Backend::Simulated, 3, op.seed);
    let op = op.clone();
    run(&spec, move |cluster| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut answers = Vec::new();
        for target in &op.target_nodes {
            let node = target.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % cluster.size();
            let name = &cluster.names()[node];
            if op.consensus_required {
                let cmd = Command::Put { key: op.operation.clone(), value: target.clone().into_bytes() };
                let r: Result<Result<Decision, ConsensusError>, _> =
                    cluster.client().rpc(name, CLIENT_SUBMIT, (cmd, op.timeout), op.timeout * 2).await;
                answers.push(format!("{name}: {:?}", r.map(|d| d.map(|d| (d.index, d.applied.previous)))));
            } else {
                let (index, _) = cluster.local_state(node, op.timeout).await.map_err(anyhow::Error::msg)?;
                answers.push(format!("{name}: local index {index:?}"));
            }
        }
        Ok(answers)
    })
    .expect("runs")
    .value
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Any generated operation succeeds on a healthy cluster, and replays
    /// the same from its seed (so shrinking replays it too).
    #[test]
    fn every_generated_operation_succeeds_and_replays(op in distributed_operation()) {
        let first = run_operation(&op);
        prop_assert_eq!(first.len(), op.target_nodes.len());
        if op.consensus_required {
            prop_assert!(first.iter().all(|a| a.contains("Ok(Ok(")), "{:?}", first);
        }
        prop_assert_eq!(first, run_operation(&op));
    }
}
