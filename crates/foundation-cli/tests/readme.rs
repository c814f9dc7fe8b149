//! The README's examples, extracted and run as a newcomer would paste them:
//! every JSON Lines history it shows is accepted by `foundation check`, and
//! the "real cluster by hand" script starts three nodes, waits for them with
//! `foundation status`, writes and reads a key.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fenced code block: the heading it sits under, the paragraph just
/// before it, its language, its text.
struct Block {
    heading: String,
    before: String,
    lang: String,
    text: String,
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut paragraph = String::new();
    let mut open: Option<Block> = None;
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```");
        if let Some(b) = open.as_mut() {
            if fence {
                out.extend(open.take());
            } else {
                b.text.push_str(line);
                b.text.push('\n');
            }
        } else if fence {
            let lang = line.trim_start().trim_start_matches('`').trim().to_owned();
            open = Some(Block { heading: heading.clone(), before: std::mem::take(&mut paragraph), lang, text: String::new() });
        } else if line.starts_with('#') {
            heading = line.trim_start_matches('#').trim().to_owned();
            paragraph.clear();
        } else if line.trim().is_empty() {
            paragraph.clear();
        } else {
            paragraph.push_str(line);
            paragraph.push(' ');
        }
    }
    assert!(open.is_none(), "an unclosed code block in the README");
    out
}

fn foundation_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_foundation")).parent().expect("the binary's directory").to_owned()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foundation-readme-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A block is a history when every line that is not blank or a comment is
/// an event object.
fn is_history(b: &Block) -> bool {
    let lines: Vec<&str> = b.text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    !lines.is_empty() && lines.iter().all(|l| l.starts_with("{\"process\""))
}

/// Every history the README shows gets a verdict from `foundation check`
/// (never exit 2, bad input): linearizable (exit 0), or not (exit 1) when
/// the paragraph before it says "not linearizable".
#[test]
fn every_history_in_the_readme_is_accepted_by_check() {
    let histories: Vec<Block> = blocks(&readme()).into_iter().filter(is_history).collect();
    assert!(!histories.is_empty(), "the README shows a history for `foundation check`");
    let dir = scratch("check");
    for (i, b) in histories.iter().enumerate() {
        let path = dir.join(format!("example-{i}.jsonl"));
        std::fs::write(&path, &b.text).expect("write the example");
        let out = Command::new(env!("CARGO_BIN_EXE_foundation")).arg("check").arg(&path).output().expect("runs check");
        let expected = if b.before.to_lowercase().contains("not linearizable") { 1 } else { 0 };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "the history under \"{}\" is refused:\n{}{}",
            b.heading,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A free loopback port outside the ephemeral range (an outgoing
/// connection cannot take it before the node binds it).
fn free_port() -> u16 {
    foundation_testkit::cluster::free_ports(1).expect("a free port")[0]
}

/// Stops a process group on drop (the script's background nodes with it).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill").args([signal, "--", &format!("-{}", self.0)]).stderr(Stdio::null()).status();
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[test]
fn the_cluster_script_runs_as_pasted() {
    let script = blocks(&readme())
        .into_iter()
        .find(|b| b.lang == "sh" && b.heading.contains("real cluster") && b.text.contains("foundation node"))
        .expect("the README's \"A real cluster by hand\" script")
        .text;
    assert!(script.contains("foundation status"), "the script waits for the cluster with `foundation status`");
    // The README's ports, moved to free ones so that runs can overlap.
    let mut script = script;
    for i in 1..=3 {
        script = script.replace(&format!("127.0.0.1:700{i}"), &format!("127.0.0.1:{}", free_port()));
        script = script.replace(&format!("127.0.0.1:800{i}"), &format!("127.0.0.1:{}", free_port()));
    }
    let dir = scratch("cluster");
    let path = format!("{}:{}", foundation_dir().display(), std::env::var("PATH").unwrap_or_default());
    // Output to files, not pipes: the background nodes would hold a pipe
    // open after the script ends.
    let (out_file, err_file) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new("bash")
        .args(["-e", "-c", &script])
        .current_dir(&dir)
        .env("PATH", path)
        .env_remove("FOUNDATION_SECRET")
        .stdout(std::fs::File::create(&out_file).expect("stdout file"))
        .stderr(std::fs::File::create(&err_file).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("runs bash");
    let group = Group(child.id());
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the script did not finish in 90 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(group);
    let stdout = std::fs::read_to_string(&out_file).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    assert!(status.success(), "the script failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("operational true"), "status waited for an operational cluster:\n{stdout}\n{stderr}");
    assert!(stdout.contains(r#""value":"hello""#), "the key written through n2 is read on n3:\n{stdout}\n{stderr}");
    assert!(dir.join("data/n1/identity.json").exists(), "the nodes keep their state in data/");
    let _ = std::fs::remove_dir_all(&dir);
}
