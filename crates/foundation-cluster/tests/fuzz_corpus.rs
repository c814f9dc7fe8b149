//! The fuzz corpora replayed on stable: every file of `fuzz/corpus/<target>/`
//! (the minimized corpus of the campaign, crashes that were fixed, the
//! seeds) runs through the target's function, as `cargo fuzz` runs it.
//! A panic here is a bug the fuzzer found or would find.

use std::path::{Path, PathBuf};

use foundation_cluster::fuzzing;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("a corpus file"))).collect()
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = corpus(target);
    let seeds: Vec<_> = fuzzing::seeds().into_iter().filter(|(t, _, _)| *t == target).collect();
    assert!(!files.is_empty() && !seeds.is_empty(), "{target}: a corpus and seeds");
    for (path, data) in &files {
        eprintln!("{target}: {}", path.display());
        run(data);
    }
    for (_, name, data) in &seeds {
        run(data);
        let on_disk = files.iter().any(|(p, d)| p.file_name().is_some_and(|f| f == name.as_str()) && d == data);
        assert!(on_disk, "{target}: seed {name} is in the corpus as it is built (run the ignored test write_seeds)");
    }
}

#[test]
fn frame() {
    replay("frame", fuzzing::frame);
}

#[test]
fn seal() {
    replay("seal", fuzzing::seal);
}

#[test]
fn handshake_acceptor() {
    replay("handshake_acceptor", fuzzing::handshake_acceptor);
}

#[test]
fn handshake_dialer() {
    replay("handshake_dialer", fuzzing::handshake_dialer);
}

#[test]
fn header() {
    replay("header", fuzzing::header);
}

#[test]
fn admin() {
    replay("admin", fuzzing::admin);
}

/// Writes the seeds into `fuzz/corpus/` (run after changing them).
#[test]
#[ignore]
fn write_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (target, name, data) in fuzzing::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(name), data).expect("seed written");
    }
}
