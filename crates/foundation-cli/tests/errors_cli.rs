//! One error style for every subcommand: a missing flag, a bad value and an
//! unreadable path each give one line on stderr that starts with `error:`,
//! names the flag or path and says how to fix it; exit 2 for usage, 1 for
//! a failure while running; never a backtrace, even with `RUST_BACKTRACE`.

use std::process::{Command, Output};

fn foundation(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_foundation"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("FOUNDATION_SECRET")
        .output()
        .expect("runs foundation")
}

/// A loopback port with nothing listening (bound, then released).
#[allow(clippy::disallowed_methods)] // a test's own probe, not cluster code
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Runs `args` and checks the exit code, the one line and what it names.
fn expect_error(args: &[&str], code: i32, names: &[&str]) {
    let out = foundation(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    let line = err.trim();
    assert!(line.starts_with("error: "), "{args:?}: not `error: ...`: {err}");
    assert_eq!(line.lines().count(), 1, "{args:?}: one line, not {err}");
    assert!(!err.contains("Error:") && !err.contains("backtrace") && !err.contains("Caused by"), "{args:?}: {err}");
    for name in names {
        assert!(line.contains(name), "{args:?}: the message should name {name}: {err}");
    }
    // The fix: a hint to act on, after what went wrong.
    assert!(
        ["--help", "use ", "give ", "pass ", "choose ", "start ", "run ", "check ", "set ", "fix "].iter().any(|h| line.contains(h)),
        "{args:?}: the message should say how to fix it: {err}"
    );
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_missing_required_flag_is_named() {
    expect_error(&["node"], 2, &["--name", "--id", "foundation node --help"]);
    expect_error(&["node", "--name", "a"], 2, &["--id"]);
    expect_error(&["status"], 2, &["--http", "foundation status --help"]);
    expect_error(&["check"], 2, &["<HISTORY>", "foundation check --help"]);
    expect_error(&["chaos", "--seed"], 2, &["--seed"]);
    expect_error(&["bench", "--only"], 2, &["--only"]);
}

#[test]
fn a_bad_value_names_the_flag() {
    expect_error(&["node", "--name", "a", "--id", "one"], 2, &["--id", "one"]);
    expect_error(&["node", "--name", "a", "--id", "1", "--peer", "garbage"], 2, &["--peer", "garbage"]);
    expect_error(
        &["node", "--name", "a", "--id", "1", "--secret", "short"],
        2,
        &["--secret", "5 bytes", "32", "foundation secret generate"],
    );
    expect_error(&["status", "--http", "not an address"], 2, &["--http", "not an address"]);
    expect_error(&["status", "--http", "127.0.0.1:8001", "--wait", "soon"], 2, &["--wait", "soon"]);
    expect_error(&["chaos", "--nodes", "0"], 2, &["--nodes"]);
    expect_error(&["chaos", "--backend", "cloud"], 2, &["--backend", "sim, inprocess, processes"]);
    expect_error(&["bench", "--runs", "0"], 2, &["--runs"]);
    let node = ["node", "--name", "a", "--id", "1", "--listen", "127.0.0.1:0", "--secret", "a-long-enough-secret-0123456789-0123456789"];
    expect_error(&[&node[..], &["--otlp-endpoint", "https://collector:4318"]].concat(), 2, &["--otlp-endpoint", "https is not supported"]);
    let out = foundation(&[&node[..], &["--otlp-endpoint", "http://u:hunter2@collector:4318"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("OTEL_EXPORTER_OTLP_HEADERS") && !err.contains("hunter2"), "{err}");
    expect_error(&["chaos", "--backend", "sim", "--otlp-endpoint", "http://127.0.0.1:4318"], 2, &["--otlp-endpoint", "inprocess"]);
    expect_error(&["bench", "--only", "nope."], 2, &["--only", "nope."]);
    let bad = std::env::temp_dir().join(format!("foundation-errors-bad-{}.jsonl", std::process::id()));
    std::fs::write(&bad, "{\"process\": 1, \"type\": \"invoke\"\n").expect("write");
    let path = bad.to_str().expect("utf-8");
    expect_error(&["check", path], 2, &[path, "line 1"]);
    let _ = std::fs::remove_file(&bad);
}

#[test]
fn an_unreadable_path_is_named() {
    expect_error(&["check", "/no/such/history.jsonl"], 2, &["/no/such/history.jsonl"]);
    expect_error(&["chaos", "--report", "/proc/foundation-cannot-write-here"], 2, &["--report", "/proc/foundation-cannot-write-here"]);
    let node = ["node", "--name", "a", "--id", "1", "--listen", "127.0.0.1:0"];
    expect_error(
        &[&node[..], &["--secret", "a-long-enough-secret-0123456789-0123456789", "--data-dir", "/proc/foundation-no/d"]].concat(),
        2,
        &["--data-dir", "/proc/foundation-no/d"],
    );
    expect_error(
        &[&node[..], &["--secret-file", "/proc/foundation-no/secret"]].concat(),
        2,
        &["--secret-file", "/proc/foundation-no/secret"],
    );
}

#[test]
fn a_failure_while_running_exits_1_in_the_same_style() {
    // Nothing listens there: status waits --wait seconds, then says so.
    let addr = format!("127.0.0.1:{}", closed_port());
    expect_error(&["status", "--http", &addr, "--wait", "1"], 1, &[&addr]);
    // The cluster address is taken: the node cannot start.
    #[allow(clippy::disallowed_methods)] // a test holding a port, not cluster code
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = taken.local_addr().expect("addr").to_string();
    expect_error(
        &["node", "--name", "a", "--id", "1", "--secret", "a-long-enough-secret-0123456789-0123456789", "--listen", &listen],
        1,
        &[&listen],
    );
}
