//! Operating a node: `foundation secret generate`, the secret's length and
//! where it comes from, the log (`RUST_LOG`, `--log-format`), what never
//! appears in it (the secret, the admin token), the data directory's modes,
//! and the TLS flags.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use foundation_testkit::assert_eventually;

/// A secret a test can search the logs for (64 bytes, as generated ones).
const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const WAIT: Duration = Duration::from_secs(30);

fn foundation() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_foundation"));
    c.env_remove("FOUNDATION_SECRET").env_remove("RUST_LOG").stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    exits(foundation().args(args))
}

/// Runs `cmd` to its exit; one still running after [`WAIT`] (a node that
/// accepted what it should refuse) is killed and fails the test.
fn exits(cmd: &mut Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("runs foundation");
    let exited = runtime().block_on(foundation_testkit::wait_for_condition(
        || child.try_wait().ok().flatten().is_some(),
        WAIT,
        Duration::from_millis(20),
    ));
    if exited.is_err() {
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        panic!("still running after {WAIT:?}: {cmd:?}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    child.wait_with_output().expect("output")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foundation-ops-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn tls_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../foundation-cluster/tests/tls").join(name).display().to_string()
}

fn free_ports(n: usize) -> Vec<u16> {
    foundation_testkit::cluster::free_ports(n).expect("free ports")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A `foundation node` whose stderr goes to a file; SIGKILLed on drop if
/// it still runs.
struct NodeProc {
    child: Child,
    log: PathBuf,
}

impl NodeProc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd.stdout(Stdio::null()).stderr(file).spawn().expect("spawns foundation node");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(&mut self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        assert!(sent.success());
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "a clean stop on SIGTERM: {status}\n{}", self.log());
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn secret_generate_prints_256_random_bits_in_hex() {
    let draw = || {
        let out = run(&["secret", "generate"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "nothing on stderr: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let (a, b) = (draw(), draw());
    assert_eq!(a.trim_end().len(), 64, "{a:?}");
    assert!(a.trim_end().bytes().all(|c| c.is_ascii_hexdigit()), "{a:?}");
    assert!(a.ends_with('\n') && a.lines().count() == 1, "one line: {a:?}");
    assert_ne!(a, b, "two draws differ");
}

#[test]
fn a_secret_under_32_bytes_is_refused_naming_secret_generate() {
    let short = "s".repeat(31);
    let by_flag = run(&["node", "--name", "a", "--id", "1", "--listen", "127.0.0.1:0", "--secret", &short]);
    let by_env = exits(foundation().args(["node", "--name", "a", "--id", "1", "--listen", "127.0.0.1:0"]).env("FOUNDATION_SECRET", &short));
    let dir = scratch("short-file");
    let file = dir.join("secret");
    std::fs::write(&file, &short).expect("write");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let by_file = run(&["node", "--name", "a", "--id", "1", "--listen", "127.0.0.1:0", "--secret-file", file.to_str().expect("utf-8")]);
    for (out, from) in [(by_flag, "--secret"), (by_env, "FOUNDATION_SECRET"), (by_file, "secret")] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{from}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{from}: one line: {err}");
        assert!(err.contains(from) && err.contains("31 bytes") && err.contains("32"), "{from}: {err}");
        assert!(err.contains("foundation secret generate"), "{from}: names the command that makes one: {err}");
        assert!(!err.contains(&short), "{from}: the secret is not echoed: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_secret_on_the_command_line_warns_once_without_echoing_it() {
    let dir = scratch("argv");
    let rt = runtime();
    let mut argv = foundation();
    argv.args(["node", "--name", "a", "--id", "1", "--listen", "127.0.0.1:0", "--secret", SECRET]);
    let mut argv = NodeProc::spawn(argv, dir.join("argv.log"));
    let mut env = foundation();
    env.args(["node", "--name", "b", "--id", "2", "--listen", "127.0.0.1:0"]).env("FOUNDATION_SECRET", SECRET);
    let mut env = NodeProc::spawn(env, dir.join("env.log"));
    rt.block_on(assert_eventually(
        "both nodes log their start",
        || argv.log().contains("node started") && env.log().contains("node started"),
        WAIT,
    ));
    argv.stop();
    env.stop();
    let (argv, env) = (argv.log(), env.log());
    let warnings: Vec<&str> = argv.lines().filter(|l| l.contains("WARN") && l.contains("--secret")).collect();
    assert_eq!(warnings.len(), 1, "one warning line:\n{argv}");
    assert!(warnings[0].contains("FOUNDATION_SECRET") && warnings[0].contains("--secret-file"), "it recommends the alternatives: {argv}");
    assert!(!argv.contains(SECRET) && !env.contains(SECRET), "the secret is never logged:\n{argv}\n{env}");
    assert!(!env.lines().any(|l| l.contains("WARN") && l.contains("--secret")), "no warning for the environment:\n{env}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every node's log at debug level, in text (n1, n2) and JSON (n3): start,
/// leader, a follower that cannot catch up (n3, started late) and then
/// does, stop; no line holds the secret or the admin token; the JSON lines
/// parse; the data directories are private.
#[test]
fn node_logs_hold_the_life_cycle_and_never_a_secret_or_a_token() {
    let dir = scratch("logs");
    let rt = runtime();
    let ports = free_ports(3);
    let start = |i: usize| {
        let mut cmd = foundation();
        if i == 2 {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args(["node", "--name", &format!("n{}", i + 1), "--id", &(i + 1).to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", ports[i]), "--cluster-id", "logs"])
            .arg("--data-dir")
            .arg(dir.join(format!("n{}", i + 1)))
            .env("FOUNDATION_SECRET", SECRET)
            .env("RUST_LOG", "debug");
        for j in (0..3).filter(|j| *j != i) {
            cmd.args(["--peer", &format!("{}=n{}@127.0.0.1:{}", j + 1, j + 1, ports[j])]);
        }
        NodeProc::spawn(cmd, dir.join(format!("n{}.log", i + 1)))
    };
    // n1 and n2 elect a leader of the group of three; n3 is not up yet.
    let mut nodes = vec![start(0), start(1)];
    let lagging =
        |n: &NodeProc| n.log().lines().any(|l| l.contains("a follower cannot catch up") && l.contains("n3") && l.contains("reason"));
    rt.block_on(assert_eventually("the leader logs that n3 cannot catch up", || nodes.iter().any(lagging), WAIT));
    nodes.push(start(2));
    let back = |n: &NodeProc| n.log().lines().any(|l| l.contains("the follower caught up") && l.contains("n3"));
    rt.block_on(assert_eventually("the leader logs that n3 caught up", || nodes.iter().any(back), WAIT));
    for n in &nodes {
        rt.block_on(assert_eventually(
            "each node logs a leader",
            || n.log().lines().any(|l| l.contains("leader changed") && l.contains("term")),
            WAIT,
        ));
    }
    for n in &mut nodes {
        n.stop();
    }
    let logs: Vec<String> = nodes.iter().map(NodeProc::log).collect();
    for (i, log) in logs.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let started = log.lines().find(|l| l.contains("node started")).unwrap_or_else(|| panic!("{name} logs its start:\n{log}"));
        let id = if i == 2 { format!("\"id\":{}", i + 1) } else { format!("id={}", i + 1) };
        for what in [name.as_str(), &ports[i].to_string(), &id, "data_dir"] {
            assert!(started.contains(what), "{name}'s start line names {what}: {started}");
        }
        assert!(log.lines().any(|l| l.contains("node stopped")), "{name} logs its stop:\n{log}");
        assert!(!log.contains(SECRET), "{name} logged the secret");
        let token = dir.join(&name).join("admin.token");
        if let Ok(token) = std::fs::read_to_string(&token) {
            assert!(token.trim().len() >= 32 && !log.contains(token.trim()), "{name} logged its admin token");
        }
    }
    for line in logs[2].lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    assert!(logs[2].contains(r#""message":"node started""#), "{}", logs[2]);
    assert!(logs[0].contains("DEBUG"), "RUST_LOG=debug is honoured");
    // Readable by the node's owner only: directories 0700, files 0600.
    for i in 0..3 {
        for (path, mode) in modes(&dir.join(format!("n{}", i + 1))) {
            let want = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode & 0o777, want, "{} has mode {:o}", path.display(), mode & 0o777);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every path under `root` (itself included) and its mode.
fn modes(root: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = vec![(root.to_owned(), std::fs::metadata(root).expect("exists").permissions().mode())];
    for entry in std::fs::read_dir(root).expect("readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(modes(&path));
        } else {
            out.push((path.clone(), entry.metadata().expect("metadata").permissions().mode()));
        }
    }
    out
}

#[test]
fn the_tls_flags_come_all_three_or_none() {
    let base = ["node", "--name", "a", "--id", "1", "--listen", "127.0.0.1:0", "--secret", SECRET];
    let (cert, key, ca) = (tls_file("node.pem"), tls_file("node.key"), tls_file("ca.pem"));
    for (given, missing) in [
        (vec!["--tls-cert", cert.as_str()], vec!["--tls-key", "--tls-ca"]),
        (vec!["--tls-cert", cert.as_str(), "--tls-key", key.as_str()], vec!["--tls-ca"]),
        (vec!["--tls-ca", ca.as_str()], vec!["--tls-cert", "--tls-key"]),
    ] {
        let out = run(&[&base[..], &given[..]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{given:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{given:?}: one line: {err}");
        for flag in missing {
            assert!(err.contains(flag), "{given:?}: names the missing {flag}: {err}");
        }
    }
    let out = run(&[&base[..], &["--tls-cert", key.as_str(), "--tls-key", key.as_str(), "--tls-ca", ca.as_str()]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a key is not a certificate: {err}");
    assert!(err.contains("--tls-cert") && err.contains("node.key"), "names the flag and the file: {err}");
}

/// Without TLS, a node on a non-loopback address warns that its traffic is
/// not encrypted; with TLS, or on loopback, it does not.
#[test]
fn a_node_on_a_public_address_without_tls_warns() {
    let dir = scratch("plaintext");
    let rt = runtime();
    let ports = free_ports(3);
    let tls: Vec<String> = [("--tls-cert", "node.pem"), ("--tls-key", "node.key"), ("--tls-ca", "ca.pem")]
        .iter()
        .flat_map(|(f, p)| [f.to_string(), tls_file(p)])
        .collect();
    let start = |name: &str, listen: String, extra: &[String]| {
        let mut cmd = foundation();
        cmd.args(["node", "--name", name, "--id", "1", "--listen", &listen]).args(extra).env("FOUNDATION_SECRET", SECRET);
        NodeProc::spawn(cmd, dir.join(format!("{name}.log")))
    };
    let mut nodes = [
        start("public", format!("0.0.0.0:{}", ports[0]), &[]),
        start("public-tls", format!("0.0.0.0:{}", ports[1]), &tls),
        start("loopback", format!("127.0.0.1:{}", ports[2]), &[]),
    ];
    for n in &nodes {
        rt.block_on(assert_eventually("the node logs its start", || n.log().contains("node started"), WAIT));
    }
    for n in &mut nodes {
        n.stop();
    }
    let warned = |n: &NodeProc| n.log().lines().any(|l| l.contains("WARN") && l.contains("not encrypted"));
    assert!(warned(&nodes[0]), "0.0.0.0 without TLS warns:\n{}", nodes[0].log());
    assert!(!warned(&nodes[1]), "with TLS, no warning:\n{}", nodes[1].log());
    assert!(!warned(&nodes[2]), "on loopback, no warning:\n{}", nodes[2].log());
    assert!(nodes[1].log().lines().any(|l| l.contains("node started") && l.contains("tls=true")), "{}", nodes[1].log());
    let _ = std::fs::remove_dir_all(&dir);
}
