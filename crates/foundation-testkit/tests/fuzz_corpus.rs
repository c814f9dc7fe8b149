//! The `history` fuzz corpus replayed on stable: every file of
//! `fuzz/corpus/history/` runs through the target's function, as
//! `cargo fuzz` runs it.

use std::path::Path;

use foundation_testkit::linearizability::fuzzing;

#[test]
fn history() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/history");
    let mut seeded = false;
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let data = std::fs::read(&path).expect("a corpus file");
        seeded |= data == fuzzing::SEED.as_bytes();
        fuzzing::history(&data);
        n += 1;
    }
    assert!(n > 0 && seeded, "the corpus holds the seed history (fuzz/corpus/history/seed-history)");
    // The seed parses and is linearizable: the replay reaches the checker.
    let ops = foundation_testkit::linearizability::parse_history(fuzzing::SEED).expect("the seed parses");
    assert_eq!(foundation_testkit::linearizability::check(&ops).verdict, foundation_testkit::linearizability::Verdict::Linearizable);
}
