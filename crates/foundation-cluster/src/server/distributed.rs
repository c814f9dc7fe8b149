//! N servers on loopback in one process ([`start_distributed_cluster`]),
//! for tests and examples.

#[allow(clippy::wildcard_imports)] // the server's types and imports
use super::*;

/// What [`start_distributed_cluster`] starts.
#[derive(Clone, Debug)]
pub struct DistributedConfig {
    /// How many nodes (named `node1`, `node2`, ...; ids 1, 2, ...).
    pub nodes: usize,
    /// The services every node runs.
    pub services: BTreeSet<Service>,
    /// The shared secret.
    pub secret: ClusterSecret,
    /// A parent directory for the nodes' data directories; in memory if `None`.
    pub data_dir: Option<PathBuf>,
    /// LAN consensus timers.
    pub lan: bool,
    /// Serve each node's admin HTTP API (on a loopback port, under one
    /// new token: [`DistributedCluster::admin_token`]).
    pub http: bool,
}

/// Nodes started together in this process, on loopback.
pub struct DistributedCluster {
    servers: Vec<Server>,
    admin_token: Option<AdminToken>,
}

impl DistributedCluster {
    /// The nodes, in id order.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// The admin API's token, when the nodes serve it.
    pub fn admin_token(&self) -> Option<&AdminToken> {
        self.admin_token.as_ref()
    }

    /// Waits until every node with coordination reports `operational`.
    pub async fn wait_operational(&self, timeout: Duration) -> Result<(), ConsensusError> {
        let deadline = tokio::time::Instant::now() + timeout;
        for s in &self.servers {
            let Some(c) = s.coordination() else { continue };
            while !c.status().operational {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ConsensusError::NoLeader(timeout));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        for s in &self.servers {
            s.shutdown().await;
        }
    }
}

/// Starts `config.nodes` nodes on loopback in this process, each running
/// the requested services, as one cluster (the seed's
/// `start_distributed_cluster`).
pub async fn start_distributed_cluster(config: DistributedConfig) -> Result<DistributedCluster, ServerError> {
    if config.nodes == 0 {
        return Err(ServerError::Config("a cluster needs at least one node".into()));
    }
    // Ports are chosen before any node listens, so every node can be told
    // its peers; in between, a connection going out of this host may take
    // one as its local port. Then the whole start is tried again with new
    // ports, a bounded number of times.
    let mut attempt = 1;
    loop {
        match start_on_free_ports(&config).await {
            Err(ServerError::Cluster(ClusterError::Listen { source, .. }))
                if source.kind() == std::io::ErrorKind::AddrInUse && attempt < START_ATTEMPTS =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// How many times [`start_distributed_cluster`] tries ports that turned out
/// to be taken.
const START_ATTEMPTS: u32 = 5;

async fn start_on_free_ports(config: &DistributedConfig) -> Result<DistributedCluster, ServerError> {
    // The nodes' own network (the seam's), probed for free ports; every
    // probe stays bound until all are chosen: no port twice.
    let rt = RtConfig::default();
    let mut probes = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..config.nodes {
        let no_port = |e: std::io::Error| ServerError::Config(format!("no free port: {e}"));
        let probe = rt.network.bind("127.0.0.1:0").await.map_err(no_port)?;
        let addr = probe.local_addr().map_err(no_port)?;
        ports.push(
            addr.rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .ok_or_else(|| no_port(std::io::ErrorKind::InvalidData.into()))?,
        );
        probes.push(probe);
    }
    drop(probes);
    let admin_token = config.http.then(AdminToken::generate).transpose().map_err(|e| ServerError::Config(e.to_string()))?;
    let name = |i: usize| format!("node{}", i + 1);
    let mut servers = Vec::new();
    for i in 0..config.nodes {
        let peers = (0..config.nodes)
            .filter(|j| *j != i)
            .map(|j| PeerSpec { id: j as u64 + 1, name: name(j), addr: format!("127.0.0.1:{}", ports[j]) })
            .collect();
        let server = Server::start(ServerConfig {
            traces: None,
            id: i as u64 + 1,
            name: name(i),
            listen: format!("127.0.0.1:{}", ports[i]),
            http: config.http.then(|| "127.0.0.1:0".to_owned()),
            admin: AdminConfig { token: admin_token.clone(), ..AdminConfig::default() },
            peers,
            data_dir: config.data_dir.as_ref().map(|d| d.join(name(i))),
            secret: config.secret.clone(),
            cluster_id: "foundation-local".into(),
            lan: config.lan,
            services: config.services.clone(),
            rt: rt.clone(),
            disk: None,
            frame_limit: None,
            disk_faults: Default::default(),
            tls: None,
            snapshots: Default::default(),
        })
        .await;
        match server {
            Ok(s) => servers.push(s),
            Err(e) => {
                for s in &servers {
                    s.shutdown().await;
                }
                return Err(e);
            }
        }
    }
    Ok(DistributedCluster { servers, admin_token })
}
