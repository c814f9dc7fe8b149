//! `foundation node` as real OS processes: three nodes form a group over
//! TCP, the admin HTTP API reads and writes through consensus, bad requests
//! get JSON 4xx errors, `foundation status` prints the table, a killed node
//! comes back from its data directory, and a data directory of another
//! cluster is refused at start. The admin token: every call carries it
//! (read from the node's `admin.token`), the file is private and never
//! printed, and `--chaos-agent` off loopback is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use foundation_cluster::admin::{AdminToken, TOKEN_FILE, client};

const SECRET: &str = "node-cli-test-secret-0123456789-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// A free loopback port outside the ephemeral range (an outgoing
/// connection cannot take it before the node binds it).
fn free_port() -> u16 {
    foundation_testkit::cluster::free_ports(1).expect("a free port")[0]
}

struct Nodes {
    dir: PathBuf,
    ports: Vec<(u16, u16)>,
    children: Vec<Option<Child>>,
    /// More arguments for every node.
    extra: Vec<String>,
}

impl Nodes {
    fn args(&self, i: usize) -> Vec<String> {
        let (cluster, http) = self.ports[i];
        let mut args = vec![
            "node".into(),
            "--name".into(),
            format!("n{}", i + 1),
            "--id".into(),
            (i + 1).to_string(),
            "--listen".into(),
            format!("127.0.0.1:{cluster}"),
            "--http".into(),
            format!("127.0.0.1:{http}"),
            "--data-dir".into(),
            self.dir.join(format!("n{}", i + 1)).display().to_string(),
            "--cluster-id".into(),
            "test".into(),
        ];
        for (j, (p, _)) in self.ports.iter().enumerate().filter(|(j, _)| *j != i) {
            args.push("--peer".into());
            args.push(format!("{}=n{}@127.0.0.1:{p}", j + 1, j + 1));
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    fn spawn(&mut self, i: usize) {
        let child = Command::new(env!("CARGO_BIN_EXE_foundation"))
            .args(self.args(i))
            .env("FOUNDATION_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(self.log_file(i))
            .spawn()
            .expect("spawn foundation node");
        self.children[i] = Some(child);
    }

    fn http(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i].1)
    }

    /// Node `i`'s stderr, appended to over its restarts.
    fn log_file(&self, i: usize) -> std::fs::File {
        std::fs::create_dir_all(&self.dir).expect("the test's directory");
        let path = self.dir.join(format!("n{}.log", i + 1));
        std::fs::OpenOptions::new().create(true).append(true).open(path).expect("a log file")
    }

    /// What node `i` has logged (its stderr, over its restarts).
    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("n{}.log", i + 1))).unwrap_or_default()
    }

    fn data(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{}", i + 1))
    }

    /// Node `i`'s admin token, once it has written it.
    fn token(&self, i: usize) -> Option<AdminToken> {
        AdminToken::from_file(&self.data(i).join(TOKEN_FILE)).ok()
    }

    /// `call` on node `i` with its token.
    fn call(&self, rt: &tokio::runtime::Runtime, i: usize, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        call(rt, &self.http(i), self.token(i).as_ref(), method, path, body)
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foundation-node-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn call(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    token: Option<&AdminToken>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let (code, text) = rt.block_on(client::request(addr, token, method, path, body)).unwrap_or((0, String::new()));
    (code, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json_error(v: &serde_json::Value) -> bool {
    v["error"].is_string() && v["kind"].is_string()
}

#[test]
fn three_node_processes_serve_the_admin_api() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut nodes = Nodes {
        dir: temp_dir("three"),
        ports: (0..3).map(|_| (free_port(), free_port())).collect(),
        children: vec![None, None, None],
        extra: Vec::new(),
    };
    for i in 0..3 {
        nodes.spawn(i);
    }
    for i in 0..3 {
        wait_until("every node is operational", || nodes.call(&rt, i, "GET", "/status", b"").1["operational"] == true);
    }
    // Writes and linearizable reads through any node.
    let (code, put) = nodes.call(&rt, 1, "PUT", "/kv/greeting", b"hello");
    assert_eq!(code, 200, "{put}");
    assert_eq!(put["committed"], true);
    assert!(put["term"].as_u64().unwrap_or(0) > 0);
    let (code, got) = nodes.call(&rt, 2, "GET", "/kv/greeting", b"");
    assert_eq!((code, got["value"].as_str()), (200, Some("hello")));
    // Compare-and-set.
    let (code, conflict) = nodes.call(&rt, 0, "PUT", "/kv/greeting?expected=nope", b"x");
    assert_eq!(code, 409, "{conflict}");
    assert!(json_error(&conflict));
    assert_eq!(conflict["error"], r#"compare-and-set failed: the value is "hello", not "nope""#);
    let (code, taken) = nodes.call(&rt, 0, "PUT", "/kv/greeting?absent=true", b"x");
    assert_eq!(code, 409, "{taken}");
    assert_eq!(taken["error"], r#"compare-and-set failed: the key is set (to "hello"), not absent"#);
    let (code, missing) = nodes.call(&rt, 0, "PUT", "/kv/nothing-here?expected=nope", b"x");
    assert_eq!(code, 409, "{missing}");
    assert_eq!(missing["error"], r#"compare-and-set failed: the key is absent, not "nope""#);
    let (code, _) = nodes.call(&rt, 0, "PUT", "/kv/greeting?expected=hello", b"world");
    assert_eq!(code, 200);
    let (code, _) = nodes.call(&rt, 0, "PUT", "/kv/fresh?absent=true", b"1");
    assert_eq!(code, 200);
    // Bad requests: JSON 4xx, and the node keeps serving.
    let long_key = format!("/kv/{}", "k".repeat(600));
    let big = vec![b'x'; (1 << 20) + 10];
    for (method, path, body, want) in [
        ("GET", "/nope", &b""[..], 404),
        ("GET", long_key.as_str(), &b""[..], 400),
        ("POST", "/kv/greeting", &b""[..], 405),
        ("PUT", "/kv/big", big.as_slice(), 413),
        ("GET", "/events?limit=lots", &b""[..], 400),
        ("PUT", "/kv/x?expected=a&absent=true", &b"v"[..], 400),
        ("DELETE", "/kv/missing", &b""[..], 404),
        ("GET", "/kv/missing", &b""[..], 404),
    ] {
        let (code, v) = nodes.call(&rt, 0, method, path, body);
        assert_eq!(code, want, "{method} {path}: {v}");
        assert!(json_error(&v), "{method} {path}: not a JSON error: {v}");
    }
    let (code, deleted) = nodes.call(&rt, 2, "DELETE", "/kv/fresh", b"");
    assert_eq!((code, deleted["deleted"].as_bool()), (200, Some(true)));
    // Metrics and events.
    let (code, text) = rt.block_on(client::request(&nodes.http(0), nodes.token(0).as_ref(), "GET", "/metrics", b"")).expect("metrics");
    assert_eq!(code, 200);
    assert!(text.contains("foundation_http_requests_total") && text.contains("foundation_raft_term"), "{text}");
    let (code, events) = nodes.call(&rt, 1, "GET", "/events?kind=kv.put", b"");
    assert_eq!(code, 200);
    assert!(events.as_array().is_some_and(|a| !a.is_empty()), "{events}");
    // `foundation status` prints the table.
    let out = Command::new(env!("CARGO_BIN_EXE_foundation"))
        .args(["status", "--http", &nodes.http(0), "--data-dir"])
        .arg(nodes.data(0))
        .output()
        .expect("status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("operational true") && table.contains("leader") && table.contains("n3"), "{table}");
    // `foundation status --watch 1` prints the table every second.
    let out = nodes.dir.join("watch.out");
    let mut watching = Command::new(env!("CARGO_BIN_EXE_foundation"))
        .args(["status", "--watch", "1", "--http", &nodes.http(0), "--data-dir"])
        .arg(nodes.data(0))
        .stdout(std::fs::File::create(&out).expect("watch.out"))
        .spawn()
        .expect("status --watch");
    // Member n3's row: reachable or not.
    let n3_seen = |reachable: &str| {
        let printed = std::fs::read_to_string(&out).unwrap_or_default();
        printed.lines().any(|l| l.split_whitespace().take(2).eq(["n3", reachable]))
    };
    wait_until("the watch printed n3 reachable", || n3_seen("yes"));
    // SIGKILL a node, write meanwhile, restart it from its data directory.
    nodes.kill(2);
    wait_until("the survivors are operational", || nodes.call(&rt, 0, "GET", "/status", b"").1["operational"] == true);
    wait_until("the watch shows n3 unreachable", || n3_seen("no"));
    let _ = watching.kill();
    let _ = watching.wait();
    let (code, _) = nodes.call(&rt, 0, "PUT", "/kv/while", b"down");
    assert_eq!(code, 200);
    nodes.spawn(2);
    wait_until("the restarted node is operational", || nodes.call(&rt, 2, "GET", "/status", b"").1["operational"] == true);
    let (code, got) = nodes.call(&rt, 2, "GET", "/kv/while", b"");
    assert_eq!((code, got["value"].as_str()), (200, Some("down")));
}

/// A follower among `foundation node` processes is down while 80 MiB, five
/// times the mesh's 16 MiB frame limit, is written (a snapshot every
/// 16 MiB, ten entries kept behind it): back, it catches up through a
/// snapshot streamed in chunks, the group then survives the loss of
/// another node, and every key reads back through it.
#[test]
fn a_follower_process_catches_up_through_a_snapshot_five_frames_large() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let extra = ["--snapshot-log-bytes", "16777216", "--logs-kept", "10"].map(String::from).to_vec();
    let dir = temp_dir("catchup");
    std::fs::create_dir_all(&dir).expect("the test's directory");
    let mut nodes = Nodes { dir, ports: (0..3).map(|_| (free_port(), free_port())).collect(), children: vec![None, None, None], extra };
    for i in 0..3 {
        nodes.spawn(i);
    }
    for i in 0..3 {
        wait_until("every node is operational", || nodes.call(&rt, i, "GET", "/status", b"").1["operational"] == true);
    }
    nodes.kill(2);
    wait_until("n1 sees a quorum without n3", || nodes.call(&rt, 0, "GET", "/status", b"").1["operational"] == true);
    const KEYS: usize = 160;
    for k in 0..KEYS {
        let (code, v) = nodes.call(&rt, 0, "PUT", &format!("/kv/big{k}"), &vec![b'a' + (k % 26) as u8; 512 << 10]);
        assert_eq!(code, 200, "big{k}: {v}");
    }
    nodes.spawn(2);
    wait_until("n3 installed a snapshot from the leader", || nodes.log(2).contains("installed a snapshot from the leader"));
    wait_until("n3 is operational", || nodes.call(&rt, 2, "GET", "/status", b"").1["operational"] == true);
    // n2 goes: n3 is now needed for a quorum.
    nodes.kill(1);
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, v) = nodes.call(&rt, 2, "PUT", "/kv/after", b"loss");
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no write commits with n1 and n3: {code} {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for k in 0..KEYS {
        let (code, got) = nodes.call(&rt, 2, "GET", &format!("/kv/big{k}"), b"");
        assert_eq!(code, 200, "big{k}: {got}");
        assert_eq!(got["value"].as_str().map(str::len), Some(512 << 10), "big{k}");
    }
}

/// A tmpfs of `size` mounted at `dir` for as long as it lives.
struct SmallFs(PathBuf);

impl SmallFs {
    /// `None` when this process may not mount (not root).
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"]).arg(dir).status();
        ok.is_ok_and(|s| s.success()).then(|| Self(dir.to_owned()))
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status().expect("mount");
        assert!(ok.success(), "remounting {} with {size}", self.0.display());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A node whose data directory is on a real filesystem that fills (a
/// 16 MiB tmpfs the test mounts) stops acting as a member and says why in
/// `/status` (operational false, the storage error) while the other two
/// keep committing; its API answers 503; once the filesystem has room
/// again it comes back on its own and catches up. Needs root (CI runs as
/// root); without it the test says so and checks nothing.
#[test]
fn a_node_whose_filesystem_fills_says_so_and_comes_back_when_it_has_room() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut nodes = Nodes {
        dir: temp_dir("full"),
        ports: (0..3).map(|_| (free_port(), free_port())).collect(),
        children: vec![None, None, None],
        extra: Vec::new(),
    };
    let Some(fs) = SmallFs::mount(&nodes.data(2), "16m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    for i in 0..3 {
        nodes.spawn(i);
    }
    for i in 0..3 {
        wait_until("every node is operational", || nodes.call(&rt, i, "GET", "/status", b"").1["operational"] == true);
    }
    // Commits through n1, again while the outcome is unknown (a write in
    // flight when n3, if it leads, stops acting as a member) or there is
    // no leader yet.
    let put = |key: &str, value: &[u8]| {
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, v) = nodes.call(&rt, 0, "PUT", &format!("/kv/{key}"), value);
            match code {
                200 => return,
                503 | 504 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => panic!("the two nodes with room commit {key}: {code} {v}"),
            }
        }
    };
    // 512 KiB values until n3's 16 MiB are full; the others commit them all.
    let value = vec![b'v'; 512 << 10];
    let mut written = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        put(&format!("big{written}"), &value);
        written += 1;
        let status = nodes.call(&rt, 2, "GET", "/status", b"").1;
        if status["operational"] == false && status["storage_error"].is_string() {
            let why = status["storage_error"].as_str().unwrap_or_default().to_lowercase();
            assert!(why.contains("space") || why.contains("full"), "{status}");
            break;
        }
        assert!(Instant::now() < deadline && written < 200, "n3 still says it is fine after {written} writes: {status}");
    }
    let (code, v) = nodes.call(&rt, 2, "PUT", "/kv/on-the-full-node", b"x");
    assert_eq!(code, 503, "{v}");
    assert!(json_error(&v), "{v}");
    put("after-full", b"still");
    // Room again: n3 recovers without a restart and serves what it missed.
    fs.resize("256m");
    wait_until("n3 is operational again", || nodes.call(&rt, 2, "GET", "/status", b"").1["operational"] == true);
    wait_until("n3 reads what it missed", || {
        let (code, got) = nodes.call(&rt, 2, "GET", "/kv/after-full", b"");
        code == 200 && got["value"] == "still"
    });
    let (code, _) = nodes.call(&rt, 2, "PUT", "/kv/on-the-node-again", b"y");
    assert_eq!(code, 200);
    for i in 0..3 {
        nodes.kill(i);
    }
    drop(fs);
}

#[test]
fn a_data_directory_of_another_cluster_or_node_is_refused() {
    let dir = temp_dir("identity");
    let data = dir.join("d");
    let run = |cluster: &str, name: &str, id: &str, data: &Path| {
        Command::new(env!("CARGO_BIN_EXE_foundation"))
            .args(["node", "--name", name, "--id", id, "--listen", "127.0.0.1:0", "--cluster-id", cluster, "--data-dir"])
            .arg(data)
            .env("FOUNDATION_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    // A first node claims the directory; stop it with SIGTERM.
    let mut first = run("alpha", "a", "1", &data);
    wait_until("the identity is written", || data.join("identity.json").exists());
    let sent = Command::new("kill").args(["-TERM", &first.id().to_string()]).status().expect("kill -TERM");
    assert!(sent.success());
    let status = first.wait().expect("wait");
    assert!(status.success(), "a clean stop on SIGTERM: {status}");
    let before = std::fs::read_to_string(data.join("identity.json")).expect("identity");
    // Readable by the node's owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!((mode(&data), mode(&data.join("identity.json"))), (0o700, 0o600), "the data directory's modes");
    for (cluster, name, id, what) in [("beta", "a", "1", "cluster"), ("alpha", "b", "2", "node")] {
        let out = run(cluster, name, id, &data).wait_with_output().expect("exits");
        assert!(!out.status.success(), "another {what} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("data directory") && err.contains("belongs to"), "a clear message: {err}");
    }
    assert_eq!(std::fs::read_to_string(data.join("identity.json")).expect("identity"), before, "nothing was changed");
    // A corrupt log: a clear error, and the file is left as it was.
    let log = data.join("raft").join("raft.log");
    std::fs::write(&log, b"this is not a Raft log at all, just garbage bytes").expect("corrupt");
    let garbage = std::fs::read(&log).expect("read");
    let out = run("alpha", "a", "1", &data).wait_with_output().expect("exits");
    assert!(!out.status.success(), "a corrupt data directory must be refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not start") && err.contains("raft"), "a clear message: {err}");
    assert_eq!(std::fs::read(&log).expect("read"), garbage, "the corrupt file was not touched");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_with_the_wrong_secret_exits_with_a_clear_message() {
    let dir = temp_dir("secret");
    let (cluster, http) = (free_port(), free_port());
    let mut good = Command::new(env!("CARGO_BIN_EXE_foundation"))
        .args(["node", "--name", "a", "--id", "1", "--listen", &format!("127.0.0.1:{cluster}"), "--http", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(dir.join("a"))
        .env("FOUNDATION_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let token = || AdminToken::from_file(&dir.join("a").join(TOKEN_FILE)).ok();
    wait_until("the first node serves", || call(&rt, &format!("127.0.0.1:{http}"), token().as_ref(), "GET", "/status", b"").0 == 200);
    let out = Command::new(env!("CARGO_BIN_EXE_foundation"))
        .args(["node", "--name", "b", "--id", "2", "--listen", "127.0.0.1:0", "--peer", &format!("1=a@127.0.0.1:{cluster}")])
        .arg("--data-dir")
        .arg(dir.join("b"))
        .env("FOUNDATION_SECRET", "a-different-secret-0123456789-0123456789")
        .output()
        .expect("runs");
    let _ = good.kill();
    let _ = good.wait();
    assert!(!out.status.success(), "a wrong secret must stop the node");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secret"), "a clear message: {err}");
    assert!(!dir.join("b").exists(), "no data written");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `foundation ARGS` (with the secret set) to its end, or kills it
/// after [`WAIT`] (a node that should have been refused but runs: its exit
/// code is then `None`).
fn foundation(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_foundation"))
        .args(args)
        .env("FOUNDATION_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().expect("output")
}

/// A usage error: exit 2 and one line on stderr that names `words`.
fn assert_usage(out: &std::process::Output, words: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for w in words {
        assert!(err.contains(w), "names {w}: {err}");
    }
}

#[test]
fn the_chaos_agent_is_refused_off_loopback() {
    let out = foundation(&["node", "--name", "a", "--id", "1", "--listen", "0.0.0.0:0", "--chaos-agent"]);
    assert_usage(&out, &["--chaos-agent", "loopback", "--listen"]);
    let out = foundation(&["node", "--name", "a", "--id", "1", "--listen", "127.0.0.1:0", "--chaos-agent", "--http", "0.0.0.0:0"]);
    assert_usage(&out, &["--chaos-agent", "--http"]);
}

#[test]
fn http_without_a_token_is_refused() {
    let out = foundation(&["node", "--name", "a", "--id", "1", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
    assert_usage(&out, &["--admin-token-file", "--data-dir"]);
    let dir = temp_dir("token-files");
    std::fs::create_dir_all(&dir).expect("dir");
    use std::os::unix::fs::PermissionsExt;
    let (loose, short) = (dir.join("loose"), dir.join("short"));
    std::fs::write(&loose, "y".repeat(48)).expect("writes");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::fs::write(&short, "too-short").expect("writes");
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    for (file, words) in [(&loose, ["chmod 600", "group"]), (&short, ["32", "bytes"])] {
        let file = file.display().to_string();
        let out = foundation(&[
            "node",
            "--name",
            "a",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin-token-file",
            &file,
        ]);
        assert_usage(&out, &words);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_admin_token_file_is_private_reused_and_never_printed() {
    let dir = temp_dir("token");
    let data = dir.join("d");
    let (cluster, http) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{http}");
    let (out_file, err_file) = (dir.join("stdout"), dir.join("stderr"));
    let start = |extra: &[&str]| {
        std::fs::create_dir_all(&dir).expect("dir");
        Command::new(env!("CARGO_BIN_EXE_foundation"))
            .args(["node", "--name", "a", "--id", "1", "--listen", &format!("127.0.0.1:{cluster}"), "--http", &addr])
            .args(extra)
            .arg("--data-dir")
            .arg(&data)
            .env("FOUNDATION_SECRET", SECRET)
            .stdout(std::fs::File::create(&out_file).expect("stdout file"))
            .stderr(std::fs::File::create(&err_file).expect("stderr file"))
            .spawn()
            .expect("spawn")
    };
    let stop = |mut child: Child| {
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill -TERM");
        assert!(sent.success());
        assert!(child.wait().expect("wait").success(), "a clean stop");
        std::fs::read_to_string(&out_file).unwrap_or_default() + &std::fs::read_to_string(&err_file).unwrap_or_default()
    };
    let status = |args: &[&str]| {
        let mut all = vec!["status", "--http", &addr];
        all.extend_from_slice(args);
        foundation(&all)
    };
    let file = data.join(TOKEN_FILE);
    let data_arg = data.display().to_string();
    let child = start(&[]);
    // `foundation status` with the data directory: it reads the token.
    let out = status(&["--wait", "20", "--data-dir", &data_arg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).expect("created").permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&file).expect("reads");
    assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()), "256 bits in hex");
    // Without a token: 401, and the message says where to find one.
    let out = status(&["--wait", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("401") && err.contains("--admin-token-file"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&token) && !err.contains(&token));
    let printed = stop(child);
    assert!(printed.contains(&file.display().to_string()), "the node prints the token file's path: {printed}");
    assert!(!printed.contains(&token), "the node never prints the token");
    // The next start reuses it; --http-open-reads opens /status without it.
    let child = start(&["--http-open-reads"]);
    let out = status(&["--wait", "20"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = stop(child);
    assert_eq!(std::fs::read_to_string(&file).expect("reads"), token, "reused");
    assert!(!printed.contains(&token));
    let _ = std::fs::remove_dir_all(&dir);
}
