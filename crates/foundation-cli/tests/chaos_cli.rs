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
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    assert!(html.contains("timeline.svg") && html.contains("PASS"));
    let check = Command::new(env!("CARGO_BIN_EXE_foundation"))
        .args(["check", dir.join("history.json").to_str().expect("utf-8")])
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
        .stderr(std::process::Stdio::null())
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
    assert_eq!(processes_mentioning(&needle), Vec::<u32>::new(), "node processes left behind");
    let left: Vec<_> = std::fs::read_dir(&tmp).expect("tmp").flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}
