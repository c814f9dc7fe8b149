//! Cluster services with the Foundation 1.x names.
//!
//! - [`ConfigService`]: cluster-wide configuration. `update` validates the
//!   value (validators registered per key prefix) and commits it through
//!   consensus; `get` is linearizable; `subscribe` follows a key as every
//!   member applies changes. Errors are typed ([`ConfigError`]).
//! - [`Registry`]: cluster-wide process names. A name maps to one pid
//!   through consensus (registration is a compare-and-set on an absent
//!   name); the registering node removes the name when its process exits.
//! - [`Telemetry`]: `emit` / `attach` / `detach` of named events, as
//!   `:telemetry`; every emitted event also counts into the node's
//!   Prometheus recorder (through the `metrics` facade, never a global
//!   recorder), with a histogram per measurement.
//! - Events: see [`foundation::events`]; the node server keeps one store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use foundation::Pid;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::watch;

use crate::consensus::{Command, Consensus, ConsensusError};

/// The consensus key spaces the cluster's services own. A service that
/// keeps keys in the consensus store takes its prefix from here, and so
/// the raw `/kv` API refuses it ([`internal_prefix`]): add the variant,
/// and both follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpace {
    /// Configuration entries ([`ConfigService`]).
    Config,
    /// Registered names ([`Registry`]).
    Registry,
    /// The group's records of its voters (consensus's own,
    /// [`crate::consensus::MEMBERS_PREFIX`]).
    Members,
}

impl KeySpace {
    /// Every key space (the match in [`KeySpace::prefix`] makes a new
    /// variant name its prefix; a test checks it is listed here).
    pub const ALL: [KeySpace; 3] = [Self::Config, Self::Registry, Self::Members];

    /// Its key prefix.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Config => "config/",
            Self::Registry => "registry/",
            Self::Members => crate::consensus::MEMBERS_PREFIX,
        }
    }
}

/// The consensus key prefix of configuration entries.
pub const CONFIG_PREFIX: &str = KeySpace::Config.prefix();
/// The consensus key prefix of registered names.
pub const REGISTRY_PREFIX: &str = KeySpace::Registry.prefix();

/// The service prefix `key` falls under, if any: such keys are written
/// through their service only. (Locks and barriers live outside the
/// key-value map, in the state machine's own tables: no key reaches them.)
pub fn internal_prefix(key: &str) -> Option<&'static str> {
    KeySpace::ALL.into_iter().map(KeySpace::prefix).find(|p| key.starts_with(p))
}
/// How long a voter that holds names must stay unreachable from the
/// leader before its names are removed (a crashed node never releases them).
pub const REGISTRY_DOWN_GRACE: Duration = Duration::from_secs(3);
/// How soon a subscription reads again a state it could not read.
const SUBSCRIPTION_RETRY: Duration = Duration::from_millis(100);
/// How often the leader looks for names to remove.
pub const REGISTRY_SWEEP: Duration = Duration::from_millis(500);

/// Why a configuration operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The key is empty, too long, or has control characters.
    #[error("invalid config key {0:?}")]
    BadKey(String),
    /// A validator refused the value.
    #[error("invalid value for {key}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The stored value is not JSON (written around this service).
    #[error("stored value of {0} is not JSON")]
    Corrupt(String),
    /// Consensus did not decide.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
}

type Validator = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// Cluster-wide configuration on consensus. Cheap to clone.
#[derive(Clone)]
pub struct ConfigService {
    consensus: Consensus,
    validators: Arc<RwLock<BTreeMap<String, Validator>>>,
}

fn check_key(key: &str) -> Result<(), ConfigError> {
    if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
        return Err(ConfigError::BadKey(key.to_owned()));
    }
    Ok(())
}

impl ConfigService {
    /// The service over a consensus member.
    pub fn new(consensus: Consensus) -> Self {
        Self { consensus, validators: Arc::default() }
    }

    /// Checks every update of keys starting with `prefix` with `validator`
    /// (on this node: register the same validators on every node).
    pub fn validate(&self, prefix: &str, validator: impl Fn(&Value) -> Result<(), String> + Send + Sync + 'static) {
        self.validators.write().insert(prefix.to_owned(), Arc::new(validator));
    }

    /// The value of `key` (linearizable).
    pub async fn get(&self, key: &str, timeout: Duration) -> Result<Option<Value>, ConfigError> {
        check_key(key)?;
        let raw = self.consensus.get(&format!("{CONFIG_PREFIX}{key}"), timeout).await?;
        raw.map(|b| serde_json::from_slice(&b).map_err(|_| ConfigError::Corrupt(key.to_owned()))).transpose()
    }

    /// Validates `value` and commits it as `key`'s value.
    pub async fn update(&self, key: &str, value: Value, timeout: Duration) -> Result<(), ConfigError> {
        check_key(key)?;
        let validators: Vec<Validator> =
            self.validators.read().iter().filter(|(p, _)| key.starts_with(p.as_str())).map(|(_, v)| v.clone()).collect();
        for v in validators {
            v(&value).map_err(|reason| ConfigError::Invalid { key: key.to_owned(), reason })?;
        }
        let bytes = serde_json::to_vec(&value).expect("a JSON value serializes");
        self.consensus.reach_consensus(Command::Put { key: format!("{CONFIG_PREFIX}{key}"), value: bytes }, timeout).await?;
        Ok(())
    }

    /// Follows `key` as this member applies changes: the receiver holds the
    /// value as applied here (starting with the current one). The task
    /// behind it ends when the last receiver drops.
    pub async fn subscribe(&self, key: &str) -> Result<watch::Receiver<Option<Value>>, ConfigError> {
        check_key(key)?;
        let full = format!("{CONFIG_PREFIX}{key}");
        let mut changes = self.consensus.changes();
        let read = |b: Option<Vec<u8>>| b.and_then(|b| serde_json::from_slice(&b).ok());
        let (tx, rx) = watch::channel(read(self.consensus.local_get(&full).await));
        let consensus = self.consensus.clone();
        self.consensus.rt().spawn(async move {
            loop {
                // Ends as soon as the last receiver drops, not at the key's
                // next change (which may never come): the task holds the
                // consensus member.
                let change = tokio::select! {
                    biased;
                    () = tx.closed() => return,
                    c = changes.recv() => c,
                };
                match change {
                    Ok(k) if k != full => continue,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
                // A member whose storage is being reopened cannot be read:
                // its value is unknown, not absent. Retried until it reads.
                let value = loop {
                    match consensus.local_read(&full).await {
                        Ok(v) => break v,
                        Err(_) => tokio::select! {
                            biased;
                            () = tx.closed() => return,
                            () = foundation::rt::sleep(SUBSCRIPTION_RETRY) => {}
                        },
                    }
                };
                if tx.send(read(value)).is_err() {
                    return; // no subscriber left
                }
            }
        });
        Ok(rx)
    }
}

/// Why a registry operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is taken (by this pid).
    #[error("name {name} is registered to {pid}")]
    Taken {
        /// The name.
        name: String,
        /// Who has it.
        pid: Pid,
    },
    /// The name is empty or too long.
    #[error("invalid name {0:?}")]
    BadName(String),
    /// Consensus did not decide.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
}

/// Cluster-wide process names on consensus. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    consensus: Consensus,
    node: foundation::Node,
    /// The sweeper task, aborted when the last clone drops.
    _sweeper: Arc<AbortOnDrop>,
}

#[must_use = "the task is aborted when this is dropped"]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Registry {
    /// The registry as seen from `node` (which watches the processes it
    /// registers and removes their names when they exit). While this member
    /// leads, it also removes the names held by a voter it has not reached
    /// for [`REGISTRY_DOWN_GRACE`] (a crashed node never releases its
    /// names; a partitioned one loses them too, as with Erlang's `global`),
    /// looking every [`REGISTRY_SWEEP`]: such names go within the sum of
    /// the two (plus a commit). Must be called inside a tokio runtime.
    pub fn new(consensus: Consensus, node: foundation::Node) -> Self {
        let sweeper = node.rt().spawn(sweep(consensus.clone()));
        Self { consensus, node, _sweeper: Arc::new(AbortOnDrop(sweeper)) }
    }

    fn key(name: &str) -> Result<String, RegistryError> {
        if name.is_empty() || name.len() > 256 {
            return Err(RegistryError::BadName(name.to_owned()));
        }
        Ok(format!("{REGISTRY_PREFIX}{name}"))
    }

    /// Registers `name` for `pid` (a process of this node) cluster-wide.
    pub async fn register(&self, name: &str, pid: Pid, timeout: Duration) -> Result<(), RegistryError> {
        let key = Self::key(name)?;
        if !self.node.is_alive(pid) {
            return Err(RegistryError::BadName(format!("{name}: {pid} is not a live process of this node")));
        }
        let value = postcard::to_stdvec(&pid).expect("a pid encodes");
        let d =
            self.consensus.reach_consensus(Command::Cas { key: key.clone(), expected: None, new: Some(value.clone()) }, timeout).await?;
        if !d.applied.ok {
            let holder = d.applied.previous.and_then(|b| postcard::from_bytes(&b).ok()).unwrap_or(pid);
            return Err(RegistryError::Taken { name: name.to_owned(), pid: holder });
        }
        // When the process ends, its name goes (if it still maps to it).
        let exited = self.node.watch(pid);
        let consensus = self.consensus.clone();
        self.node.rt().spawn(async move {
            exited.await;
            let release = Command::Cas { key, expected: Some(value), new: None };
            if let Err(e) = consensus.reach_consensus(release, Duration::from_secs(10)).await {
                tracing::warn!(error = %e, "could not remove the name of an exited process");
            }
        });
        Ok(())
    }

    /// The pid registered as `name`, cluster-wide (linearizable).
    pub async fn whereis(&self, name: &str, timeout: Duration) -> Result<Option<Pid>, RegistryError> {
        let raw = self.consensus.get(&Self::key(name)?, timeout).await?;
        Ok(raw.and_then(|b| postcard::from_bytes(&b).ok()))
    }

    /// Removes `name` if it maps to `pid`; returns whether it did.
    pub async fn unregister(&self, name: &str, pid: Pid, timeout: Duration) -> Result<bool, RegistryError> {
        let value = postcard::to_stdvec(&pid).expect("a pid encodes");
        let d = self.consensus.reach_consensus(Command::Cas { key: Self::key(name)?, expected: Some(value), new: None }, timeout).await?;
        Ok(d.applied.ok)
    }
}

/// The leader's sweep of names held by voters it does not reach.
async fn sweep(consensus: Consensus) {
    // Voter name hash -> when the leader first saw it unreachable.
    let mut unreachable_since: BTreeMap<u32, tokio::time::Instant> = BTreeMap::new();
    loop {
        foundation::rt::sleep(REGISTRY_SWEEP).await;
        let status = consensus.status();
        if !consensus.is_leader() {
            unreachable_since.clear();
            continue;
        }
        let now = tokio::time::Instant::now();
        let hash = |name: &String| foundation::NodeId::new(name, 0).name_hash;
        let down: Vec<u32> = status.members.iter().filter(|m| !status.reachable.contains(m)).map(hash).collect();
        unreachable_since.retain(|h, _| down.contains(h));
        for h in down {
            unreachable_since.entry(h).or_insert(now);
        }
        let gone: Vec<u32> = unreachable_since.iter().filter(|(_, t)| now - **t >= REGISTRY_DOWN_GRACE).map(|(h, _)| *h).collect();
        if gone.is_empty() {
            continue;
        }
        let state = consensus.local_state().await;
        let names = state.kv.range(REGISTRY_PREFIX.to_owned()..).take_while(|(k, _)| k.starts_with(REGISTRY_PREFIX));
        for (key, value) in names {
            let Ok(pid) = postcard::from_bytes::<Pid>(value) else { continue };
            if !gone.contains(&pid.node().name_hash) {
                continue;
            }
            tracing::info!(%key, %pid, "removing the name of a node unreachable past the registry's grace");
            let release = Command::Cas { key: key.clone(), expected: Some(value.clone()), new: None };
            if let Err(e) = consensus.reach_consensus(release, REGISTRY_SWEEP * 4).await {
                tracing::warn!(%key, error = %e, "could not remove the name of an unreachable node");
            }
        }
    }
}

/// Identifies an attached telemetry handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HandlerId(u64);

type TelemetryHandler = Arc<dyn Fn(&str, &BTreeMap<String, f64>, &BTreeMap<String, String>) + Send + Sync>;

/// A node's telemetry: named events with measurements and metadata. Cheap
/// to clone.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<TelemetryInner>,
}

struct TelemetryInner {
    handlers: RwLock<BTreeMap<HandlerId, (String, TelemetryHandler)>>,
    next: AtomicU64,
    recorder: PrometheusRecorder,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").field("handlers", &self.inner.handlers.read().len()).finish()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// A telemetry hub with its own Prometheus recorder.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(TelemetryInner {
                handlers: RwLock::default(),
                next: AtomicU64::new(1),
                recorder: PrometheusBuilder::new().build_recorder(),
            }),
        }
    }

    /// Calls `handler` for every event whose name starts with `prefix`.
    pub fn attach(
        &self,
        prefix: &str,
        handler: impl Fn(&str, &BTreeMap<String, f64>, &BTreeMap<String, String>) + Send + Sync + 'static,
    ) -> HandlerId {
        let id = HandlerId(self.inner.next.fetch_add(1, Ordering::Relaxed));
        self.inner.handlers.write().insert(id, (prefix.to_owned(), Arc::new(handler)));
        id
    }

    /// Detaches a handler; returns whether it was attached.
    pub fn detach(&self, id: HandlerId) -> bool {
        self.inner.handlers.write().remove(&id).is_some()
    }

    /// Emits an event: calls the matching handlers (outside the lock) and
    /// counts it (`foundation_telemetry_events_total{event}`, and a
    /// histogram `foundation_telemetry_measurement{event,measurement}`).
    pub fn emit(&self, event: &str, measurements: &BTreeMap<String, f64>, metadata: &BTreeMap<String, String>) {
        let handlers: Vec<TelemetryHandler> =
            self.inner.handlers.read().values().filter(|(p, _)| event.starts_with(p.as_str())).map(|(_, h)| h.clone()).collect();
        for h in handlers {
            h(event, measurements, metadata);
        }
        metrics::with_local_recorder(&self.inner.recorder, || {
            metrics::counter!("foundation_telemetry_events_total", "event" => event.to_owned()).increment(1);
            for (m, v) in measurements {
                metrics::histogram!("foundation_telemetry_measurement", "event" => event.to_owned(), "measurement" => m.clone()).record(*v);
            }
        });
    }

    /// Records through this hub's recorder (for `metrics` macros).
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.inner.recorder, f)
    }

    /// The Prometheus handle (render the text exposition).
    pub fn prometheus(&self) -> PrometheusHandle {
        self.inner.recorder.handle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new key space fails to compile here until it is looked at: list it
    /// in `KeySpace::ALL`, so the admin API refuses it.
    #[test]
    fn every_key_space_is_refused_on_raw_kv() {
        let listed = |k: KeySpace| match k {
            KeySpace::Config | KeySpace::Registry | KeySpace::Members => KeySpace::ALL.contains(&k),
        };
        for k in [KeySpace::Config, KeySpace::Registry, KeySpace::Members] {
            assert!(listed(k), "{k:?} is missing from KeySpace::ALL");
            assert_eq!(internal_prefix(&format!("{}x", k.prefix())), Some(k.prefix()));
        }
        assert_eq!(internal_prefix("configx"), None);
    }
}
