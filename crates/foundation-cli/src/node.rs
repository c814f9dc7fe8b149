//! `foundation node` (run one node) and `foundation status` (ask one).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use foundation::rt::RtConfig;
use foundation_cluster::admin::{AdminConfig, AdminToken, TOKEN_FILE, TokenError, client};
use foundation_cluster::secret::{ClusterSecret, SECRET_ENV, SecretError, SecretSource};
use foundation_cluster::server::{PeerSpec, Server, ServerConfig, ServerError, Service, SnapshotSettings};
use foundation_cluster::traces::Tracer;
use foundation_cluster::{ClusterError, TlsConfig, TlsError};
use foundation_testkit::cluster::faulty::{Faults, FaultyNetwork};

use crate::fail::usage;

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
    /// The admin HTTP address (`GET /status`, `/kv/{key}`, `/metrics`,
    /// `/events`). Every request needs the admin token (see
    /// --admin-token-file).
    #[arg(long)]
    http: Option<String>,
    /// The admin API's bearer token file (at least 32 bytes; group and
    /// others must not read it). Without it, the node creates (once) and
    /// uses `admin.token` in --data-dir.
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<PathBuf>,
    /// Serve `GET /status` and `GET /metrics` without the token (for scrapers).
    #[arg(long)]
    http_open_reads: bool,
    /// A `Host` name the admin API answers to besides its bound address
    /// (repeat for each); any other `Host` gets 421.
    #[arg(long = "http-host", value_name = "NAME")]
    http_hosts: Vec<String>,
    /// Names the cluster; a data directory of another cluster is refused.
    #[arg(long, default_value = "foundation")]
    cluster_id: String,
    /// LAN consensus timers (election 25–50 ms) instead of the defaults (100–200 ms).
    #[arg(long)]
    lan: bool,
    /// Bytes of applied log between snapshots [default: 64 MiB].
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_log_bytes: Option<u64>,
    /// Log entries kept behind a snapshot, for followers a little behind [default: 1000].
    #[arg(long, value_name = "N")]
    logs_kept: Option<u64>,
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
    /// Mutual TLS between nodes: this node's certificate chain (PEM). With
    /// --tls-key and --tls-ca (all three or none); the secret handshake
    /// runs inside TLS.
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// Mutual TLS: this node's private key (PEM).
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: the cluster's CA certificate(s) (PEM); peers must present
    /// a certificate it signed.
    #[arg(long, value_name = "PATH")]
    tls_ca: Option<PathBuf>,
    /// Export spans (RPCs, remote sends, consensus writes, API requests) to
    /// this OpenTelemetry collector over OTLP/HTTP: http://HOST:PORT (4318
    /// is the collector's usual port). Headers it needs, credentials
    /// included, go in OTEL_EXPORTER_OTLP_HEADERS, never in the URL.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

/// Whether `--secret` itself is on the command line (clap also fills the
/// field from `FOUNDATION_SECRET`).
fn secret_in_argv() -> bool {
    std::env::args_os().any(|a| a == "--secret" || a.to_str().is_some_and(|a| a.starts_with("--secret=")))
}

/// The TLS settings from `--tls-cert`, `--tls-key` and `--tls-ca`: all
/// three or none (a usage error names the missing ones); a file that does
/// not load is a usage error naming its flag and path.
fn tls(args: &NodeArgs) -> anyhow::Result<Option<TlsConfig>> {
    let flags = [("--tls-cert", &args.tls_cert), ("--tls-key", &args.tls_key), ("--tls-ca", &args.tls_ca)];
    let missing: Vec<&str> = flags.iter().filter(|(_, p)| p.is_none()).map(|(f, _)| *f).collect();
    let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) else {
        if missing.len() == flags.len() {
            return Ok(None);
        }
        return Err(usage(format!(
            "TLS needs --tls-cert, --tls-key and --tls-ca together; give {} too, or none of them",
            missing.join(" and ")
        )));
    };
    TlsConfig::from_files(cert, key, ca).map(Some).map_err(|e| {
        let flag = match &e {
            TlsError::File { path, .. } => flags.iter().find(|(_, p)| p.as_deref() == Some(path.as_path())).map_or("--tls-*", |(f, _)| f),
            _ => "--tls-cert/--tls-key/--tls-ca",
        };
        usage(format!("{flag}: {e}; give PEM files: the node's certificate chain, its key, and the cluster's CA"))
    })
}

/// The cluster secret from `--secret` (or `FOUNDATION_SECRET`, which clap
/// reads into it), else the secret file. Every way it can be wrong is a
/// usage error that names where the secret came from.
fn secret(args: &NodeArgs) -> anyhow::Result<ClusterSecret> {
    let from = |_: &str| if secret_in_argv() { "--secret" } else { SECRET_ENV };
    let resolved = match &args.secret {
        Some(text) => ClusterSecret::new(text, from(text)),
        None => SecretSource { configured: None, file: args.secret_file.clone() }.resolve(),
    };
    resolved.map_err(|e| match e {
        SecretError::File { path, source } => usage(format!(
            "--secret-file {}: {source}; give a --secret-file this user can read (it is created, mode 600, if missing), or pass --secret",
            path.display()
        )),
        SecretError::Random(_) => anyhow::Error::new(e),
        e => usage(e.to_string()),
    })
}

/// Whether `dir` is, or can become, a directory this process writes in:
/// an existing directory it can list, or one whose nearest existing
/// ancestor takes a new entry (probed with an empty directory, removed at
/// once). Nothing is left behind, so a refused start writes nothing.
fn usable_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return std::fs::read_dir(dir).map(|_| ());
    }
    let ancestor = dir.ancestors().skip(1).find(|a| a.as_os_str().is_empty() || a.exists()).unwrap_or(Path::new("."));
    let ancestor = if ancestor.as_os_str().is_empty() { Path::new(".") } else { ancestor };
    let probe = ancestor.join(format!(".foundation-probe-{}", std::process::id()));
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)
}

/// What to do about a start-up failure, appended to its message.
fn start_fix(e: &ServerError) -> &'static str {
    match e {
        ServerError::Cluster(ClusterError::Listen { .. }) => "; choose a free --listen address",
        ServerError::Http { .. } => "; choose a free --http address",
        ServerError::DataDir { reason, .. } if reason.contains("belongs to node") => {
            "; start it with that --name and --id, or give this node another --data-dir"
        }
        ServerError::DataDir { reason, .. } if reason.contains("use another") => "",
        ServerError::DataDir { .. } => "; give this node's own --data-dir, or a new empty directory",
        ServerError::Consensus(_) => "; the node's state in --data-dir could not be opened: restore the directory, or check its disk",
        ServerError::Secret { .. } => "",
        ServerError::Config(_) => "; see `foundation node --help`",
        ServerError::Cluster(_) => "; check the --peer addresses and that those nodes run",
    }
}

/// Whether `addr` (`HOST:PORT`) is a loopback address.
fn loopback(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => addr.rsplit_once(':').is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
    }
}

/// The chaos agent lets any mesh member partition and kill this node: only
/// on loopback (the test kit's processes backend), with no admin API off it.
fn check_chaos_agent(args: &NodeArgs) -> anyhow::Result<()> {
    if !args.chaos_agent {
        return Ok(());
    }
    if !loopback(&args.listen) {
        return Err(usage(format!("--chaos-agent needs a loopback --listen, not {}; it is for test clusters on this host", args.listen)));
    }
    match &args.http {
        Some(http) if !loopback(http) => Err(usage(format!("--chaos-agent cannot be combined with a non-loopback --http {http}"))),
        _ => Ok(()),
    }
}

/// The admin API's settings: a token from --admin-token-file, else the data
/// directory's; with --http and neither, a usage error (never an open API).
fn admin(args: &NodeArgs) -> anyhow::Result<AdminConfig> {
    let token = match &args.admin_token_file {
        Some(path) => Some(AdminToken::from_file(path).map_err(|e| usage(e.to_string()))?),
        None if args.http.is_some() && args.data_dir.is_none() => {
            return Err(usage(
                "--http needs an admin token: give --admin-token-file PATH, or --data-dir DIR to keep one in DIR/admin.token",
            ));
        }
        None => None,
    };
    Ok(AdminConfig { token_in_data_dir: token.is_none(), token, open_reads: args.http_open_reads, hosts: args.http_hosts.clone() })
}

/// Runs a node until Ctrl-C or SIGTERM.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    check_chaos_agent(&args)?;
    let secret = secret(&args)?;
    let tls = tls(&args)?;
    let admin = admin(&args)?;
    if let Some(dir) = &args.data_dir {
        usable_dir(dir)
            .map_err(|e| usage(format!("--data-dir {}: {e}; give a directory this user can create and write", dir.display())))?;
    }
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
        traces: None,
        id: args.id,
        name: args.name.clone(),
        listen: args.listen.clone(),
        http: args.http.clone(),
        admin,
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
        disk_faults: Default::default(),
        tls,
        snapshots: SnapshotSettings { log_bytes: args.snapshot_log_bytes, logs_kept: args.logs_kept },
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
        let traces = match &args.otlp_endpoint {
            Some(url) => Some(Tracer::otlp(url).map_err(|e| usage(format!("--otlp-endpoint: {e}")))?),
            None => None,
        };
        config.traces = traces.clone();
        let server = match Server::start(config).await {
            Ok(server) => server,
            Err(e) => anyhow::bail!("node {} could not start: {e}{}", args.name, start_fix(&e)),
        };
        let agent = if args.chaos_agent { foundation_testkit::agent::install(&server, faults).await } else { Ok(()) };
        if let Err(e) = agent {
            server.shutdown().await;
            anyhow::bail!("node {}: the chaos agent did not start: {e}", args.name);
        }
        if args.secret.is_some() && secret_in_argv() {
            tracing::warn!(
                node = %args.name,
                "--secret on the command line is visible to every user of this host (ps, /proc); pass it in FOUNDATION_SECRET or with --secret-file instead"
            );
        }
        println!(
            "node {} (id {}) listening on {}{}",
            args.name,
            args.id,
            server.cluster().addr(),
            server.http_addr().map(|h| format!(", admin http://{h}")).unwrap_or_default()
        );
        if let Some(traces) = &traces {
            tracing::info!(node = %args.name, endpoint = traces.endpoint(), "spans exported over OTLP/HTTP");
        }
        if let Some(file) = server.admin_token_file() {
            eprintln!("node {}: the admin token is in {}", args.name, file.display());
        }
        tokio::select! {
            biased;
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!(node = %args.name, "stopping on a signal");
        server.shutdown().await;
        if let Some(traces) = traces {
            // The spans of the last moments go out before the process ends.
            traces.shutdown().await;
        }
        anyhow::Ok(())
    })
}

/// Options of `foundation status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A node's admin HTTP address, `HOST:PORT`.
    #[arg(long, value_parser = host_port)]
    http: String,
    /// The node's admin token file (its --admin-token-file).
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<PathBuf>,
    /// The node's data directory, to read its `admin.token` from (when no
    /// --admin-token-file is given).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print the JSON as the node returns it.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the node to answer and report an operational
    /// cluster (0: ask once). A node that answers but is not operational
    /// by then is printed as it is.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    wait: u64,
    /// Ask again every SECS seconds and print the table each time (on a
    /// terminal, in place), until interrupted; a node that does not
    /// answer is one line, and the next round asks again.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600), conflicts_with = "json")]
    watch: Option<u64>,
}

/// `HOST:PORT` with a numeric port.
fn host_port(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?} is not HOST:PORT; write it as e.g. 127.0.0.1:8001");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// How often `status` asks again while it waits.
const STATUS_RETRY: Duration = Duration::from_millis(200);
/// The longest one request may take.
const STATUS_REQUEST_MAX: Duration = Duration::from_secs(2);

/// Asks `http` for its status until it answers and is operational, or
/// `wait` has passed: the last answer (code, body), or why none came.
/// A token file that does not exist yet (a node starting on a fresh data
/// directory writes it) is waited for like a node that does not answer yet.
async fn poll_status(http: &str, token_file: Option<&Path>, wait: Duration) -> anyhow::Result<Result<(u16, String), String>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut last: Result<(u16, String), String> = Err("no answer".into());
    let mut token = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let (Some(file), None) = (token_file, &token) {
            token = match AdminToken::from_file(file) {
                Ok(t) => Some(t),
                Err(TokenError::File { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(usage(e.to_string())),
            };
        }
        let attempt = match (token_file, &token) {
            (Some(file), None) => Ok(Err(format!("no token file {} yet", file.display()))),
            _ => {
                tokio::time::timeout(
                    left.clamp(STATUS_RETRY, STATUS_REQUEST_MAX),
                    client::request(http, token.as_ref(), "GET", "/status", b""),
                )
                .await
            }
        };
        let answer = attempt.unwrap_or_else(|_| Err(format!("{http} did not answer in time")));
        let operational =
            matches!(&answer, Ok((200, body)) if serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["operational"] == true));
        // A node that answered is better news than one that then did not.
        if answer.is_ok() || last.is_err() {
            last = answer;
        }
        if operational || tokio::time::Instant::now() >= deadline {
            return Ok(last);
        }
        tokio::time::sleep(STATUS_RETRY).await;
    }
}

/// Prints the cluster as one node sees it.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    // The token from --admin-token-file, else from --data-dir's admin.token.
    let token_file = args.admin_token_file.clone().or_else(|| args.data_dir.as_ref().map(|d| d.join(TOKEN_FILE)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    if let Some(every) = args.watch {
        return runtime.block_on(watch(&args.http, token_file.as_deref(), Duration::from_secs(every)));
    }
    let wait = Duration::from_secs(args.wait);
    let (code, body) = runtime.block_on(poll_status(&args.http, token_file.as_deref(), wait))?.map_err(|e| {
        anyhow::anyhow!(
            "no answer from {} within {} s ({e}); check that a node runs with --http {}, or give it longer with --wait",
            args.http,
            args.wait,
            args.http
        )
    })?;
    if code != 200 {
        let said =
            serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["error"].as_str().map(str::to_owned)).unwrap_or(body);
        let fix = if code == 401 {
            "give the node's --admin-token-file, or its --data-dir (for DATA_DIR/admin.token)"
        } else {
            "check that --http is a node's admin address"
        };
        anyhow::bail!("{} answered {code}: {said}; {fix}", args.http);
    }
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let s: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("{} answered something that is not JSON; check that --http is a node's admin address", args.http))?;
    print_table(&s);
    Ok(())
}

/// `status --watch`: the table every `every`, until interrupted.
async fn watch(http: &str, token_file: Option<&Path>, every: Duration) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    loop {
        let answer = poll_status(http, token_file, Duration::ZERO).await?;
        if terminal {
            // Home and clear: the table is redrawn in place.
            print!("\x1b[H\x1b[2J");
        }
        let at = time_of_day();
        match answer {
            Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(s) => {
                    println!("{at}");
                    print_table(&s);
                }
                Err(_) => println!("{at}  {http} answered something that is not JSON"),
            },
            Ok((code, body)) => println!("{at}  {http} answered {code}: {}", body.trim()),
            Err(e) => println!("{at}  no answer from {http}: {e}"),
        }
        if !terminal {
            println!();
        }
        std::io::stdout().flush().context("writing to stdout")?;
        tokio::time::sleep(every).await;
    }
}

/// The time of day (UTC) as `HH:MM:SS`, without a date library.
#[allow(clippy::disallowed_methods)] // a CLI's wall clock, not a node's: nothing here is simulated
fn time_of_day() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02} UTC", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// The status table: the node's line, then each member's.
fn print_table(s: &serde_json::Value) {
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
}
