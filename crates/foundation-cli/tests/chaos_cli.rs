//! `foundation chaos` end to end: each backend with a short duration, the
//! `--json` schema, replay by seed, the report directory, and bad input.

use std::process::{Command, Output};

fn chaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_foundation")).arg("chaos").args(args).output().expect("runs foundation chaos")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn assert_passed(out: &Output) -> serde_json::Value {
    let report = json(out);
    assert_eq!(out.status.code(), Some(0), "{report:#}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report["passed"], true);
    report
}

const SHORT: &[&str] = &["--duration", "10", "--seed", "5", "--json"];

#[test]
fn a_simulated_run_passes_has_the_schema_and_replays_byte_for_byte() {
    let args: Vec<&str> = [&["--backend", "sim"], SHORT].concat();
    let first = chaos(&args);
    let r = assert_passed(&first);
    for key in ["seed", "backend", "nodes", "duration_s", "rate", "success_rate", "message_success_rate", "fault_errors", "faults_needed"] {
        assert!(r[key].is_number() || r[key].is_string(), "{key} in {r:#}");
    }
    for key in ["ok", "failed", "unknown", "total"] {
        assert!(r["operations"][key].is_u64(), "operations.{key}");
    }
    assert!(r["latency_ms"]["p50"].is_number() && r["latency_ms"]["p99"].is_number());
    assert!(r["faults_injected"].is_object());
    assert_eq!(r["linearizable"], true);
    assert!(r["convergence_ms"].is_number());
    for key in ["success_rate", "failures_injected", "linearizable", "converged"] {
        assert_eq!(r["checks"][key], true, "checks.{key}");
    }
    assert_eq!(r["seed"], 5);
    assert!(r["replay"].as_str().expect("replay").contains("--backend sim --seed 5"));
    let second = chaos(&args);
    assert_eq!(first.stdout, second.stdout, "one seed, one report");
    let other = chaos(&["--backend", "sim", "--duration", "10", "--seed", "6", "--json"]);
    assert_ne!(first.stdout, other.stdout);
}

#[test]
fn an_in_process_run_passes() {
    assert_passed(&chaos(&[&["--backend", "inprocess"], SHORT].concat()));
}

#[test]
fn a_run_of_os_processes_passes() {
    let out = chaos(&[&["--backend", "processes", "--faults", "partition,crash_restart,kill_process,swizzle_clog"], SHORT].concat());
    assert_passed(&out);
}

#[test]
fn the_report_directory_holds_html_a_parsable_svg_and_a_checkable_history() {
    let dir = std::env::temp_dir().join(format!("foundation-chaos-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = chaos(&["--backend", "sim", "--duration", "10", "--seed", "9", "--report", dir.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verdict        PASS") && text.contains("replay"), "{text}");
    let svg = std::fs::read_to_string(dir.join("timeline.svg")).expect("timeline.svg");
    let doc = roxmltree::Document::parse(&svg).expect("the SVG parses");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(doc.descendants().any(|n| n.has_tag_name("polyline")), "throughput and latency lines");
    assert!(doc.descendants().filter(|n| n.has_tag_name("rect")).count() > 2, "fault intervals are shaded");
    let in_group = |class: &str, tag: &str| {
        doc.descendants().filter(|n| n.attribute("class") == Some(class)).flat_map(|g| g.children()).filter(|c| c.has_tag_name(tag)).count()
    };
    assert!(in_group("ticks-ops", "text") >= 3 && in_group("ticks-latency", "text") >= 3, "both y-axes have ticks");
    assert!(in_group("grid", "line") >= 3, "gridlines");
    let ops_line = doc.descendants().find(|n| n.attribute("class") == Some("ops")).expect("the throughput line");
    let points = ops_line.attribute("points").unwrap_or_default().split_whitespace().count();
    assert_eq!(points, 10, "one point per whole second of the 10 s run, no partial last second");
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    assert!(html.contains("PASS"));
    assert!(html.contains("<svg") && !html.contains("<img"), "the timeline is inline: the page alone shows it");
    assert!(html.contains("simulated run with the same seed"), "the replay line says what it replays");
    assert!(html.contains("<th>nemesis</th><th>detail</th>"), "a fault table with details under the plot");
    assert!(!dir.join("history.json").exists(), "the history is JSON Lines: history.jsonl");
    let check = Command::new(env!("CARGO_BIN_EXE_foundation"))
        .args(["check", dir.join("history.jsonl").to_str().expect("utf-8")])
        .output()
        .expect("runs check");
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_one_line_with_the_fix_and_exit_2() {
    for args in [
        vec!["--no-such-option"],
        vec!["--nodes", "0"],
        vec!["--duration", "0"],
        vec!["--faults", "meteor"],
        vec!["--faults", "majorities_ring", "--nodes", "3"],
        vec!["--backend", "cloud"],
        vec!["--report", "/proc/foundation-cannot-write-here"],
    ] {
        let out = chaos(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line, not {err}");
    }
    let err = String::from_utf8_lossy(&chaos(&["--backend", "cloud"]).stderr).into_owned();
    assert!(err.contains("sim, inprocess, processes"), "the fix is in the line: {err}");
}

/// Processes whose command line mentions `needle` (the scratch directory
/// of a run's nodes).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn ctrl_c_stops_the_cluster_and_leaves_nothing_behind() {
    let tmp = std::env::temp_dir().join(format!("foundation-chaos-interrupt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("scratch");
    let mut child = Command::new(env!("CARGO_BIN_EXE_foundation"))
        .args(["chaos", "--backend", "processes", "--duration", "120", "--seed", "3"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let needle = tmp.to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    while processes_mentioning(&needle).len() < 3 {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the nodes did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(kill.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "chaos did not stop after SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("read stderr");
    assert!(err.starts_with("foundation chaos: starting") && err.contains("seed 3"), "the seed comes first: {err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(last.contains("interrupted") && last.contains("--seed 3"), "the seed is not lost on Ctrl-C: {err}");
    assert_eq!(processes_mentioning(&needle), Vec::<u32>::new(), "node processes left behind");
    let left: Vec<_> = std::fs::read_dir(&tmp).expect("tmp").flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn without_a_terminal_a_start_line_then_progress_every_5_s_go_to_stderr() {
    // Output is piped here, as in CI or a log.
    let out = chaos(&["--backend", "sim", "--duration", "12", "--seed", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].starts_with("foundation chaos: starting 3 nodes (sim), 12 s, seed 4"), "{err}");
    assert!(lines[1].contains("replay") && lines[1].contains("foundation chaos --backend sim --seed 4"), "{err}");
    let progress: Vec<&&str> = lines.iter().filter(|l| l.starts_with("  progress")).collect();
    assert_eq!(progress.len(), 2, "one line at 5 s and one at 10 s: {err}");
    assert!(progress[0].contains(" 5 s / 12 s") && progress[1].contains("10 s / 12 s"), "{err}");
    assert!(progress.iter().all(|l| l.contains("operations recorded") && l.contains("fault actions")), "{err}");
    // The report itself stays on stdout.
    assert!(String::from_utf8_lossy(&out.stdout).contains("verdict        PASS"));
}

#[test]
fn the_report_counts_add_up_with_the_history_and_the_check() {
    let dir = std::env::temp_dir().join(format!("foundation-chaos-counts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = chaos(&["--backend", "sim", "--duration", "10", "--seed", "12", "--json", "--report", dir.to_str().expect("utf-8")]);
    let r = assert_passed(&out);
    let ops = &r["operations"];
    let n = |k: &str| ops[k].as_u64().unwrap_or_else(|| panic!("operations.{k} in {r:#}"));
    assert_eq!(n("ok") + n("cas_mismatch") + n("failed") + n("unknown"), n("total"), "{ops}");
    // The history says the same, line by line.
    let history = std::fs::read_to_string(dir.join("history.jsonl")).expect("history.jsonl");
    let mut by_type = std::collections::BTreeMap::<String, u64>::new();
    let mut checkable = 0;
    for line in history.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("a JSON event");
        let kind = e["type"].as_str().expect("type");
        checkable += u64::from(kind == "ok" || kind == "info");
        // The KV workload's keys: k0, k1, ... (the services' have a `/`).
        if e["key"].as_str().is_some_and(|k| k.starts_with('k') && !k.contains('/')) {
            *by_type.entry(kind.to_owned()).or_default() += 1;
        }
    }
    let count = |t: &str| by_type.get(t).copied().unwrap_or(0);
    assert_eq!(count("invoke"), n("total"), "{by_type:?}");
    assert_eq!(count("ok"), n("ok"), "{by_type:?}");
    assert_eq!(count("fail"), n("cas_mismatch") + n("failed"), "{by_type:?}");
    assert_eq!(count("info"), n("unknown"), "{by_type:?}");
    assert!(n("cas_mismatch") > 0, "this seed has compare-and-sets that found another value: {ops}");
    // `check` counts what may have happened (ok and unknown), of every
    // workload in the history.
    assert_eq!(n("checked"), checkable, "{ops}");
    assert!(n("checked") >= n("ok") + n("unknown"), "{ops}");
    let check = Command::new(env!("CARGO_BIN_EXE_foundation")).arg("check").arg(dir.join("history.jsonl")).output().expect("runs check");
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.starts_with(&format!("linearizable: {} operations", n("checked"))), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_seed_sweep_prints_each_failing_seed_with_its_replay() {
    // clock_skew breaks lease exclusion (a known design bug: leases are
    // judged by the proposer's clock; see the nemesis table in the README)
    // on every one of seeds 40-49 in 10 s runs (in 5 s runs, not on 40 and
    // 41 since the storage changes moved the schedule): two failing seeds,
    // each with its replay line.
    let out = chaos(&["--backend", "sim", "--seeds", "2", "--seed", "40", "--duration", "10", "--faults", "clock_skew"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for seed in [40, 41] {
        assert!(text.contains(&format!("seed {seed} FAIL (locks")), "{text}");
        assert!(text.contains(&format!("replay: foundation chaos --backend sim --seed {seed} --nodes 3 --duration 10")), "{text}");
    }
    assert!(text.trim_end().ends_with("2 seeds from 40: 2 failed [40, 41]"), "{text}");
    let out = chaos(&["--backend", "sim", "--seeds", "2", "--duration", "10", "--faults", "partition,crash_restart"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text.trim(), "2 seeds from 0: 0 failed []");
    let out = chaos(&["--seeds", "3"]);
    assert_eq!(out.status.code(), Some(2), "a sweep replays seeds in simulation only");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--backend sim"));
}

/// `--observe`: the page, then a stream of views while the run runs (the
/// timeline so far as SVG) and its verdict at the end.
#[test]
fn a_run_is_drawn_live_then_its_verdict() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = foundation_testkit::ports::free_ports(1).expect("a free port")[0];
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_foundation"))
        .args(["chaos", "--backend", "inprocess", "--duration", "6", "--seed", "5", "--observe", &addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let seen = runtime.block_on(async {
        let net = foundation::rt::TokioNetwork;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut stream = loop {
            match foundation::rt::Network::connect(&net, &addr).await {
                Ok(s) => break s,
                Err(e) => assert!(tokio::time::Instant::now() < deadline, "the page never came up: {e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let (code, page) = foundation_cluster::admin::client::request(&addr, None, "GET", "/", b"").await.expect("the page");
        assert!(code == 200 && page.contains("EventSource(\"/events\")"), "{code} {page}");
        stream.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.expect("asks");
        let mut text = String::new();
        while !text.contains("\"state\":\"done\"") {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await.expect("the verdict in time").expect("reads");
            assert!(n > 0, "the stream ended before the verdict: {text}");
            text.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        text
    });
    let out = child.wait_with_output().expect("ends");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let running = seen.matches("\"state\":\"running\"").count();
    assert!(running >= 2, "{running} live views");
    assert!(seen.contains("<polyline class=\\\"ops\\\""), "the live views hold the plot");
    assert!(seen.contains("verdict        PASS") && seen.contains("\"passed\":true"), "the verdict, as printed");
}

#[test]
fn the_live_view_is_for_this_host_and_one_run() {
    let out = chaos(&["--observe", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = chaos(&["--backend", "sim", "--seeds", "2", "--observe", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--observe"));
}
