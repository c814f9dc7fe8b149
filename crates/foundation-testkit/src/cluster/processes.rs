//! The process backend: every node is a `foundation node --chaos-agent` OS
//! process with a data directory of its own (the log's file and redb, fsync), on loopback.
//!
//! - kill is SIGKILL, restart starts the binary again on the same data
//!   directory and address; pause and resume are SIGSTOP and SIGCONT;
//! - network faults are a fault table kept here and sent to every running
//!   node's agent (`chaos.faults`); each process judges the connections it
//!   dialed by it, so the one table governs both directions of every link
//!   (see [`super::faulty`]). A node paused or killed when the table
//!   changes gets it when it resumes or restarts.
//!
//! The binary is [`ClusterSpec::binary`], else `FOUNDATION_BIN`, else a
//! `foundation` next to (or one directory above) the running executable,
//! which is where cargo puts it for tests and for `foundation` itself.
//! Everything is removed at the end: the processes are stopped (SIGTERM,
//! then SIGKILL after 5 s) and the scratch directory is deleted.
//!
//! With [`ClusterSpec::tls`], every node runs with `--tls-cert --tls-key
//! --tls-ca` and the test's client with the same [`TlsFiles`]: mutual TLS,
//! the secret handshake inside it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use foundation::rt::RtConfig;
use foundation::rt::net::BoxFuture;
use foundation::{Node, NodeConfig};
use foundation_cluster::mesh::{Cluster, ClusterConfig};
use foundation_cluster::tls::{TlsConfig, TlsError};
use tokio::process::{Child, Command};

use super::faulty::Faults;
use super::{
    ClusterSpec, Control, Fault, FaultError, Run, RunError, Steps, TestCluster, body_within, connect_all, free_ports, node_name,
    scratch_dir, secret, secret_text,
};

/// The environment variable naming the `foundation` binary.
pub const BIN_ENV: &str = "FOUNDATION_BIN";

/// Where the `foundation` binary is.
pub fn foundation_binary(spec: &ClusterSpec) -> Result<PathBuf, String> {
    if let Some(b) = &spec.binary {
        return Ok(b.clone());
    }
    if let Some(b) = std::env::var_os(BIN_ENV) {
        return Ok(PathBuf::from(b));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("the executable has no directory")?;
    [dir.join("foundation"), dir.parent().map(|p| p.join("foundation")).unwrap_or_default()]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no foundation binary next to {}; build it (cargo build -p foundation-cli) or set {BIN_ENV}", exe.display()))
}

/// A node's TLS files (PEM): its certificate chain, its key, and the
/// cluster's CA. Every node and the client use the same ones, so the
/// certificate must name [`foundation_cluster::tls::SERVER_NAME_DEFAULT`]
/// (the cluster crate's `tests/tls/make.sh` makes such a set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The cluster's CA certificate(s).
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files in `dir`: `node.pem`, `node.key`, `ca.pem`.
    pub fn in_dir(dir: &Path) -> Self {
        Self { cert: dir.join("node.pem"), key: dir.join("node.key"), ca: dir.join("ca.pem") }
    }

    /// Loads them for a mesh member (the test's client).
    pub fn load(&self) -> Result<TlsConfig, TlsError> {
        TlsConfig::from_files(&self.cert, &self.key, &self.ca)
    }

    /// `foundation node`'s flags for them.
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, path) in [("--tls-cert", &self.cert), ("--tls-key", &self.key), ("--tls-ca", &self.ca)] {
            args.push(flag.to_owned());
            args.push(path.display().to_string());
        }
        args
    }
}

struct Proc {
    args: Vec<String>,
    child: Option<Child>,
}

struct ProcControl {
    binary: PathBuf,
    scratch: PathBuf,
    names: Vec<String>,
    procs: tokio::sync::Mutex<Vec<Proc>>,
    faults: Faults,
    client: Cluster,
    addrs: Vec<String>,
    /// The nodes' admin API addresses (with `ClusterSpec::http`).
    http: Vec<String>,
}

fn signal(child: &Child, sig: libc::c_int) -> Result<(), FaultError> {
    let pid = child.id().ok_or_else(|| FaultError::Backend("the process has exited".into()))?;
    // SAFETY: kill(2) on a pid we own (our child, not yet reaped).
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc == 0 { Ok(()) } else { Err(FaultError::Backend(std::io::Error::last_os_error().to_string())) }
}

/// Whether the process is stopped (`T` in `/proc/PID/stat`).
fn stopped(pid: u32) -> Option<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    Some(state == "T")
}

impl ProcControl {
    fn spawn(&self, i: usize, args: &[String]) -> Result<Child, String> {
        let log = std::fs::File::create(self.scratch.join(format!("{}.log", self.names[i]))).map_err(|e| e.to_string())?;
        Command::new(&self.binary)
            .args(args)
            .env("FOUNDATION_SECRET", secret_text())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.binary.display()))
    }

    /// Sends the fault table to the nodes that run and are not paused.
    async fn push(&self, only: Option<usize>) {
        let table = self.faults.snapshot();
        let paused: Vec<usize> = table.paused.clone();
        let procs = self.procs.lock().await;
        for (i, p) in procs.iter().enumerate() {
            if p.child.is_none() || paused.contains(&i) || only.is_some_and(|o| o != i) {
                continue;
            }
            let r: Result<(), _> = self.client.rpc(&self.names[i], "chaos.faults", table.clone(), Duration::from_secs(2)).await;
            if let Err(e) = r {
                tracing::warn!(node = %self.names[i], error = %e, "fault table not delivered");
            }
        }
    }
}

impl Control for ProcControl {
    fn apply<'a>(&'a self, fault: &'a Fault) -> BoxFuture<'a, Result<(), FaultError>> {
        Box::pin(async move {
            if self.faults.apply(self.names.len(), fault) {
                self.push(None).await;
                return Ok(());
            }
            match fault {
                Fault::Kill { node } => {
                    let child = self.procs.lock().await[*node].child.take();
                    if let Some(mut c) = child {
                        c.start_kill().map_err(|e| FaultError::Backend(e.to_string()))?;
                        let _ = c.wait().await;
                    }
                    Ok(())
                }
                Fault::Restart { node } => {
                    let args = self.procs.lock().await[*node].args.clone();
                    let child = self.spawn(*node, &args).map_err(FaultError::Backend)?;
                    self.procs.lock().await[*node].child = Some(child);
                    connect_all(&self.client, &self.addrs[*node..=*node]).await.map_err(FaultError::Backend)?;
                    self.push(Some(*node)).await;
                    Ok(())
                }
                Fault::Pause { node } | Fault::Resume { node } => {
                    let pause = matches!(fault, Fault::Pause { .. });
                    let pid = {
                        let procs = self.procs.lock().await;
                        let child = procs[*node].child.as_ref().ok_or(FaultError::State { node: *node, why: "killed" })?;
                        signal(child, if pause { libc::SIGSTOP } else { libc::SIGCONT })?;
                        child.id()
                    };
                    // The signal is asynchronous: wait until the kernel shows
                    // the process stopped (or running again).
                    if let Some(pid) = pid {
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                        while stopped(pid) != Some(pause) && tokio::time::Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    self.faults.set_paused(*node, pause);
                    if !pause {
                        self.push(Some(*node)).await;
                    }
                    Ok(())
                }
                Fault::WipeDisk { node } => {
                    let dir = self.scratch.join(node_name(*node));
                    super::wipe_dir(&dir).map_err(|e| FaultError::Backend(format!("wiping {}: {e}", dir.display())))
                }
                Fault::TruncateLog { .. } => Err(FaultError::Unsupported {
                    fault: "a truncated log",
                    backend: super::Backend::Processes,
                    why: "this backend does not cut a real log file; use the simulated backend",
                }),
                Fault::ClockSkew { .. } => Err(FaultError::Backend("a clock skew goes through the node's agent".into())),
                Fault::DiskError { .. } | Fault::DiskLatency { .. } => unreachable!("refused by TestCluster::apply"),
                _ => unreachable!("network faults are applied above"),
            }
        })
    }

    fn addr(&self, i: usize) -> Option<String> {
        self.addrs.get(i).cloned()
    }

    fn admin(&self, i: usize) -> Option<(String, PathBuf)> {
        let addr = self.http.get(i)?.clone();
        Some((addr, self.scratch.join(&self.names[i]).join(foundation_cluster::admin::TOKEN_FILE)))
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut procs = self.procs.lock().await;
            for p in procs.iter_mut() {
                if let Some(c) = &p.child {
                    let _ = signal(c, libc::SIGCONT);
                    let _ = signal(c, libc::SIGTERM);
                }
            }
            for mut c in procs.iter_mut().filter_map(|p| p.child.take()) {
                if tokio::time::timeout(Duration::from_secs(5), c.wait()).await.is_err() {
                    let _ = c.start_kill();
                    let _ = c.wait().await;
                }
            }
            let _ = std::fs::remove_dir_all(&self.scratch);
        })
    }
}

fn node_args(spec: &ClusterSpec, i: usize, addrs: &[String], http: &[String], scratch: &Path) -> Vec<String> {
    let services: Vec<&str> = spec.services.iter().map(|s| s.name()).collect();
    let mut args = vec![
        "node".to_owned(),
        "--name".into(),
        node_name(i),
        "--id".into(),
        (i + 1).to_string(),
        "--listen".into(),
        addrs[i].clone(),
        "--data-dir".into(),
        scratch.join(node_name(i)).display().to_string(),
        "--cluster-id".into(),
        "foundation-processes".into(),
        "--services".into(),
        services.join(","),
        "--chaos-agent".into(),
    ];
    if let Some(tls) = &spec.tls {
        args.extend(tls.args());
    }
    if let Some(addr) = http.get(i) {
        args.extend(["--http".to_owned(), addr.clone()]);
    }
    if let Some(url) = &spec.otlp_endpoint {
        args.extend(["--otlp-endpoint".to_owned(), url.clone()]);
    }
    for (j, addr) in addrs.iter().enumerate().filter(|(j, _)| *j != i) {
        args.push("--peer".into());
        args.push(format!("{}={}@{addr}", j + 1, node_name(j)));
    }
    args
}

pub(super) fn run<T, F, Fut>(spec: &ClusterSpec, body: F) -> Result<Run<T>, RunError>
where
    T: Send + 'static,
    F: FnOnce(TestCluster) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let wall = std::time::Instant::now();
    let binary = foundation_binary(spec).map_err(RunError::Start)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| RunError::Start(e.to_string()))?;
    let spec = spec.clone();
    runtime.block_on(async move {
        let scratch = scratch_dir()?;
        let addrs: Vec<String> = free_ports(spec.nodes)?.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let http: Vec<String> =
            if spec.http { free_ports(spec.nodes)?.iter().map(|p| format!("127.0.0.1:{p}")).collect() } else { Vec::new() };
        let node = Node::with_config(NodeConfig { name: "client".into(), rt: RtConfig::default(), ..NodeConfig::default() })
            .map_err(|e| RunError::Start(e.to_string()))?;
        let mut config = ClusterConfig::new("client", "127.0.0.1:0", secret());
        config.tls = spec.tls.as_ref().map(TlsFiles::load).transpose().map_err(|e| RunError::Start(format!("the client's TLS: {e}")))?;
        config.traces = super::traces(&spec)?;
        let client = Cluster::start(node, config).await.map_err(|e| RunError::Start(e.to_string()))?;
        let control = ProcControl {
            binary,
            scratch: scratch.clone(),
            names: (0..spec.nodes).map(node_name).collect(),
            procs: tokio::sync::Mutex::new(Vec::new()),
            faults: Faults::new(spec.seed),
            client: client.clone(),
            addrs: addrs.clone(),
            http: http.clone(),
        };
        for i in 0..spec.nodes {
            let args = node_args(&spec, i, &addrs, &http, &scratch);
            match control.spawn(i, &args) {
                Ok(child) => control.procs.lock().await.push(Proc { args, child: Some(child) }),
                Err(e) => {
                    control.stop().await;
                    client.shutdown();
                    return Err(RunError::Start(e));
                }
            }
        }
        let cluster = TestCluster::new(spec, client.clone(), Box::new(control), Steps::default());
        if let Err(e) = connect_all(&client, &addrs).await {
            cluster.stop().await;
            return Err(RunError::Start(e));
        }
        let result = body_within(&cluster, body(cluster.clone())).await;
        let cluster_time = cluster.elapsed();
        cluster.stop().await;
        if let Some(traces) = cluster.client().traces() {
            traces.shutdown().await;
        }
        result.map(|value| Run { value, cluster_time, wall_time: wall.elapsed() })
    })
}
