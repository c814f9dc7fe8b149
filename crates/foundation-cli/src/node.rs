//! `foundation node` (run one node) and `foundation status` (ask one).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use foundation::rt::RtConfig;
use foundation_cluster::admin::client;
use foundation_cluster::secret::{ClusterSecret, SecretSource};
use foundation_cluster::server::{PeerSpec, Server, ServerConfig, Service};
use foundation_testkit::cluster::faulty::{Faults, FaultyNetwork};

/// Options of `foundation node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// This node's name (unique in the cluster).
    #[arg(long)]
    name: String,
    /// This node's consensus id (unique, never reused for another node).
    #[arg(long)]
    id: u64,
    /// Where to listen for other nodes.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: String,
    /// An initial peer, `ID=NAME@HOST:PORT` (repeat for each). On first
    /// start, the node with the smallest id forms the group with its peers.
    #[arg(long = "peer", value_name = "ID=NAME@HOST:PORT")]
    peers: Vec<PeerSpec>,
    /// The cluster secret (else `FOUNDATION_SECRET`, else `--secret-file`).
    #[arg(long, env = "FOUNDATION_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The secret file, created (mode 600) if missing.
    #[arg(long, default_value_os_t = SecretSource::default_file())]
    secret_file: PathBuf,
    /// The data directory (durable log, snapshots, identity); without it,
    /// everything is kept in memory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The admin HTTP address (`GET /status`, `/kv/{key}`, `/metrics`, `/events`).
    #[arg(long)]
    http: Option<String>,
    /// Names the cluster; a data directory of another cluster is refused.
    #[arg(long, default_value = "foundation")]
    cluster_id: String,
    /// LAN consensus timers (election 25–50 ms) instead of the defaults (100–200 ms).
    #[arg(long)]
    lan: bool,
    /// The services to run, comma-separated (config, coordination and
    /// registry need consensus).
    #[arg(long, value_delimiter = ',', default_value = "consensus,coordination,config,registry,events,telemetry")]
    services: Vec<Service>,
    /// Run the test kit's chaos agent: a test client on the mesh may then
    /// partition, clog and slow this node's links, kill its processes and
    /// load it. For test clusters (`Backend::Processes`), never in
    /// production.
    #[arg(long)]
    chaos_agent: bool,
}

/// Runs a node until Ctrl-C or SIGTERM.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let secret: ClusterSecret =
        SecretSource { configured: args.secret.clone(), file: args.secret_file.clone() }.resolve().context("the cluster secret")?;
    let seed = getrandom::u64().context("seeding the node's RNG")?;
    // Under the chaos agent, the node's network judges its dials by a
    // fault table the test sets (node index = consensus id - 1).
    let faults = args.chaos_agent.then(|| {
        let faults = Arc::new(Faults::new(seed));
        faults.register(&args.listen, args.id.saturating_sub(1) as usize);
        for p in &args.peers {
            faults.register(&p.addr, p.id.saturating_sub(1) as usize);
        }
        faults
    });
    let mut config = ServerConfig {
        id: args.id,
        name: args.name.clone(),
        listen: args.listen.clone(),
        http: args.http.clone(),
        peers: args.peers.clone(),
        data_dir: args.data_dir.clone(),
        secret,
        cluster_id: args.cluster_id.clone(),
        lan: args.lan,
        services: args.services.iter().copied().collect(),
        // Each node's RNG (openraft's timers among its users) from the OS.
        rt: RtConfig { seed, ..RtConfig::default() },
        disk: None,
        frame_limit: None,
    };
    if let Some(f) = &faults {
        config.rt.network = Arc::new(FaultyNetwork::new(Some(args.id.saturating_sub(1) as usize), f.clone()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        // Handlers first: a signal during the start still stops cleanly.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let server = Server::start(config).await.with_context(|| format!("node {} could not start", args.name))?;
        let agent = if args.chaos_agent { foundation_testkit::agent::install(&server, faults).await } else { Ok(()) };
        if let Err(e) = agent {
            server.shutdown().await;
            anyhow::bail!("node {}: the chaos agent did not start: {e}", args.name);
        }
        println!(
            "node {} (id {}) listening on {}{}",
            args.name,
            args.id,
            server.cluster().addr(),
            server.http_addr().map(|h| format!(", admin http://{h}")).unwrap_or_default()
        );
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("node {}: stopping", args.name);
        server.shutdown().await;
        anyhow::Ok(())
    })
}

/// Options of `foundation status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A node's admin HTTP address.
    #[arg(long)]
    http: String,
    /// Print the JSON as the node returns it.
    #[arg(long)]
    json: bool,
}

/// Prints the cluster as one node sees it.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let (code, body) = runtime.block_on(client::request(&args.http, "GET", "/status", b"")).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(code == 200, "{} answered {code}: {body}", args.http);
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let s: serde_json::Value = serde_json::from_str(&body).context("the status is not JSON")?;
    let leader = s["leader"].as_str().unwrap_or("-");
    println!(
        "node {}  operational {}  quorum {}  leader {}  term {}",
        s["node"].as_str().unwrap_or("?"),
        s["operational"],
        s["quorum"],
        leader,
        s["term"]
    );
    println!("{:<20} {:<10} {:<8}", "member", "reachable", "role");
    let reachable: Vec<&str> = s["reachable"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default();
    for m in s["members"].as_array().into_iter().flatten().filter_map(|v| v.as_str()) {
        let role = if m == leader { "leader" } else { "follower" };
        println!("{:<20} {:<10} {:<8}", m, if reachable.contains(&m) { "yes" } else { "no" }, role);
    }
    Ok(())
}
