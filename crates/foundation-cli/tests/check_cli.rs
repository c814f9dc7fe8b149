//! `foundation check` end to end: verdicts, the failing window, exit codes,
//! and a malformed file named by line.

use std::process::Command;

fn check(text: &str, tag: &str) -> (i32, String, String) {
    let path = std::env::temp_dir().join(format!("foundation-check-{tag}-{}.jsonl", std::process::id()));
    std::fs::write(&path, text).expect("write history");
    let out = Command::new(env!("CARGO_BIN_EXE_foundation")).arg("check").arg(&path).output().expect("run foundation check");
    let _ = std::fs::remove_file(&path);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

const OK: &str = r#"{"process": 1, "type": "invoke", "f": "write", "key": "x", "value": 1, "time": 0}
{"process": 1, "type": "ok", "f": "write", "key": "x", "value": 1, "time": 1}
{"process": 2, "type": "invoke", "f": "read", "key": "x", "time": 2}
{"process": 2, "type": "ok", "f": "read", "key": "x", "value": 1, "time": 3}
"#;

#[test]
fn verdicts_and_exit_codes() {
    let (code, out, _) = check(OK, "ok");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("linearizable: 2 operations on 1 key ("), "{out}");
    let stale = OK.replace(r#""value": 1, "time": 3"#, r#""value": 7, "time": 3"#);
    let (code, out, _) = check(&stale, "stale");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT linearizable: key \"x\"") && out.contains("read -> 7") && out.contains("failing window"), "{out}");
    let (code, _, err) = check(&format!("{OK}{{broken"), "broken");
    assert_eq!(code, 2);
    assert!(err.contains("line 5:"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_foundation")).args(["check", "/no/such/history"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}
