//! Workloads that record histories.
//!
//! [`MessageWorkload`]: clients send payloads of random size to a random
//! worker of a node's agent ecosystem (`chaos.echo`, see
//! [`crate::agent`]) and expect them back intact: message passing through
//! the mesh, mailboxes and supervised processes that the monkey kills.
//!
//! [`locks::LockWorkload`]: clients take, use and give back locks; mutual
//! exclusion and growing fencing tokens are checked. [`services::ServiceWorkload`]:
//! configuration and registry operations, recorded into the KV history.
//!
//! [`KvWorkload`]: clients read, write and compare-and-set a few integer
//! registers on the consensus service, through [`TestCluster::client`]
//! (the `consensus.submit` / `consensus.query` RPCs of any member, which
//! forward to the leader). Every operation is recorded as invoke, then ok,
//! fail or info ([`crate::recorder`]), so the history can be checked for
//! linearizability.
//!
//! Outcomes: an answer is `ok`; an error that says nothing was proposed
//! (`NoQuorum`, `NoLeader`, a refused call) is `fail`; anything else (a
//! timeout, a connection lost while the call was out, `Unknown`) is `info`
//! for writes and compare-and-sets, and `fail` for reads (a read that
//! returned nothing changed nothing). A client whose operation ended in
//! `info` continues under a new process id, as in Jepsen, and every client
//! moves on to the next node after anything but `ok`.

pub mod locks;
pub mod services;

use std::time::Duration;

use foundation_cluster::consensus::{Answer, CLIENT_QUERY, CLIENT_SUBMIT, Command, ConsensusError, Decision, Query};
use foundation_cluster::rpc::RpcError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cluster::TestCluster;
use crate::recorder::{EventType, Func, Recorder};

/// The process id of [`KvWorkload::final_reads`] in the history.
pub const FINAL_READ_PROCESS: u64 = 1_000_000;

/// The KV register workload.
#[derive(Clone, Debug)]
pub struct KvWorkload {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys (`k0`, `k1`, ...).
    pub keys: usize,
    /// How long clients issue operations.
    pub duration: Duration,
    /// Each operation's timeout.
    pub op_timeout: Duration,
    /// Pause between a client's operations.
    pub think: Duration,
    /// Seed of the clients' choices.
    pub seed: u64,
}

impl KvWorkload {
    /// 5 clients on 3 keys, 1 s timeouts, 10 ms between operations.
    pub fn new(seed: u64, duration: Duration) -> Self {
        Self { clients: 5, keys: 3, duration, op_timeout: Duration::from_secs(1), think: Duration::from_millis(10), seed }
    }

    /// Runs the clients until `duration` has passed and returns what they
    /// saw. The recorder starts with the run.
    pub async fn run(&self, cluster: &TestCluster) -> WorkloadReport {
        self.run_recording(cluster, Recorder::new()).await
    }

    /// [`KvWorkload::run`], recording into `recorder` (which others may
    /// watch meanwhile, e.g. for progress).
    pub async fn run_recording(&self, cluster: &TestCluster, recorder: Recorder) -> WorkloadReport {
        let mut tasks = Vec::new();
        for c in 0..self.clients {
            let w = self.clone();
            let cluster = cluster.clone();
            let recorder = recorder.clone();
            tasks.push(foundation::rt::spawn(async move { w.client(c, &cluster, &recorder).await }));
        }
        gather(recorder, tasks).await
    }

    /// Reads every key once (linearizably), recorded in `report`'s history:
    /// after the heal, these reads pin down the final values, so the check
    /// catches a lost acknowledged write.
    pub async fn final_reads(&self, cluster: &TestCluster, report: &mut WorkloadReport) {
        let process = FINAL_READ_PROCESS;
        for k in 0..self.keys {
            let key = format!("k{k}");
            for attempt in 0..cluster.size() * 3 {
                let node = &cluster.names()[attempt % cluster.size()];
                if let Some((sample, _)) = read(cluster, node, process, &key, self.op_timeout, &report.history).await {
                    let done = sample.outcome == Outcome::Ok;
                    report.samples.push(sample);
                    if done {
                        break;
                    }
                }
            }
        }
    }

    async fn client(&self, c: usize, cluster: &TestCluster, history: &Recorder) -> Vec<Sample> {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut process = c as u64;
        let mut node = c % cluster.size();
        let mut written = 0i64;
        let mut samples = Vec::new();
        let mut last_seen = std::collections::BTreeMap::new();
        let deadline = tokio::time::Instant::now() + self.duration;
        while tokio::time::Instant::now() < deadline {
            let key = format!("k{}", rng.random_range(0..self.keys));
            let name = cluster.names()[node].clone();
            let roll = rng.random_range(0..10);
            let sample = if roll < 5 {
                let seen = read(cluster, &name, process, &key, self.op_timeout, history).await;
                if let Some((_, Some(v))) = seen {
                    last_seen.insert(key.clone(), v);
                }
                seen.map(|(s, _)| s)
            } else {
                written += 1;
                let value = (c as i64 + 1) * 1_000_000 + written;
                if roll < 8 {
                    last_seen.insert(key.clone(), value);
                    let cmd = Command::Put { key: key.clone(), value: value.to_string().into_bytes() };
                    submit(cluster, &name, process, Func::Write, &key, json!(value), cmd, self.op_timeout, history).await
                } else {
                    // What this client last saw there (often still current).
                    let expected = last_seen.get(&key).copied().unwrap_or(0);
                    let cmd = Command::Cas {
                        key: key.clone(),
                        expected: Some(expected.to_string().into_bytes()),
                        new: Some(value.to_string().into_bytes()),
                    };
                    submit(cluster, &name, process, Func::Cas, &key, json!([expected, value]), cmd, self.op_timeout, history).await
                }
            };
            let Some(sample) = sample else { break }; // the history is full
            if sample.outcome != Outcome::Ok {
                node = (node + 1) % cluster.size();
            }
            if sample.outcome == Outcome::Unknown {
                process += self.clients as u64;
            }
            samples.push(sample);
            tokio::time::sleep(self.think).await;
        }
        samples
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It did not happen.
    Failed,
    /// It may or may not have happened.
    Unknown,
}

/// One operation, for the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When it was invoked (µs since the workload started).
    pub at_us: u64,
    /// How long it took (µs).
    pub latency_us: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// What a workload saw.
#[derive(Clone, Debug, Default)]
pub struct WorkloadReport {
    /// Every operation, in invoke order.
    pub samples: Vec<Sample>,
    /// The recorded history.
    pub history: Recorder,
}

impl WorkloadReport {
    fn count(&self, o: Outcome) -> usize {
        self.samples.iter().filter(|s| s.outcome == o).count()
    }

    /// Operations that happened.
    pub fn ok(&self) -> usize {
        self.count(Outcome::Ok)
    }

    /// Operations that did not.
    pub fn failed(&self) -> usize {
        self.count(Outcome::Failed)
    }

    /// Operations of unknown outcome.
    pub fn unknown(&self) -> usize {
        self.count(Outcome::Unknown)
    }

    /// All operations.
    pub fn total(&self) -> usize {
        self.samples.len()
    }

    /// `ok / total` (0 when nothing ran).
    pub fn success_rate(&self) -> f64 {
        if self.samples.is_empty() { 0.0 } else { self.ok() as f64 / self.total() as f64 }
    }

    /// The `q`-quantile (0..=1) of successful operations' latency.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        let mut l: Vec<u64> = self.samples.iter().filter(|s| s.outcome == Outcome::Ok).map(|s| s.latency_us).collect();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l.sort_unstable();
        let i = ((l.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        Duration::from_micros(l[i])
    }
}

/// The clients' samples, in invoke order, with the history they recorded.
async fn gather(history: Recorder, tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>) -> WorkloadReport {
    let mut report = WorkloadReport { history, ..WorkloadReport::default() };
    for t in tasks {
        if let Ok(samples) = t.await {
            report.samples.extend(samples);
        }
    }
    report.samples.sort_by_key(|s| s.at_us);
    report
}

fn int(bytes: Option<Vec<u8>>) -> Value {
    bytes.and_then(|b| String::from_utf8(b).ok()).and_then(|s| s.parse::<i64>().ok()).map_or(Value::Null, Value::from)
}

fn sample(history: &Recorder, start: u64, outcome: Outcome) -> Sample {
    Sample { at_us: start, latency_us: history.now_us().saturating_sub(start), outcome }
}

/// Reads `key`; the sample and the value read (on success).
async fn read(
    cluster: &TestCluster,
    node: &str,
    process: u64,
    key: &str,
    timeout: Duration,
    history: &Recorder,
) -> Option<(Sample, Option<i64>)> {
    let start = history.now_us();
    if !history.record(process, EventType::Invoke, Func::Read, key, Value::Null) {
        return None;
    }
    let reply: Result<Result<Answer, ConsensusError>, RpcError> =
        cluster.traced(cluster.client().rpc(node, CLIENT_QUERY, (Query::Get(key.to_owned()), timeout), timeout + timeout / 2)).await;
    let (kind, value, outcome) = match reply {
        Ok(Ok(Answer::Value(v))) => (EventType::Ok, int(v), Outcome::Ok),
        _ => (EventType::Fail, Value::Null, Outcome::Failed),
    };
    let seen = value.as_i64();
    history.record(process, kind, Func::Read, key, value);
    Some((sample(history, start, outcome), seen))
}

#[allow(clippy::too_many_arguments)]
async fn submit(
    cluster: &TestCluster,
    node: &str,
    process: u64,
    f: Func,
    key: &str,
    value: Value,
    cmd: Command,
    timeout: Duration,
    history: &Recorder,
) -> Option<Sample> {
    let start = history.now_us();
    if !history.record(process, EventType::Invoke, f, key, value.clone()) {
        return None;
    }
    let reply: Result<Result<Decision, ConsensusError>, RpcError> =
        cluster.traced(cluster.client().rpc(node, CLIENT_SUBMIT, (cmd, timeout), timeout + timeout / 2)).await;
    let (kind, outcome) = match reply {
        Ok(Ok(d)) if d.applied.ok => (EventType::Ok, Outcome::Ok),
        // A compare-and-set whose expectation failed: it changed nothing
        // (`fail` in the history), but the operation itself succeeded.
        Ok(Ok(_)) => (EventType::Fail, Outcome::Ok),
        Ok(Err(
            ConsensusError::NoQuorum { .. } | ConsensusError::NoLeader(_) | ConsensusError::NotLeader | ConsensusError::TooLarge { .. },
        )) => (EventType::Fail, Outcome::Failed),
        Err(RpcError::UnknownHandler { .. } | RpcError::Busy { .. } | RpcError::BadRequest { .. } | RpcError::Send(_)) => {
            (EventType::Fail, Outcome::Failed)
        }
        _ => (EventType::Info, Outcome::Unknown),
    };
    history.record(process, kind, f, key, value);
    Some(sample(history, start, outcome))
}

/// The message workload: echo round trips through the nodes' agent
/// ecosystems.
#[derive(Clone, Debug)]
pub struct MessageWorkload {
    /// Concurrent clients.
    pub clients: usize,
    /// How long clients send.
    pub duration: Duration,
    /// Each round trip's timeout.
    pub op_timeout: Duration,
    /// Pause between a client's round trips.
    pub think: Duration,
    /// Largest payload (bytes); sizes are uniform in 1..=max.
    pub max_payload: usize,
    /// Seed of the clients' choices.
    pub seed: u64,
}

impl MessageWorkload {
    /// 5 clients, payloads up to 4 KiB, 1 s timeouts, 10 ms between.
    pub fn new(seed: u64, duration: Duration) -> Self {
        Self { clients: 5, duration, op_timeout: Duration::from_secs(1), think: Duration::from_millis(10), max_payload: 4 << 10, seed }
    }

    /// Runs the clients until `duration` has passed. A round trip is `ok`
    /// when the payload comes back intact, `fail` otherwise (a lost
    /// message, a killed worker, a timeout: the echo changes nothing, so
    /// nothing is unknown).
    pub async fn run(&self, cluster: &TestCluster) -> WorkloadReport {
        self.run_recording(cluster, Recorder::new()).await
    }

    /// [`KvWorkload::run`], recording into `recorder` (which others may
    /// watch meanwhile, e.g. for progress).
    pub async fn run_recording(&self, cluster: &TestCluster, recorder: Recorder) -> WorkloadReport {
        let mut tasks = Vec::new();
        for c in 0..self.clients {
            let w = self.clone();
            let cluster = cluster.clone();
            let history = recorder.clone();
            tasks.push(foundation::rt::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(w.seed ^ (c as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let mut samples = Vec::new();
                let deadline = tokio::time::Instant::now() + w.duration;
                // Like the KV clients: stay on a node, move on after a failure.
                let mut at = c % cluster.size();
                while tokio::time::Instant::now() < deadline {
                    let node = cluster.names()[at].clone();
                    let size = rng.random_range(1..=w.max_payload.max(1));
                    let fill = rng.random::<u8>();
                    let payload = bytes::Bytes::from(vec![fill; size]);
                    let start = history.now_us();
                    if !history.record(c as u64, EventType::Invoke, Func::Echo, &node, json!(size)) {
                        break;
                    }
                    let reply: Result<Result<bytes::Bytes, String>, RpcError> =
                        cluster.client().rpc(&node, "chaos.echo", (payload.clone(), w.op_timeout), w.op_timeout * 2).await;
                    let ok = matches!(&reply, Ok(Ok(back)) if *back == payload);
                    if !ok {
                        at = (at + 1) % cluster.size();
                    }
                    let kind = if ok { EventType::Ok } else { EventType::Fail };
                    history.record(c as u64, kind, Func::Echo, &node, json!(size));
                    samples.push(sample(&history, start, if ok { Outcome::Ok } else { Outcome::Failed }));
                    tokio::time::sleep(w.think).await;
                }
                samples
            }));
        }
        gather(recorder, tasks).await
    }
}
