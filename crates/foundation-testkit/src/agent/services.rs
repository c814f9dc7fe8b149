//! The agent's doors to the node's own services, for the lock and service
//! workloads ([`crate::workload::locks`], [`crate::workload::services`]):
//! a lock taken through a node goes through that node's `acquire_lock`, so
//! its lease is judged by that node's clock, and a configuration update is
//! checked by that node's validators.
//!
//! Every answer is a [`ServiceReply`]: done, failed (nothing was proposed:
//! no quorum, no leader, the service is not running) or unknown (it may
//! still take effect).
//!
//! | RPC | request | answer |
//! |---|---|---|
//! | `chaos.lock.acquire` | `(lock, holder, lease, timeout)` | `Ok(lease)` granted, `Err(lease)` held by another |
//! | `chaos.lock.release` | `(lock, holder, token, timeout)` | whether it still held it |
//! | `chaos.config.update` | `(key, value, timeout)` | `Err(why)` when a validator refused it |
//! | `chaos.config.get` | `(key, timeout)` | the integer value (linearizable) |
//! | `chaos.config.watched` | `key` | the value a subscription on this node holds |
//! | `chaos.registry.pids` | `()` | the node's [`REGISTRY_POOL`] long-lived processes |
//! | `chaos.registry.register` | `(name, pid, timeout)` | `Err(pid)` when the name is taken |
//! | `chaos.registry.whereis` | `(name, timeout)` | the registered pid |
//! | `chaos.registry.unregister` | `(name, pid, timeout)` | whether it mapped to `pid` |
//!
//! Configuration keys under [`CONFIG_PREFIX`] take integers, and its
//! validator refuses negative ones. The registry's processes live as long
//! as the node; a name still goes behind the workload's back when the
//! leader stops reaching their node (the registry's sweep), which the
//! service workload models (see `workload::services`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use foundation::Pid;
use foundation_cluster::consensus::coordination::LockError;
use foundation_cluster::consensus::{ConsensusError, LockState};
use foundation_cluster::server::Server;
use foundation_cluster::services::{ConfigError, RegistryError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

/// The configuration keys the service workload uses start with this.
pub const CONFIG_PREFIX: &str = "chaos.";
/// The configuration keys every agent follows (`chaos.config.watched`).
pub const CONFIG_KEYS: [&str; 2] = ["chaos.c0", "chaos.c1"];
/// Long-lived processes per node that the registry workload registers.
pub const REGISTRY_POOL: usize = 4;

/// How a service call ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServiceReply<T> {
    /// It happened; here is what it returned.
    Done(T),
    /// It did not happen.
    Failed(String),
    /// It may or may not have happened (or may still).
    Unknown(String),
}

impl<T> ServiceReply<T> {
    fn consensus(e: &ConsensusError) -> Self {
        match e {
            ConsensusError::NoQuorum { .. } | ConsensusError::NoLeader(_) | ConsensusError::NotLeader | ConsensusError::TooLarge { .. } => {
                Self::Failed(e.to_string())
            }
            _ => Self::Unknown(e.to_string()),
        }
    }

    fn not_running(service: &str) -> Self {
        Self::Failed(format!("the {service} service is not running on this node"))
    }
}

/// A lock request: `(lock, holder, lease, timeout)`.
pub type AcquireRequest = (String, String, Duration, Duration);
/// A lock's answer: granted (`Ok`) or held by another (`Err`).
pub type AcquireReply = ServiceReply<Result<LockState, LockState>>;

/// Installs the service RPCs on a started server.
pub(crate) fn install(server: &Server) -> Result<(), String> {
    let cluster = server.cluster();
    let coordination = server.coordination().cloned();
    let c = coordination.clone();
    cluster.register_rpc("chaos.lock.acquire", move |(lock, holder, lease, timeout): AcquireRequest| {
        let c = c.clone();
        async move {
            let Some(c) = c else { return AcquireReply::not_running("coordination") };
            match c.acquire_lock(&lock, &holder, lease, timeout).await {
                Ok(state) => ServiceReply::Done(Ok(state)),
                Err(LockError::Held(state)) => ServiceReply::Done(Err(state)),
                Err(LockError::Consensus(e)) => ServiceReply::consensus(&e),
            }
        }
    });
    cluster.register_rpc("chaos.lock.release", move |(lock, holder, token, timeout): (String, String, u64, Duration)| {
        let c = coordination.clone();
        async move {
            let Some(c) = c else { return ServiceReply::not_running("coordination") };
            match c.release_lock(&lock, &holder, token, timeout).await {
                Ok(released) => ServiceReply::Done(released),
                Err(e) => ServiceReply::consensus(&e),
            }
        }
    });
    install_config(server)?;
    install_registry(server)
}

fn config_reply<T>(e: &ConfigError) -> ServiceReply<T> {
    match e {
        ConfigError::Consensus(e) => ServiceReply::consensus(e),
        other => ServiceReply::Failed(other.to_string()),
    }
}

fn install_config(server: &Server) -> Result<(), String> {
    let cluster = server.cluster();
    let Some(config) = server.config().cloned() else { return Ok(()) };
    config.validate(CONFIG_PREFIX, |v: &Value| match v.as_i64() {
        Some(n) if n >= 0 => Ok(()),
        _ => Err("a chaos.* value is a non-negative integer".to_owned()),
    });
    let watched: Arc<Mutex<BTreeMap<String, watch::Receiver<Option<Value>>>>> = Arc::default();
    {
        let config = config.clone();
        let watched = watched.clone();
        // Subscriptions need the runtime: taken in a task, at once.
        foundation::rt::spawn(async move {
            for key in CONFIG_KEYS {
                if let Ok(rx) = config.subscribe(key).await {
                    watched.lock().insert(key.to_owned(), rx);
                }
            }
        });
    }
    let c = config.clone();
    cluster.register_rpc("chaos.config.update", move |(key, value, timeout): (String, i64, Duration)| {
        let c = c.clone();
        async move {
            match c.update(&key, Value::from(value), timeout).await {
                Ok(()) => ServiceReply::Done(Ok(())),
                Err(ConfigError::Invalid { reason, .. }) => ServiceReply::Done(Err(reason)),
                Err(e) => config_reply(&e),
            }
        }
    });
    cluster.register_rpc("chaos.config.get", move |(key, timeout): (String, Duration)| {
        let c = config.clone();
        async move {
            match c.get(&key, timeout).await {
                Ok(None) => ServiceReply::Done(None),
                Ok(Some(v)) => v
                    .as_i64()
                    .map_or_else(|| ServiceReply::Failed(format!("{key}: {v} is not an integer")), |n| ServiceReply::Done(Some(n))),
                Err(e) => config_reply(&e),
            }
        }
    });
    cluster.register_rpc("chaos.config.watched", move |key: String| {
        let value = watched.lock().get(&key).map(|rx| rx.borrow().as_ref().and_then(Value::as_i64));
        async move { value }
    });
    Ok(())
}

fn registry_reply<T>(e: &RegistryError) -> ServiceReply<T> {
    match e {
        RegistryError::Consensus(e) => ServiceReply::consensus(e),
        other => ServiceReply::Failed(other.to_string()),
    }
}

async fn sleeper(mut ctx: foundation::Ctx<()>) {
    loop {
        ctx.recv().await;
    }
}

fn install_registry(server: &Server) -> Result<(), String> {
    let cluster = server.cluster();
    let Some(registry) = server.registry().cloned() else { return Ok(()) };
    let node = cluster.node();
    let pool: Vec<Pid> = (0..REGISTRY_POOL).map(|_| node.spawn(sleeper).pid()).collect();
    cluster.register_rpc("chaos.registry.pids", move |(): ()| {
        let pool = pool.clone();
        async move { pool }
    });
    let r = registry.clone();
    cluster.register_rpc("chaos.registry.register", move |(name, pid, timeout): (String, Pid, Duration)| {
        let r = r.clone();
        async move {
            match r.register(&name, pid, timeout).await {
                Ok(()) => ServiceReply::Done(Ok(())),
                Err(RegistryError::Taken { pid, .. }) => ServiceReply::Done(Err(pid)),
                Err(e) => registry_reply(&e),
            }
        }
    });
    let r = registry.clone();
    cluster.register_rpc("chaos.registry.whereis", move |(name, timeout): (String, Duration)| {
        let r = r.clone();
        async move {
            match r.whereis(&name, timeout).await {
                Ok(pid) => ServiceReply::Done(pid),
                Err(e) => registry_reply(&e),
            }
        }
    });
    cluster.register_rpc("chaos.registry.unregister", move |(name, pid, timeout): (String, Pid, Duration)| {
        let r = registry.clone();
        async move {
            match r.unregister(&name, pid, timeout).await {
                Ok(done) => ServiceReply::Done(done),
                Err(e) => registry_reply(&e),
            }
        }
    });
    Ok(())
}
