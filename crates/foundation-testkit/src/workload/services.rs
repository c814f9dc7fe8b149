//! The service workload: configuration and registry operations through the
//! nodes' own services (the agent's `chaos.config.*` and
//! `chaos.registry.*`, see [`crate::agent::services`]), recorded into the
//! KV workload's history, so one linearizability check covers them too.
//!
//! - A configuration key `chaos.cN` is a register (history key
//!   `config/chaos.cN`): `get` is a read, `update` a write. An update with a
//!   negative value must be refused by the nodes' validator: it is recorded
//!   as a write, which a refusal fails; one acknowledged is a violation.
//! - A registry name `chaos.rN` is a register of pids (history key
//!   `registry/chaos.rN`, a pid written as a 52-bit hash): `whereis` reads
//!   it, `register` is a compare-and-set from nothing, `unregister` one to
//!   nothing. The pids are the agents' long-lived processes, but the
//!   registry also releases a name on its own: when its process dies with
//!   its node, and when the leader has not reached the node for
//!   `REGISTRY_DOWN_GRACE` (a partition, a pause, a slow link). So each
//!   fault that may cut a node off (`foundation.chaos.fault`'s `cut_off`,
//!   see [`Fault::cut_off`](crate::cluster::Fault::cut_off)) records, for
//!   every name the workload registered to a process of that node since
//!   the last such fault, an unregister of unknown outcome from that
//!   moment (processes from [`SERVICE_SWEEP_PROCESS_BASE`]): the check
//!   lets the name go then, or never, and nowhere else.
//!
//! After the heal, [`ServiceWorkload::final_reads`] reads every key and name
//! once, and [`ServiceWorkload::check_subscriptions`] checks that every
//! node's subscription to each configuration key holds the converged value.

use std::time::Duration;

use foundation::Pid;
use foundation_cluster::consensus::State;
use foundation_cluster::rpc::RpcError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{Outcome, Sample, WorkloadReport, sample};
use crate::agent::services::{CONFIG_KEYS, ServiceReply};
use crate::cluster::TestCluster;
use crate::recorder::{EventType, Func, Recorder};

/// Process ids of the service clients start here in the history.
pub const SERVICE_PROCESS_BASE: u64 = 2_000_000;
/// The process id of [`ServiceWorkload::final_reads`].
pub const SERVICE_FINAL_READ_PROCESS: u64 = 1_000_001;
/// Process ids of the unregisters a fault may cause start here.
pub const SERVICE_SWEEP_PROCESS_BASE: u64 = 3_000_000;
/// The registry names the workload uses.
pub const REGISTRY_NAMES: [&str; 2] = ["chaos.r0", "chaos.r1"];

/// The service workload.
#[derive(Clone, Debug)]
pub struct ServiceWorkload {
    /// Concurrent clients.
    pub clients: usize,
    /// How long clients run.
    pub duration: Duration,
    /// Each call's timeout.
    pub op_timeout: Duration,
    /// Pause between a client's operations.
    pub think: Duration,
    /// Seed of the clients' choices.
    pub seed: u64,
}

/// A pid as a history value (the history holds integers).
pub fn pid_code(pid: Pid) -> i64 {
    let h = pid.to_string().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (h & ((1 << 52) - 1)) as i64
}

fn config_key(key: &str) -> String {
    format!("config/{key}")
}

fn registry_key(name: &str) -> String {
    format!("registry/{name}")
}

/// A reply as a history event type: reads that did not answer are `fail`
/// (they changed nothing); writes are `fail` only when refused unproposed.
fn kind<T>(reply: &Result<ServiceReply<T>, RpcError>, read: bool) -> (EventType, Outcome) {
    match reply {
        Ok(ServiceReply::Done(_)) => (EventType::Ok, Outcome::Ok),
        Ok(ServiceReply::Failed(_))
        | Err(RpcError::UnknownHandler { .. } | RpcError::Busy { .. } | RpcError::BadRequest { .. } | RpcError::Send(_)) => {
            (EventType::Fail, Outcome::Failed)
        }
        _ if read => (EventType::Fail, Outcome::Failed),
        _ => (EventType::Info, Outcome::Unknown),
    }
}

/// (name, pid) pairs registered since a fault last cut the pid's node off.
type Registered = std::sync::Arc<parking_lot::Mutex<std::collections::BTreeSet<(String, Pid)>>>;

/// On each fault that may cut nodes off, records an unregister of unknown
/// outcome for every name registered to a process of theirs (see the
/// module's docs). Returns the handler, to detach.
fn release_on_faults(cluster: &TestCluster, history: &Recorder, registered: &Registered) -> foundation_cluster::services::HandlerId {
    let (history, registered) = (history.clone(), registered.clone());
    let next = std::sync::atomic::AtomicU64::new(SERVICE_SWEEP_PROCESS_BASE);
    cluster.telemetry().attach("foundation.chaos.fault", move |_, _, meta| {
        let cut_off: Vec<u32> = meta
            .get("cut_off")
            .map(|names| names.split(',').filter(|n| !n.is_empty()).map(|n| foundation::NodeId::new(n, 0).name_hash).collect())
            .unwrap_or_default();
        let mut registered = registered.lock();
        let released: Vec<(String, Pid)> = registered.iter().filter(|(_, pid)| cut_off.contains(&pid.node().name_hash)).cloned().collect();
        for (name, pid) in released {
            registered.remove(&(name.clone(), pid));
            let process = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (key, cas) = (registry_key(&name), json!([pid_code(pid), null]));
            if history.record(process, EventType::Invoke, Func::Cas, &key, cas.clone()) {
                history.record(process, EventType::Info, Func::Cas, &key, cas);
            }
        }
    })
}

/// One client's view: where it talks, under which process id.
struct Client<'a> {
    cluster: &'a TestCluster,
    history: &'a Recorder,
    timeout: Duration,
    process: u64,
    node: usize,
    pool: Vec<Pid>,
    /// The pid each name was last seen registered to.
    seen: std::collections::BTreeMap<String, Pid>,
    /// Names registered (or tried) to a pid since a fault last cut its
    /// node off.
    registered: Registered,
    violations: Vec<String>,
}

impl Client<'_> {
    fn name(&self) -> String {
        self.cluster.names()[self.node].clone()
    }

    async fn call<Req: serde::Serialize + Send + 'static, T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        rpc: &str,
        req: Req,
    ) -> Result<ServiceReply<T>, RpcError> {
        self.cluster.client().rpc(&self.name(), rpc, req, self.timeout + self.timeout / 2).await
    }

    /// Records the completion of an operation (a read's value on `ok`).
    fn record(&self, f: Func, key: &str, value: Value, start: u64, (kind, outcome): (EventType, Outcome), read: Value) -> Sample {
        let value = if f == Func::Read { if kind == EventType::Ok { read } else { Value::Null } } else { value };
        self.history.record(self.process, kind, f, key, value);
        sample(self.history, start, outcome)
    }

    async fn config_op(&mut self, roll: u32, key: &str, value: i64) -> Option<Sample> {
        let hkey = config_key(key);
        let start = self.history.now_us();
        if roll < 4 {
            if !self.history.record(self.process, EventType::Invoke, Func::Read, &hkey, Value::Null) {
                return None;
            }
            let reply: Result<ServiceReply<Option<i64>>, RpcError> = self.call("chaos.config.get", (key.to_owned(), self.timeout)).await;
            let read = match &reply {
                Ok(ServiceReply::Done(v)) => json!(v),
                _ => Value::Null,
            };
            return Some(self.record(Func::Read, &hkey, Value::Null, start, kind(&reply, true), read));
        }
        // One update in five carries a value the validator refuses.
        let value = if roll == 4 { -value } else { value };
        if !self.history.record(self.process, EventType::Invoke, Func::Write, &hkey, json!(value)) {
            return None;
        }
        let reply: Result<ServiceReply<Result<(), String>>, RpcError> =
            self.call("chaos.config.update", (key.to_owned(), value, self.timeout)).await;
        let k = match &reply {
            Ok(ServiceReply::Done(Err(_))) => (EventType::Fail, Outcome::Ok),
            other => kind(other, false),
        };
        if value < 0 && k.0 == EventType::Ok {
            self.violations.push(format!("config {key}: the invalid value {value} was accepted"));
        }
        Some(self.record(Func::Write, &hkey, json!(value), start, k, Value::Null))
    }

    async fn registry_op(&mut self, roll: u32, name: &str, rng: &mut SmallRng) -> Option<Sample> {
        let hkey = registry_key(name);
        let start = self.history.now_us();
        if roll < 4 {
            if !self.history.record(self.process, EventType::Invoke, Func::Read, &hkey, Value::Null) {
                return None;
            }
            let reply: Result<ServiceReply<Option<Pid>>, RpcError> =
                self.call("chaos.registry.whereis", (name.to_owned(), self.timeout)).await;
            let read = match &reply {
                Ok(ServiceReply::Done(p)) => {
                    if let Some(p) = p {
                        self.seen.insert(name.to_owned(), *p);
                    }
                    json!(p.map(pid_code))
                }
                _ => Value::Null,
            };
            return Some(self.record(Func::Read, &hkey, Value::Null, start, kind(&reply, true), read));
        }
        let register = roll < 7;
        if register && self.pool.is_empty() {
            let pool: Result<Vec<Pid>, RpcError> = self.cluster.client().rpc(&self.name(), "chaos.registry.pids", (), self.timeout).await;
            self.pool = pool.unwrap_or_default();
        }
        // Register one of this node's processes; unregister what the name
        // was last seen registered to.
        let pid = if register { self.pool.get(rng.random_range(0..self.pool.len().max(1))).copied() } else { self.seen.get(name).copied() };
        let Some(pid) = pid else {
            return Some(Sample { at_us: start, latency_us: 0, outcome: Outcome::Failed });
        };
        let code = pid_code(pid);
        if register {
            self.registered.lock().insert((name.to_owned(), pid));
        }
        let (cas, rpc) =
            if register { (json!([null, code]), "chaos.registry.register") } else { (json!([code, null]), "chaos.registry.unregister") };
        if !self.history.record(self.process, EventType::Invoke, Func::Cas, &hkey, cas.clone()) {
            return None;
        }
        let k = if register {
            let reply: Result<ServiceReply<Result<(), Pid>>, RpcError> = self.call(rpc, (name.to_owned(), pid, self.timeout)).await;
            match &reply {
                Ok(ServiceReply::Done(Err(_))) => (EventType::Fail, Outcome::Ok),
                Ok(ServiceReply::Done(Ok(()))) => {
                    self.seen.insert(name.to_owned(), pid);
                    (EventType::Ok, Outcome::Ok)
                }
                other => kind(other, false),
            }
        } else {
            let reply: Result<ServiceReply<bool>, RpcError> = self.call(rpc, (name.to_owned(), pid, self.timeout)).await;
            match &reply {
                Ok(ServiceReply::Done(false)) => (EventType::Fail, Outcome::Ok),
                other => kind(other, false),
            }
        };
        if k.1 == Outcome::Failed {
            // The node may have restarted: its processes are new ones.
            self.pool.clear();
        }
        Some(self.record(Func::Cas, &hkey, cas, start, k, Value::Null))
    }
}

impl ServiceWorkload {
    /// 2 clients, 1 s timeouts, 40 ms between operations.
    pub fn new(seed: u64, duration: Duration) -> Self {
        Self { clients: 2, duration, op_timeout: Duration::from_secs(1), think: Duration::from_millis(40), seed }
    }

    /// Runs the clients until `duration` has passed, recording into
    /// `history` (the KV workload's); returns their samples and the
    /// violations they saw (an invalid value accepted).
    pub async fn run_recording(&self, cluster: &TestCluster, history: Recorder) -> (WorkloadReport, Vec<String>) {
        let registered = Registered::default();
        let handler = release_on_faults(cluster, &history, &registered);
        let tasks: Vec<_> = (0..self.clients)
            .map(|c| {
                let (w, cluster, history, registered) = (self.clone(), cluster.clone(), history.clone(), registered.clone());
                foundation::rt::spawn(async move { w.client(c, &cluster, &history, registered).await })
            })
            .collect();
        let mut report = WorkloadReport { history, ..WorkloadReport::default() };
        let mut violations = Vec::new();
        for t in tasks {
            let (samples, v) = t.await.unwrap_or_default();
            report.samples.extend(samples);
            violations.extend(v);
        }
        report.samples.sort_by_key(|s| s.at_us);
        cluster.telemetry().detach(handler);
        (report, violations)
    }

    async fn client(&self, c: usize, cluster: &TestCluster, history: &Recorder, registered: Registered) -> (Vec<Sample>, Vec<String>) {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ (c as u64 + 1).wrapping_mul(0xbb67_ae85_84ca_a73b));
        let mut me = Client {
            cluster,
            history,
            timeout: self.op_timeout,
            process: SERVICE_PROCESS_BASE + c as u64,
            node: c % cluster.size(),
            pool: Vec::new(),
            seen: Default::default(),
            registered,
            violations: Vec::new(),
        };
        let mut samples = Vec::new();
        let mut written = 0i64;
        let deadline = tokio::time::Instant::now() + self.duration;
        while tokio::time::Instant::now() < deadline {
            let roll = rng.random_range(0..10);
            let sample = if rng.random_bool(0.5) {
                written += 1;
                let key = CONFIG_KEYS[rng.random_range(0..CONFIG_KEYS.len())];
                me.config_op(roll, key, (c as i64 + 1) * 1_000_000 + written).await
            } else {
                let name = REGISTRY_NAMES[rng.random_range(0..REGISTRY_NAMES.len())];
                me.registry_op(roll, name, &mut rng).await
            };
            let Some(sample) = sample else { break };
            if sample.outcome != Outcome::Ok {
                me.node = (me.node + 1) % cluster.size();
                me.pool.clear();
            }
            if sample.outcome == Outcome::Unknown {
                me.process += self.clients as u64;
            }
            samples.push(sample);
            tokio::time::sleep(self.think).await;
        }
        (samples, me.violations)
    }

    /// Reads every configuration key and registry name once (after the
    /// heal), into `report`'s history.
    pub async fn final_reads(&self, cluster: &TestCluster, report: &mut WorkloadReport) {
        let history = report.history.clone();
        let mut me = Client {
            cluster,
            history: &history,
            timeout: self.op_timeout,
            process: SERVICE_FINAL_READ_PROCESS,
            node: 0,
            pool: Vec::new(),
            seen: Default::default(),
            registered: Registered::default(),
            violations: Vec::new(),
        };
        let mut rng = SmallRng::seed_from_u64(self.seed);
        for i in 0..CONFIG_KEYS.len() + REGISTRY_NAMES.len() {
            for attempt in 0..cluster.size() * 3 {
                me.node = attempt % cluster.size();
                let sample = match CONFIG_KEYS.get(i) {
                    Some(key) => me.config_op(0, key, 0).await,
                    None => me.registry_op(0, REGISTRY_NAMES[i - CONFIG_KEYS.len()], &mut rng).await,
                };
                let Some(sample) = sample else { return };
                report.samples.push(sample);
                if sample.outcome == Outcome::Ok {
                    break;
                }
            }
        }
    }

    /// Checks that every live node's subscription to each configuration
    /// key holds the value of `state` (the converged state), waiting up to
    /// `within` for the subscriptions to catch up. Returns the mismatches.
    pub async fn check_subscriptions(&self, cluster: &TestCluster, state: &State, within: Duration) -> Vec<String> {
        let start = tokio::time::Instant::now();
        loop {
            let mut wrong = Vec::new();
            for node in (0..cluster.size()).filter(|i| !cluster.killed().contains(i)) {
                let name = &cluster.names()[node];
                for key in CONFIG_KEYS {
                    let stored = state.kv.get(&format!("config/{key}")).and_then(|b| serde_json::from_slice::<Value>(b).ok()?.as_i64());
                    let watched: Result<Option<Option<i64>>, RpcError> =
                        cluster.client().rpc(name, "chaos.config.watched", key.to_owned(), Duration::from_secs(1)).await;
                    match watched {
                        Ok(Some(w)) if w == stored => {}
                        other => wrong.push(format!("{name}'s subscription to {key} holds {other:?}, the state {stored:?}")),
                    }
                }
            }
            if wrong.is_empty() || start.elapsed() >= within {
                return wrong;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
