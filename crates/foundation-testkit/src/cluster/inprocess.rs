//! The in-process backend: real [`Server`]s on loopback TCP in this
//! process, on a multi-threaded tokio runtime of their own, each through a
//! [`FaultyNetwork`] over one [`Faults`] table.
//!
//! Each node keeps its durable state in a data directory under a
//! scratch directory that the run removes at the end. A kill shuts the
//! node's server down (its tasks end, its connections close, its database
//! closes); a restart on the same directory and listen address recovers
//! its Raft log. A pause
//! stalls every connection of the node (its timers still run: a real
//! SIGSTOP would stop them too, which only the process backend can do).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use foundation::rt::RtConfig;
use foundation::rt::net::BoxFuture;
use foundation::{Node, NodeConfig};
use foundation_cluster::mesh::{Cluster, ClusterConfig};
use foundation_cluster::server::{PeerSpec, Server, ServerConfig};

use super::faulty::{Faults, FaultyNetwork};
use super::{
    ClusterSpec, Control, Fault, FaultError, Run, RunError, Steps, TestCluster, body_within, connect_all, free_ports, node_name, node_seed,
    scratch_dir, secret, wipe_dir,
};

struct InProcControl {
    scratch: std::path::PathBuf,
    configs: Vec<ServerConfig>,
    servers: tokio::sync::Mutex<Vec<Option<Server>>>,
    faults: Arc<Faults>,
}

/// Starts a server, retrying while its port is still held by the one
/// before it (a restart right after a kill).
async fn start(config: ServerConfig) -> Result<Server, String> {
    let mut tries = 0;
    loop {
        match Server::start(config.clone()).await {
            Ok(s) => {
                if let Err(e) = crate::agent::install(&s, None).await {
                    s.shutdown().await;
                    return Err(format!("{}: the chaos agent: {e}", config.name));
                }
                return Ok(s);
            }
            Err(e) if tries < 40 => {
                tracing::debug!(node = %config.name, error = %e, "start failed, retrying");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("{}: {e}", config.name)),
        }
    }
}

impl Control for InProcControl {
    fn apply<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async move {
            if self.faults.apply(self.configs.len(), fault) {
                return Ok(());
            }
            match fault {
                Fault::Kill { node } => {
                    let server = self.servers.lock().await[*node].take();
                    if let Some(s) = server {
                        s.shutdown().await;
                    }
                }
                Fault::Restart { node } => {
                    let server = start(self.configs[*node].clone()).await.map_err(FaultError::Backend)?;
                    self.servers.lock().await[*node] = Some(server);
                }
                Fault::Pause { node } => self.faults.set_paused(*node, true),
                Fault::Resume { node } => self.faults.set_paused(*node, false),
                Fault::WipeDisk { node } => {
                    if let Some(dir) = &self.configs[*node].data_dir {
                        wipe_dir(dir).map_err(|e| FaultError::Backend(format!("wiping {}: {e}", dir.display())))?;
                    }
                }
                Fault::TruncateLog { .. } => {
                    return Err(FaultError::Unsupported {
                        fault: "a truncated log",
                        backend: super::Backend::InProcess,
                        why: "this backend does not cut a real log file; use the simulated backend",
                    });
                }
                Fault::ClockSkew { .. } => return Err(FaultError::Backend("a clock skew goes through the node's agent".into())),
                Fault::DiskError { .. } | Fault::DiskLatency { .. } => unreachable!("set on the node's DiskFaults by TestCluster::apply"),
                _ => unreachable!("network faults are applied above"),
            }
            Ok(())
        })
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let servers: Vec<Server> = self.servers.lock().await.iter_mut().filter_map(Option::take).collect();
            for s in servers {
                s.shutdown().await;
            }
            let _ = std::fs::remove_dir_all(&self.scratch);
        })
    }
}

pub(super) fn run<T, F, Fut>(spec: &ClusterSpec, body: F) -> Result<Run<T>, RunError>
where
    T: Send + 'static,
    F: FnOnce(TestCluster) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let wall = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| RunError::Start(e.to_string()))?;
    let spec = spec.clone();
    runtime.block_on(async move {
        let faults = Arc::new(Faults::new(spec.seed));
        let scratch = scratch_dir()?;
        let ports = free_ports(spec.nodes)?;
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        for (i, addr) in addrs.iter().enumerate() {
            faults.register(addr, i);
        }
        let traces = super::traces(&spec)?;
        let configs: Vec<ServerConfig> = (0..spec.nodes)
            .map(|i| ServerConfig {
                traces: traces.clone(),
                id: i as u64 + 1,
                name: node_name(i),
                listen: addrs[i].clone(),
                http: None,
                admin: Default::default(),
                peers: (0..spec.nodes)
                    .filter(|j| *j != i)
                    .map(|j| PeerSpec { id: j as u64 + 1, name: node_name(j), addr: addrs[j].clone() })
                    .collect(),
                data_dir: Some(scratch.join(node_name(i))),
                secret: secret(),
                cluster_id: "foundation-inprocess".into(),
                lan: false,
                services: spec.services.clone(),
                rt: RtConfig {
                    seed: node_seed(spec.seed, i as u64),
                    network: Arc::new(FaultyNetwork::new(Some(i), faults.clone())),
                    ..RtConfig::default()
                },
                disk: None,
                frame_limit: spec.frame_limit,
                disk_faults: spec.disk_faults(i),
                tls: None,
                snapshots: Default::default(),
            })
            .collect();
        let mut servers = Vec::new();
        for c in &configs {
            match start(c.clone()).await {
                Ok(s) => servers.push(Some(s)),
                Err(e) => {
                    for s in servers.into_iter().flatten() {
                        s.shutdown().await;
                    }
                    let _ = std::fs::remove_dir_all(&scratch);
                    return Err(RunError::Start(e));
                }
            }
        }
        let control = InProcControl { scratch, configs, servers: tokio::sync::Mutex::new(servers), faults: faults.clone() };
        let client_rt =
            RtConfig { seed: node_seed(spec.seed, u64::MAX), network: Arc::new(FaultyNetwork::new(None, faults)), ..RtConfig::default() };
        let node = Node::with_config(NodeConfig { name: "client".into(), rt: client_rt, ..NodeConfig::default() })
            .map_err(|e| RunError::Start(e.to_string()))?;
        let mut client_config = ClusterConfig::new("client", "127.0.0.1:0", secret());
        client_config.traces = traces.clone();
        let client = match Cluster::start(node, client_config).await {
            Ok(c) => c,
            Err(e) => {
                control.stop().await;
                return Err(RunError::Start(e.to_string()));
            }
        };
        let cluster = TestCluster::new(spec, client.clone(), Box::new(control), Steps::default());
        if let Err(e) = connect_all(&client, &addrs).await {
            cluster.stop().await;
            return Err(RunError::Start(e));
        }
        let result = body_within(&cluster, body(cluster.clone())).await;
        let cluster_time = cluster.elapsed();
        cluster.stop().await;
        if let Some(traces) = traces {
            traces.shutdown().await;
        }
        result.map(|value| Run { value, cluster_time, wall_time: wall.elapsed() })
    })
}
