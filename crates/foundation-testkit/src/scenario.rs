//! The seed's Layer 4 as a reusable run: a workload beside the chaos
//! monkey, then heal, convergence, final reads and the linearizability
//! check. `foundation chaos` and the chaos tests both run it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::chaos::{ChaosMonkey, ChaosReport, Nemesis};
use crate::cluster::{FaultRecord, TestCluster};
use crate::linearizability::{CheckResult, Verdict, check};
use crate::recorder::Recorder;
use crate::workload::{FINAL_READ_PROCESS, KvWorkload, MessageWorkload, WorkloadReport};

/// What to run.
#[derive(Clone)]
pub struct ChaosRun {
    /// How long the workload and the monkey run.
    pub duration: Duration,
    /// The nemeses.
    pub faults: Vec<Nemesis>,
    /// Workload clients.
    pub clients: usize,
    /// Workload keys.
    pub keys: usize,
    /// Message workload clients (0: none).
    pub message_clients: usize,
    /// Pause between a client's operations.
    pub think: Duration,
    /// How long the cluster gets to converge after the heal.
    pub converge_within: Duration,
    /// Called about twice a second (cluster time) while the workload runs.
    pub progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
}

/// How far a run is, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Time since the workload started (virtual under simulation).
    pub elapsed: Duration,
    /// The run's length.
    pub duration: Duration,
    /// KV operations recorded so far (invokes and completions / 2).
    pub operations: usize,
    /// Faults applied to the cluster so far.
    pub faults: usize,
}

impl std::fmt::Debug for ChaosRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaosRun")
            .field("duration", &self.duration)
            .field("faults", &self.faults)
            .field("clients", &self.clients)
            .field("keys", &self.keys)
            .field("message_clients", &self.message_clients)
            .field("think", &self.think)
            .finish()
    }
}

impl ChaosRun {
    /// The seed's test: 30 s of every nemesis beside 5 clients on 3 keys.
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            faults: Nemesis::ALL.to_vec(),
            clients: 5,
            keys: 3,
            message_clients: 2,
            think: Duration::from_millis(10),
            converge_within: Duration::from_secs(30),
            progress: None,
        }
    }
}

/// What a chaos run found.
#[derive(Debug)]
pub struct ChaosOutcome {
    /// How long the workload and the monkey ran.
    pub duration: Duration,
    /// When the workload started (µs of cluster time): the offset of the
    /// workload's times from the fault log's.
    pub workload_start_us: u64,
    /// The workload's operations and history (final reads included).
    pub workload: WorkloadReport,
    /// The message workload's round trips.
    pub messages: WorkloadReport,
    /// What the monkey injected.
    pub chaos: ChaosReport,
    /// Every fault applied to the cluster, with times.
    pub faults: Vec<FaultRecord>,
    /// The linearizability check of the history.
    pub check: CheckResult,
    /// Time from the heal to convergence, or why it did not converge.
    pub convergence: Result<Duration, String>,
    /// Keys whose converged value differs from the final linearizable read.
    pub diverged_keys: Vec<String>,
}

/// The verdicts, one per line, for a report.
#[derive(Clone, Debug, Serialize)]
pub struct Checks {
    /// `success_rate > 0.8`, for the KV workload and for the message
    /// workload (when it ran).
    pub success_rate: bool,
    /// `failures_injected > 10` for the seed's 30 s, scaled to the run's
    /// length (more than `10 × duration / 30 s`, rounded down).
    pub failures_injected: bool,
    /// The history is linearizable (so no acknowledged write was lost).
    pub linearizable: bool,
    /// Every node converged after the heal, to what the final reads saw.
    pub converged: bool,
}

impl Checks {
    /// Whether every check passed.
    pub fn all(&self) -> bool {
        self.success_rate && self.failures_injected && self.linearizable && self.converged
    }
}

impl ChaosOutcome {
    /// The injections the run must exceed: 10 for the seed's 30 s.
    pub fn faults_needed(&self) -> usize {
        (10 * self.duration.as_millis() / 30_000) as usize
    }

    /// The seed's checks and this kit's.
    pub fn checks(&self) -> Checks {
        Checks {
            success_rate: self.workload.success_rate() > 0.8 && (self.messages.total() == 0 || self.messages.success_rate() > 0.8),
            failures_injected: self.chaos.failures_injected() > self.faults_needed(),
            linearizable: self.check.verdict == Verdict::Linearizable,
            converged: self.convergence.is_ok() && self.diverged_keys.is_empty(),
        }
    }
}

/// Waits until the cluster commits a write (a leader exists).
async fn wait_ready(cluster: &TestCluster, within: Duration) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    loop {
        for name in cluster.names() {
            let cmd = foundation_cluster::consensus::Command::Put { key: "ready".into(), value: b"1".to_vec() };
            let r: Result<Result<foundation_cluster::consensus::Decision, foundation_cluster::consensus::ConsensusError>, _> = cluster
                .client()
                .rpc(name, foundation_cluster::consensus::CLIENT_SUBMIT, (cmd, Duration::from_secs(1)), Duration::from_secs(2))
                .await;
            if matches!(r, Ok(Ok(_))) {
                return Ok(());
            }
        }
        if start.elapsed() > within {
            anyhow::bail!("no write committed within {within:?} of the start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the workload beside the monkey on `cluster`, heals it, waits for
/// convergence, reads every key and checks the history.
pub async fn run_chaos(cluster: &TestCluster, run: &ChaosRun) -> anyhow::Result<ChaosOutcome> {
    wait_ready(cluster, Duration::from_secs(30)).await?;
    let seed = cluster.seed();
    let workload =
        KvWorkload { clients: run.clients, keys: run.keys, think: run.think, ..KvWorkload::new(seed.wrapping_add(1), run.duration) };
    let monkey = ChaosMonkey::new(seed.wrapping_add(2)).only(&run.faults);
    let messages =
        MessageWorkload { clients: run.message_clients, think: run.think, ..MessageWorkload::new(seed.wrapping_add(3), run.duration) };
    let workload_start_us = u64::try_from(cluster.elapsed().as_micros()).unwrap_or(u64::MAX);
    let recorder = Recorder::new();
    let (mut report, messages, chaos) = {
        let ticker = run.progress.clone().map(|report| {
            let cluster = cluster.clone();
            let duration = run.duration;
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                loop {
                    let operations = recorder.len() / 2;
                    report(Progress { elapsed: start.elapsed().min(duration), duration, operations, faults: cluster.faults().len() });
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        });
        let out = tokio::join!(workload.run_recording(cluster, recorder), messages.run(cluster), monkey.run(cluster, run.duration));
        if let Some(t) = ticker {
            t.abort();
        }
        out
    };
    cluster.recover().await.context("healing the cluster")?;
    let converged = cluster.converged(run.converge_within).await;
    workload.final_reads(cluster, &mut report).await;
    let ops = report.history.ops().context("the recorded history")?;
    let check = check(&ops);
    let mut diverged_keys = Vec::new();
    let convergence = match converged {
        Ok((took, state)) => {
            for k in 0..run.keys {
                let key = format!("k{k}");
                let read = ops.iter().rev().find(|o| o.process == FINAL_READ_PROCESS && o.key == key);
                let stored = state.kv.get(&key).and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok());
                if read.is_some_and(|op| op.kind != crate::linearizability::OpKind::Read(stored)) {
                    diverged_keys.push(key);
                }
            }
            Ok(took)
        }
        Err(e) => Err(e),
    };
    Ok(ChaosOutcome {
        duration: run.duration,
        workload_start_us,
        workload: report,
        messages,
        chaos,
        faults: cluster.faults(),
        check,
        convergence,
        diverged_keys,
    })
}
