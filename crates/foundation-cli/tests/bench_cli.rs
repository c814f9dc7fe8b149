//! `foundation bench` end to end: the JSON line contract and bad input.

use std::process::Command;

fn foundation() -> Command {
    Command::new(env!("CARGO_BIN_EXE_foundation"))
}

#[test]
fn json_lines_follow_the_contract() {
    let out =
        foundation().args(["bench", "--only", "process.idle_bytes", "--quick", "--json", "--runs", "1"]).output().expect("run foundation");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one bench selected, one line: {stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON object");
    assert_eq!(v["bench"], "process.idle_bytes");
    assert_eq!(v["unit"], "B");
    let bytes = v["value"].as_f64().expect("a number");
    assert!(bytes > 64.0 && bytes < 4096.0, "an idle process costs some bytes, not kilobytes: {bytes}");
    assert_eq!(v.as_object().map(|o| o.len()), Some(3), "exactly bench, value, unit");
}

#[test]
fn the_table_says_whether_each_target_was_met() {
    let out = foundation().args(["bench", "--only", "process.idle_bytes", "--quick", "--runs", "1"]).output().expect("run foundation");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one bench: {stdout}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["bench", "median", "unit", "target", "met?"], "{stdout}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!((row[0], row[2], row[3], row[4]), ("process.idle_bytes", "B", "<=", "512"), "{stdout}");
    let bytes: f64 = row[1].replace(',', "").parse().expect("a number");
    assert_eq!(row[5], if bytes <= 512.0 { "met" } else { "MISSED" }, "{stdout}");
}

#[test]
fn unknown_prefix_is_an_error_that_says_what_to_do() {
    let out = foundation().args(["bench", "--only", "nope."]).output().expect("run foundation");
    assert_eq!(out.status.code(), Some(2), "a bad --only value is a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no bench name starts with") && stderr.contains("nope."), "{stderr}");
}

#[test]
fn several_prefixes_select_the_union_in_run_order() {
    let only = "process.migrating_idle_bytes,process.idle_bytes";
    let out = foundation().args(["bench", "--only", only, "--quick", "--json", "--runs", "1"]).output().expect("run foundation");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let names: Vec<String> =
        stdout.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON object")["bench"].to_string()).collect();
    assert_eq!(names, ["\"process.idle_bytes\"", "\"process.migrating_idle_bytes\""], "{stdout}");
    let out = foundation().args(["bench", "--only", "process.idle_bytes,nope."]).output().expect("run foundation");
    assert_eq!(out.status.code(), Some(2), "one prefix that names nothing is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope.\""), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Scratch directories of this bench run's benches whose process ended.
fn scratch_of(tmp: &std::path::Path, pid: u32) -> Vec<std::path::PathBuf> {
    let mine = |name: &str| name.starts_with("foundation-bench-") && name.contains(&format!("-{pid}-"));
    std::fs::read_dir(tmp).expect("temp dir").flatten().filter(|e| mine(&e.file_name().to_string_lossy())).map(|e| e.path()).collect()
}

#[test]
fn a_killed_bench_leaves_scratch_data_that_the_next_bench_removes() {
    let tmp = std::env::temp_dir().join(format!("foundation-cli-test-scratch-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("test temp dir");
    let mut killed = foundation()
        .args(["bench", "--only", "disk.fdatasync", "--runs", "50"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run foundation");
    let pid = killed.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while scratch_of(&tmp, pid).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the bench made no scratch directory within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    killed.kill().expect("kill the bench");
    killed.wait().expect("reap the bench");
    assert!(!scratch_of(&tmp, pid).is_empty(), "a killed bench cannot clean up after itself");
    let out = foundation()
        .args(["bench", "--only", "disk.fdatasync", "--quick", "--runs", "1"])
        .env("TMPDIR", &tmp)
        .output()
        .expect("run foundation");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let left = scratch_of(&tmp, pid);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(left.is_empty(), "the next bench removes a dead bench's scratch data: {left:?}");
}

#[test]
fn bad_runs_value_is_refused_by_the_parser() {
    let out = foundation().args(["bench", "--runs", "0"]).output().expect("run foundation");
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
}
