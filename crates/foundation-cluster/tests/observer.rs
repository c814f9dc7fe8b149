//! The live observer's doors and data over real TCP and HTTP: its login
//! and session cookie, the process endpoints (list, one, kill), the view
//! stream's content, and its bounds (streams at once, a stalled client
//! dropped). The page itself is driven in a real browser by the test kit's
//! `observer_in_a_browser` (the browser tier).

mod common;

use std::time::Duration;

use foundation::rt::{Network, TokioNetwork};
use foundation::supervisor::{ChildSpec, Strategy, Supervisor, SupervisorSpec};
use foundation_cluster::admin::observer::{MemberView, UI_STREAMS_MAX, VIEW_RPC};
use foundation_cluster::admin::{AdminConfig, AdminToken, SESSION_COOKIE, client};
use foundation_cluster::server::{Server, ServerConfig};
use foundation_testutil::wait::assert_eventually;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);

fn token() -> AdminToken {
    AdminToken::new("the-admin-token-of-the-observer-tests-0123", "test").expect("a long token")
}

fn config() -> ServerConfig {
    common::one_node(AdminConfig { token: Some(token()), ..AdminConfig::default() }, None)
}

async fn node() -> (Server, String) {
    let server = Server::start(config()).await.expect("starts");
    let addr = server.http_addr().expect("serves").to_owned();
    let c = server.coordination().expect("runs").clone();
    assert_eventually("the node is operational", || c.status().operational, T).await;
    (server, addr)
}

/// `method path` with extra header lines; the status code and the whole
/// response (head and body).
async fn send(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    client::raw(addr, head.as_bytes(), body).await.expect("answers")
}

/// The whole response of a request, head included.
async fn exchange(addr: &str, request: &str) -> String {
    let mut s = TokioNetwork.connect(addr).await.expect("connects");
    s.write_all(request.as_bytes()).await.expect("writes");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("reads");
    String::from_utf8_lossy(&raw).into_owned()
}

async fn json(addr: &str, method: &str, path: &str) -> (u16, Value) {
    let (code, body) = client::request(addr, Some(&token()), method, path, b"").await.expect("answers");
    (code, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}")))
}

/// A stream's connection, its head read.
async fn open_stream(addr: &str) -> (u16, foundation::rt::BoxStream) {
    let mut s = TokioNetwork.connect(addr).await.expect("connects");
    let req = format!("GET /ui/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\n\r\n", token().bearer());
    s.write_all(req.as_bytes()).await.expect("writes");
    (read_status(&mut s).await, s)
}

/// Reads a response head byte by byte (nothing of the body) and returns
/// its status code, 0 if the connection closed first.
async fn read_status<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> u16 {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await.expect("reads") == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The next `view` event's data from a stream.
async fn next_view(s: &mut foundation::rt::BoxStream, buffered: &mut String) -> Value {
    loop {
        if let Some(start) = buffered.find("event: view\ndata: ")
            && let Some(end) = buffered[start..].find("\n\n")
        {
            let data = buffered[start + "event: view\ndata: ".len()..start + end].to_owned();
            buffered.drain(..start + end + 2);
            return serde_json::from_str(&data).expect("a view is JSON");
        }
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(T, s.read(&mut chunk)).await.expect("a view in time").expect("reads");
        assert!(n > 0, "the stream ended");
        // Chunked transfer encoding: the chunk-size lines sit between
        // events, never inside one (an event is written whole).
        buffered.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_signs_in_with_the_token_and_its_session_opens_only_the_page_and_stream() {
    let (server, addr) = node().await;
    // No session: the login form, with 401.
    let (code, page) = send(&addr, "GET", "/ui", "", b"").await;
    assert_eq!(code, 401, "{page}");
    assert!(page.contains(r#"action="/ui/login""#) && !page.contains("EventSource"), "{page}");
    // A wrong token: the form again.
    let form = |t: &str| format!("token={t}");
    let wrong = exchange(
        &addr,
        &format!(
            "POST /ui/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\nContent-Length: 45\r\n\r\n{}",
            form("not-the-admin-token-of-the-observer-tests-9")
        ),
    )
    .await;
    assert!(wrong.starts_with("HTTP/1.1 401") && wrong.contains("that is not this node's admin token"), "{wrong}");
    assert!(!wrong.to_ascii_lowercase().contains("set-cookie"), "{wrong}");
    // The token: a session cookie, then back to the page.
    let body = form("the-admin-token-of-the-observer-tests-0123");
    let ok = exchange(
        &addr,
        &format!(
            "POST /ui/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 303") && ok.to_ascii_lowercase().contains("location: /ui\r\n"), "{ok}");
    let cookie_line = ok.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("a cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie_line.contains(attr), "{cookie_line}");
    }
    assert!(!cookie_line.contains("the-admin-token"), "the cookie never carries the token: {cookie_line}");
    let session = cookie_line.split_once(':').expect("a header").1.trim().split(';').next().expect("a value").to_owned();
    assert!(session.starts_with(&format!("{SESSION_COOKIE}=")), "{session}");
    let with = format!("Cookie: theme=dark; {session}\r\n");
    let (code, page) = send(&addr, "GET", "/ui", &with, b"").await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("EventSource(\"/ui/events\")"), "the page: {page}");
    // The session opens the page and its stream, nothing else.
    for (method, path) in
        [("GET", "/status"), ("GET", "/processes"), ("POST", "/processes/1/kill"), ("GET", "/kv/k"), ("POST", "/ui/events")]
    {
        let (code, text) = send(&addr, method, path, &with, b"").await;
        assert!(code == 401 || (code == 405 && path == "/ui/events"), "{method} {path} with a session: {code} {text}");
    }
    let forged = format!("Cookie: {SESSION_COOKIE}={}\r\n", "0".repeat(64));
    assert_eq!(send(&addr, "GET", "/ui", &forged, b"").await.0, 401, "a forged session");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_are_listed_as_a_tree_killed_and_seen_restarted_through_the_api() {
    let (server, addr) = node().await;
    let node = server.cluster().node().clone();
    let worker = ChildSpec::new("worker", |mut ctx: foundation::Ctx<u32>| async move {
        loop {
            ctx.recv().await;
        }
    });
    let spec = SupervisorSpec { strategy: Strategy::OneForOne, intensity: 5, period: Duration::from_secs(10), children: vec![worker] };
    let sup = Supervisor::start(&node, spec).await.expect("starts");
    let first = sup.which_children().await.expect("answers")[0].pid.expect("running");
    node.register("observed-worker", first).expect("a free name");
    let addr_of_first = node.addr::<u32>(first).expect("a u32 process");
    for i in 0..3 {
        addr_of_first.try_send(i).expect("room");
    }
    // A poll is counted when it returns, just after what it received (one
    // poll if the child first ran after the sends, more if before).
    let received = || node.process_info(first).is_some_and(|i| i.received == 3 && i.polls >= 1);
    foundation_testutil::assert_eventually("three received, in counted polls", received, Duration::from_secs(5)).await;
    let find = |list: &Value, id: u64| list["processes"].as_array().expect("a list").iter().find(|p| p["id"] == id).cloned();
    let (code, listed) = json(&addr, "GET", "/processes").await;
    assert_eq!(code, 200, "{listed}");
    let w = find(&listed, first.id()).expect("listed");
    assert_eq!(w["parent"], sup.pid().id(), "{w}");
    assert_eq!(w["names"], serde_json::json!(["observed-worker"]));
    assert_eq!(w["links"], serde_json::json!([sup.pid().id()]));
    assert!(w["memory_bytes"].as_u64().expect("a size") > 0 && w["message_type"] == "u32", "{w}");
    assert_eq!(w["received"], 3, "{w}");
    assert!(w["polls"].as_u64().expect("a count") >= 1, "it ran to receive: {w}");
    assert_eq!(listed["total"].as_u64(), Some(node.live_processes() as u64), "{listed}");
    assert_eq!(json(&addr, "GET", &format!("/processes/{}", first.id())).await.1["id"], first.id());

    let (code, killed) = json(&addr, "POST", &format!("/processes/{}/kill", first.id())).await;
    assert_eq!((code, killed["killed"].as_u64()), (200, Some(first.id())), "{killed}");
    // Polled through the API with a deadline: a child never restarted fails
    // the test instead of hanging it.
    let restart = async {
        loop {
            let (_, list) = json(&addr, "GET", "/processes").await;
            let children: Vec<Value> =
                list["processes"].as_array().expect("a list").iter().filter(|p| p["parent"] == sup.pid().id()).cloned().collect();
            if find(&list, first.id()).is_none() && children.len() == 1 {
                break children[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let restarted = tokio::time::timeout(Duration::from_secs(10), restart).await.expect("the killed child is restarted within 10 s");
    assert_eq!(restarted["restarts"], 1, "{restarted}");
    let (code, gone) = json(&addr, "GET", &format!("/processes/{}", first.id())).await;
    assert_eq!((code, gone["kind"].as_str()), (404, Some("no_process")), "{gone}");
    assert_eq!(json(&addr, "POST", &format!("/processes/{}/kill", first.id())).await.0, 404);
    let (code, bad) = json(&addr, "GET", "/processes/not-a-number").await;
    assert_eq!((code, bad["kind"].as_str()), (400, Some("bad_id")), "{bad}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_stream_shows_the_group_and_is_bounded_in_streams() {
    let (server, addr) = node().await;
    let one = server.cluster().node().spawn(|mut ctx: foundation::Ctx<()>| async move { ctx.recv().await });
    let (code, mut s) = open_stream(&addr).await;
    assert_eq!(code, 200);
    let mut buffered = String::new();
    let view = next_view(&mut s, &mut buffered).await;
    assert_eq!(view["node"], "a");
    assert_eq!(view["members"], serde_json::json!(["a"]));
    assert_eq!(view["leader"], "a", "{view}");
    let me = &view["views"]["a"];
    assert!(me["progress"]["applied"].as_u64().is_some() && me["status"]["operational"] == true, "{me}");
    let listed = view["processes"]["processes"].as_array().expect("a list");
    assert!(listed.iter().any(|p| p["id"] == one.pid().id()), "{view}");
    // Views keep coming.
    let later = next_view(&mut s, &mut buffered).await;
    assert!(later["at_ms"].as_u64() >= view["at_ms"].as_u64(), "{later}");
    // A member answers the view RPC over the mesh too.
    let rpc = server.cluster().rpc::<(), Option<MemberView>>("a", VIEW_RPC, (), Duration::from_secs(5)).await;
    let rpc = rpc.unwrap_or_else(|e| panic!("{e}")).expect("a view");
    assert_eq!(rpc.node, "a");
    assert!(rpc.status.is_some_and(|s| s.operational && s.storage_error.is_none()) && rpc.progress.is_some_and(|p| p.applied.is_some()));

    // All streams taken: one more is refused at once.
    let mut open = vec![s];
    for _ in 1..UI_STREAMS_MAX {
        let (code, s) = open_stream(&addr).await;
        assert_eq!(code, 200);
        open.push(s);
    }
    let (code, _) = open_stream(&addr).await;
    assert_eq!(code, 503, "stream {} of {UI_STREAMS_MAX}", UI_STREAMS_MAX + 1);
    // A closed one frees its place.
    drop(open.pop());
    assert_eventually_async(|| async { open_stream(&addr).await.0 == 200 }).await;
    drop((open, one));
    server.shutdown().await;
}

/// Streams that stop reading (a stalled browser) are dropped once their
/// queue is full: the node buffers a bounded amount for each, and their
/// places come free without them ever reading again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_are_dropped_and_free_their_places() {
    let (server, addr) = node().await;
    // Large views (a thousand processes) fill the sockets' buffers fast.
    let node = server.cluster().node().clone();
    let idle: Vec<_> = (0..1000).map(|_| node.spawn(|mut ctx: foundation::Ctx<()>| async move { ctx.recv().await })).collect();
    let mut stalled = Vec::new();
    for _ in 0..UI_STREAMS_MAX {
        // A small receive window, and nothing read after the head.
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(4096).expect("sets");
        let mut s = socket.connect(addr.parse().expect("an address")).await.expect("connects");
        let req = format!("GET /ui/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\n\r\n", token().bearer());
        s.write_all(req.as_bytes()).await.expect("writes");
        // The head says the place is taken; the stream is never read again.
        assert_eq!(read_status(&mut s).await, 200);
        stalled.push(s);
    }
    assert_eq!(open_stream(&addr).await.0, 503, "every place is taken");
    assert_eventually_async(|| async { open_stream(&addr).await.0 == 200 }).await;
    drop((stalled, idle));
    server.shutdown().await;
}

/// Polls an async condition every 100 ms for up to 60 s.
async fn assert_eventually_async<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "not met within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
