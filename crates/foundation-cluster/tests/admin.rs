//! The admin API's doors, over real TCP and HTTP: the bearer token (401),
//! open reads, the `Host` check (421), bounded metric labels, the header
//! read timeout, idle connections, internal key prefixes (403), and the
//! token file.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use foundation::rt::{BoxStream, Network, TokioNetwork};
use foundation_cluster::admin::{AdminConfig, AdminToken, HEADER_READ_TIMEOUT, TOKEN_FILE, TokenError, client};
use foundation_cluster::server::{Server, ServerConfig, ServerError};
use foundation_testutil::wait::assert_eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);

fn token() -> AdminToken {
    AdminToken::new("the-admin-token-of-these-tests-0123456789", "test").expect("a long token")
}

fn config(admin: AdminConfig, data_dir: Option<PathBuf>) -> ServerConfig {
    common::one_node(admin, data_dir)
}

/// A one-node cluster serving the API with [`token`] and `admin`'s other
/// settings; waits until it is operational.
async fn node(admin: AdminConfig) -> (Server, String) {
    let server = Server::start(config(AdminConfig { token: Some(token()), ..admin }, None)).await.expect("starts");
    let addr = server.http_addr().expect("serves").to_owned();
    let c = server.coordination().expect("runs").clone();
    assert_eventually("the node is operational", || c.status().operational, T).await;
    (server, addr)
}

/// `method path` with the given extra header lines; the status code, the
/// response head and body.
async fn send(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let head = format!("{method} {path} HTTP/1.1\r\n{headers}Connection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    let mut s = TokioNetwork.connect(addr).await.expect("connects");
    s.write_all(head.as_bytes()).await.expect("writes");
    s.write_all(body).await.expect("writes");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("reads");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

fn host(addr: &str) -> String {
    format!("Host: {addr}\r\n")
}

fn bearer(t: &AdminToken) -> String {
    format!("{}\r\n", format_args!("Authorization: {}", t.bearer()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_the_token() {
    let (server, addr) = node(AdminConfig::default()).await;
    let wrong = AdminToken::new("not-the-admin-token-of-these-tests-987654", "test").expect("long");
    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("GET", "/events"),
        ("PUT", "/kv/k"),
        ("GET", "/kv/k"),
        ("DELETE", "/kv/k"),
        ("GET", "/nope"),
    ] {
        for auth in [String::new(), bearer(&wrong), "Authorization: Basic dXNlcjpwYXNz\r\n".into()] {
            let (code, text) = send(&addr, method, path, &format!("{}{auth}", host(&addr)), b"v").await;
            assert_eq!(code, 401, "{method} {path} with {auth:?}: {text}");
            assert!(text.to_ascii_lowercase().contains("www-authenticate: bearer"), "{text}");
            assert!(text.contains(r#""kind":"unauthorized""#) && text.contains(r#""error":"#), "{text}");
        }
    }
    let (code, text) = send(&addr, "GET", "/status", &format!("{}{}", host(&addr), bearer(&token())), b"").await;
    assert_eq!(code, 200, "{text}");
    let (code, text) = send(&addr, "PUT", "/kv/k", &format!("{}{}", host(&addr), bearer(&token())), b"v").await;
    assert_eq!(code, 200, "{text}");
    // The scheme is case-insensitive; the token is not.
    let lower = bearer(&token()).replacen("Bearer", "bearer", 1);
    assert_eq!(send(&addr, "GET", "/status", &format!("{}{lower}", host(&addr)), b"").await.0, 200);
    let upper = format!("Authorization: Bearer {}\r\n", "THE-ADMIN-TOKEN-OF-THESE-TESTS-0123456789");
    assert_eq!(send(&addr, "GET", "/status", &format!("{}{upper}", host(&addr)), b"").await.0, 401);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reads_open_status_and_metrics_only() {
    let (server, addr) = node(AdminConfig { open_reads: true, ..AdminConfig::default() }).await;
    for (method, path, want) in [
        ("GET", "/status", 200),
        ("GET", "/metrics", 200),
        ("GET", "/events", 401),
        ("GET", "/kv/k", 401),
        ("PUT", "/kv/k", 401),
        ("DELETE", "/kv/k", 401),
        ("POST", "/status", 401),
        ("GET", "/status/", 401),
    ] {
        let (code, text) = send(&addr, method, path, &host(&addr), b"").await;
        assert_eq!(code, want, "{method} {path}: {text}");
    }
    server.shutdown().await;
    // Without the flag, neither is open.
    let (server, addr) = node(AdminConfig::default()).await;
    for path in ["/status", "/metrics"] {
        assert_eq!(send(&addr, "GET", path, &host(&addr), b"").await.0, 401, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_gets_421() {
    let (server, addr) = node(AdminConfig { hosts: vec!["admin.example".into()], ..AdminConfig::default() }).await;
    let port = addr.rsplit_once(':').expect("port").1;
    let auth = bearer(&token());
    for (host_line, want) in [
        (format!("Host: evil.example:{port}\r\n"), 421),
        ("Host: evil.example\r\n".to_owned(), 421),
        (format!("Host: 127.0.0.2:{port}\r\n"), 421),
        (String::new(), 421),
        (host(&addr), 200),
        (format!("Host: localhost:{port}\r\n"), 200),
        (format!("Host: ADMIN.example:{port}\r\n"), 200),
        ("Host: admin.example\r\n".to_owned(), 200),
    ] {
        let (code, text) = send(&addr, "GET", "/status", &format!("{host_line}{auth}"), b"").await;
        assert_eq!(code, want, "{host_line:?}: {text}");
        if want == 421 {
            assert!(text.contains(r#""kind":"misdirected""#), "{text}");
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_unknown_paths_leave_metrics_small() {
    const PATHS: usize = 10_000;
    const METRICS_BYTES_MAX: usize = 64 * 1024;
    const CLIENTS: usize = 8;
    let (server, addr) = node(AdminConfig::default()).await;
    let headers = format!("{}{}", host(&addr), bearer(&token()));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (addr, headers) = (addr.clone(), headers.clone());
        clients.push(foundation::rt::spawn(async move {
            for i in (c..PATHS).step_by(CLIENTS) {
                // Unique paths, and odd methods besides.
                let method = if i % 10 == 0 { format!("M{i}") } else { "GET".into() };
                let (code, text) = send(&addr, &method, &format!("/unknown-{i}/x{i}"), &headers, b"").await;
                assert!(code == 404 || code == 405, "{method} /unknown-{i}: {text}");
            }
        }));
    }
    for c in clients {
        c.await.expect("a client");
    }
    let (code, metrics) = client::request(&addr, Some(&token()), "GET", "/metrics", b"").await.expect("metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains(r#"route="unmatched""#) && metrics.contains(r#"method="other""#), "{metrics}");
    assert!(!metrics.contains("unknown-"), "a path became a label");
    eprintln!("/metrics after {PATHS} unknown paths: {} bytes", metrics.len());
    assert!(metrics.len() < METRICS_BYTES_MAX, "/metrics is {} bytes", metrics.len());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_partial_headers_is_closed() {
    let (server, addr) = node(AdminConfig::default()).await;
    let mut s = TokioNetwork.connect(&addr).await.expect("connects");
    s.write_all(format!("GET /status HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes()).await.expect("writes");
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    foundation::rt::spawn(async move {
        let mut buf = [0u8; 256];
        // EOF or a reset: the server closed it.
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        flag.store(true, Ordering::SeqCst);
    });
    // Generous: the bound is HEADER_READ_TIMEOUT; a busy machine may add to it.
    assert_eventually("the server closes a connection stuck in its headers", || closed.load(Ordering::SeqCst), HEADER_READ_TIMEOUT * 6)
        .await;
    server.shutdown().await;
}

/// Raises this process's soft open-file limit to at least `want` (up to
/// the hard limit); returns the soft limit in force.
fn raise_open_files(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read the one struct given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_stay_bounded_and_the_api_answers() {
    const IDLE: usize = 5_000;
    /// The node's growth in resident memory while they are held (this test
    /// process holds both ends; the client ends are sockets without buffers).
    const RSS_GROWTH_BYTES_MAX: i64 = 64 << 20;
    let soft = raise_open_files(IDLE as u64 + 2_048);
    assert!(soft >= IDLE as u64 + 2_048, "this test needs {} open files; the hard limit allows {soft}", IDLE + 2_048);
    let (server, addr) = node(AdminConfig::default()).await;
    let before = foundation_testutil::memory::rss_bytes().expect("Linux");
    let mut idle: Vec<BoxStream> = Vec::with_capacity(IDLE);
    let mut peak = before;
    for i in 0..IDLE {
        idle.push(TokioNetwork.connect(&addr).await.expect("connects"));
        if i % 500 == 0 {
            peak = peak.max(foundation_testutil::memory::rss_bytes().unwrap_or(0));
        }
    }
    // While all 5,000 are held open, the API answers (within the header
    // timeout, when the ones accepted have used every connection slot).
    let answered = Arc::new(AtomicBool::new(false));
    let (flag, a) = (answered.clone(), addr.clone());
    let asking = foundation::rt::spawn(async move {
        loop {
            let rss = foundation_testutil::memory::rss_bytes().unwrap_or(0);
            let r = tokio::time::timeout(Duration::from_secs(2), client::request(&a, Some(&token()), "GET", "/status", b"")).await;
            if matches!(r, Ok(Ok((200, _)))) {
                flag.store(true, Ordering::SeqCst);
                return rss;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eventually("the API answers with 5,000 idle connections open", || answered.load(Ordering::SeqCst), HEADER_READ_TIMEOUT * 6)
        .await;
    peak = peak.max(asking.await.expect("asked"));
    let growth = peak as i64 - before as i64;
    eprintln!("RSS with {IDLE} idle connections: {before} -> {peak} bytes (+{growth})");
    assert!(growth < RSS_GROWTH_BYTES_MAX, "RSS grew by {growth} bytes");
    // None is held for good: past the connection limit they are closed at
    // once, the others within the header read timeout.
    let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = closed.clone();
    foundation::rt::spawn(async move {
        for mut s in idle {
            let mut buf = [0u8; 64];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert_eventually("the server closes every idle connection", || closed.load(Ordering::SeqCst) == IDLE, HEADER_READ_TIMEOUT * 6).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_prefixes_are_forbidden_on_raw_kv() {
    let (server, addr) = node(AdminConfig::default()).await;
    let headers = format!("{}{}", host(&addr), bearer(&token()));
    for key in ["registry%2Fx", "config%2Fy", "registry%2F", "config%2Fa%2Fb"] {
        for method in ["PUT", "GET", "DELETE"] {
            let (code, text) = send(&addr, method, &format!("/kv/{key}"), &headers, b"1").await;
            assert_eq!(code, 403, "{method} {key}: {text}");
            assert!(text.contains(r#""kind":"forbidden_prefix""#), "{text}");
        }
    }
    for key in ["registryx", "my%2Fconfig%2Fy"] {
        let (code, text) = send(&addr, "PUT", &format!("/kv/{key}"), &headers, b"1").await;
        assert_eq!(code, 200, "{key}: {text}");
    }
    server.shutdown().await;
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foundation-admin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_token_is_private_created_once_and_required() {
    let dir = scratch("token");
    let data = dir.join("n");
    let admin = AdminConfig { token_in_data_dir: true, ..AdminConfig::default() };
    let server = Server::start(config(admin.clone(), Some(data.clone()))).await.expect("starts");
    let file = data.join(TOKEN_FILE);
    assert_eq!(server.admin_token_file(), Some(file.as_path()));
    let mode = std::fs::metadata(&file).expect("created").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&file).expect("reads");
    assert!(text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()), "256 bits in hex: {} chars", text.len());
    let addr = server.http_addr().expect("serves").to_owned();
    let t = AdminToken::from_file(&file).expect("a valid token");
    assert_eq!(client::request(&addr, Some(&t), "GET", "/events", b"").await.expect("answers").0, 200);
    server.shutdown().await;
    // Reused on the next start.
    let server = Server::start(config(admin, Some(data.clone()))).await.expect("restarts");
    assert_eq!(std::fs::read_to_string(&file).expect("reads"), text);
    server.shutdown().await;
    // A token file others can read, or a short one, is refused.
    let loose = dir.join("loose");
    std::fs::write(&loose, "x".repeat(40)).expect("writes");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(AdminToken::from_file(&loose), Err(TokenError::Exposed { mode: 0o644, .. })));
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&loose, "short").expect("writes");
    assert!(matches!(AdminToken::from_file(&loose), Err(TokenError::BadLength { len: 5, .. })));
    // HTTP without any token: refused, never an open API.
    let refused = Server::start(config(AdminConfig::default(), None)).await;
    assert!(matches!(&refused, Err(ServerError::Config(m)) if m.contains("token")), "{:?}", refused.err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A supervisor's restart on a node reaches its Telemetry as an event, and
/// `/metrics` counts the node's spawns, exits by reason and restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_restart_is_an_event_and_the_processes_are_in_metrics() {
    use foundation::supervisor::{ChildSpec, Strategy, Supervisor, SupervisorSpec};
    let (server, addr) = node(AdminConfig::default()).await;
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = seen.clone();
    server.telemetry().expect("telemetry runs").attach("foundation.supervisor.", move |event, m, meta| {
        sink.lock().push((event.to_owned(), m.get("restarts").copied(), meta.get("child").cloned(), meta.get("reason").cloned()));
    });
    let node = server.cluster().node().clone();
    let worker = ChildSpec::new("worker", |mut ctx: foundation::Ctx<()>| async move {
        loop {
            ctx.recv().await;
        }
    });
    let spec = SupervisorSpec { strategy: Strategy::OneForOne, intensity: 5, period: Duration::from_secs(10), children: vec![worker] };
    let sup = Supervisor::start(&node, spec).await.expect("starts");
    let first = sup.which_children().await.expect("answers")[0].pid.expect("running");
    node.exit(first, foundation::ExitReason::Kill);
    let want = ("foundation.supervisor.restart".to_owned(), Some(1.0), Some("worker".to_owned()), Some("killed".to_owned()));
    assert_eventually("the restart is reported", || seen.lock().contains(&want), Duration::from_secs(5)).await;
    let (code, metrics) = client::request(&addr, Some(&token()), "GET", "/metrics", b"").await.expect("metrics");
    assert_eq!(code, 200);
    for line in [
        "foundation_supervisor_restarts_total 1",
        r#"foundation_processes_exited_total{reason="killed"} 1"#,
        "foundation_mailbox_dropped_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    let spawned = metrics.lines().find_map(|l| l.strip_prefix("foundation_processes_spawned_total ")).expect("spawns counted");
    assert!(spawned.parse::<u64>().expect("a count") >= 3, "the supervisor and its worker twice: {spawned}");
    server.shutdown().await;
}
