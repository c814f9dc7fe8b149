//! The checker on hand-written histories (linearizable and not, including
//! the tricky cases: concurrency, unknown outcomes, failed writes, cas), on
//! malformed input, and on a 10,000-operation history.

use std::fmt::Write as _;
use std::time::Instant;

use foundation_testkit::linearizability::{OpKind, Verdict, check_history};

/// Builds a history from `(process, type, f, value, time)` on key "x".
fn h(events: &[(u64, &str, &str, &str, u64)]) -> String {
    events.iter().fold(String::new(), |mut s, (p, t, f, v, time)| {
        let value = if v.is_empty() { String::new() } else { format!(r#", "value": {v}"#) };
        let _ = writeln!(s, r#"{{"process": {p}, "type": "{t}", "f": "{f}", "key": "x"{value}, "time": {time}}}"#);
        s
    })
}

fn linearizable(events: &[(u64, &str, &str, &str, u64)]) -> bool {
    match check_history(&h(events)).expect("well formed").verdict {
        Verdict::Linearizable => true,
        Verdict::NotLinearizable { .. } => false,
        unknown @ Verdict::Unknown { .. } => panic!("a small history got no verdict: {unknown:?}"),
    }
}

#[test]
fn sequential_histories() {
    assert!(linearizable(&[
        (1, "invoke", "write", "1", 0),
        (1, "ok", "write", "1", 1),
        (2, "invoke", "read", "", 2),
        (2, "ok", "read", "1", 3)
    ]));
    // A read of the initial (absent) value.
    assert!(linearizable(&[(1, "invoke", "read", "", 0), (1, "ok", "read", "null", 1)]));
    // A stale read after a completed write.
    assert!(!linearizable(&[
        (1, "invoke", "write", "1", 0),
        (1, "ok", "write", "1", 1),
        (1, "invoke", "write", "2", 2),
        (1, "ok", "write", "2", 3),
        (2, "invoke", "read", "", 4),
        (2, "ok", "read", "1", 5),
    ]));
}

#[test]
fn concurrency_allows_either_order() {
    // A read concurrent with a write may see the old or the new value.
    for seen in ["null", "1"] {
        assert!(linearizable(&[
            (1, "invoke", "write", "1", 0),
            (2, "invoke", "read", "", 1),
            (2, "ok", "read", seen, 2),
            (1, "ok", "write", "1", 3)
        ]));
    }
    // But two sequential reads cannot see new then old.
    assert!(!linearizable(&[
        (1, "invoke", "write", "1", 0),
        (2, "invoke", "read", "", 1),
        (2, "ok", "read", "1", 2),
        (3, "invoke", "read", "", 3),
        (3, "ok", "read", "null", 4),
        (1, "ok", "write", "1", 5),
    ]));
}

#[test]
fn unknown_outcomes_may_or_may_not_take_effect() {
    // An `info` write: a later read may see it...
    assert!(linearizable(&[
        (1, "invoke", "write", "5", 0),
        (1, "info", "write", "5", 1),
        (2, "invoke", "read", "", 10),
        (2, "ok", "read", "5", 11)
    ]));
    // ...or not...
    assert!(linearizable(&[
        (1, "invoke", "write", "5", 0),
        (1, "info", "write", "5", 1),
        (2, "invoke", "read", "", 10),
        (2, "ok", "read", "null", 11)
    ]));
    // ...even long after it was invoked (it may take effect at any time after).
    assert!(linearizable(&[
        (1, "invoke", "write", "5", 0),
        (1, "info", "write", "5", 1),
        (2, "invoke", "read", "", 10),
        (2, "ok", "read", "null", 11),
        (2, "invoke", "read", "", 12),
        (2, "ok", "read", "5", 13),
    ]));
    // But not before it was invoked.
    assert!(!linearizable(&[
        (2, "invoke", "read", "", 0),
        (2, "ok", "read", "5", 1),
        (1, "invoke", "write", "5", 2),
        (1, "info", "write", "5", 3)
    ]));
    // An invoke never completed is unknown too.
    assert!(linearizable(&[(1, "invoke", "write", "7", 0), (2, "invoke", "read", "", 5), (2, "ok", "read", "7", 6)]));
}

#[test]
fn failed_operations_did_not_happen() {
    assert!(!linearizable(&[
        (1, "invoke", "write", "9", 0),
        (1, "fail", "write", "9", 1),
        (2, "invoke", "read", "", 2),
        (2, "ok", "read", "9", 3)
    ]));
}

#[test]
fn compare_and_set() {
    assert!(linearizable(&[
        (1, "invoke", "write", "1", 0),
        (1, "ok", "write", "1", 1),
        (2, "invoke", "cas", "[1, 2]", 2),
        (2, "ok", "cas", "[1, 2]", 3),
        (3, "invoke", "read", "", 4),
        (3, "ok", "read", "2", 5),
    ]));
    // Two successful cas from the same value cannot both happen.
    assert!(!linearizable(&[
        (1, "invoke", "write", "1", 0),
        (1, "ok", "write", "1", 1),
        (2, "invoke", "cas", "[1, 2]", 2),
        (3, "invoke", "cas", "[1, 3]", 2),
        (2, "ok", "cas", "[1, 2]", 3),
        (3, "ok", "cas", "[1, 3]", 3),
    ]));
}

#[test]
fn a_failing_history_names_its_key_and_a_window() {
    let mut text = h(&[(1, "invoke", "write", "1", 0), (1, "ok", "write", "1", 1)]);
    text.push_str(
        &h(&[(1, "invoke", "write", "2", 2), (1, "ok", "write", "2", 3), (2, "invoke", "read", "", 4), (2, "ok", "read", "1", 5)])
            .replace("\"x\"", "\"y\""),
    );
    let result = check_history(&text).expect("well formed");
    match result.verdict {
        Verdict::NotLinearizable { key, failed, window, .. } => {
            assert_eq!(key, "y");
            assert_eq!(failed.kind, OpKind::Read(Some(1)));
            assert!(!window.is_empty() && window.len() <= 4, "{window:?}");
            assert!(window.contains(&failed));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(result.keys, 2);
}

#[test]
fn malformed_histories_name_the_line() {
    let good = r#"{"process": 1, "type": "invoke", "f": "write", "key": "x", "value": 1, "time": 0}"#;
    let cases = [
        (format!("{good}\nnot json"), 2, "not a history event"),
        (format!("{good}\n{}", good.replace("invoke", "ok").replace("write", "read")), 2, "does not match"),
        (format!("{good}\n{good}"), 2, "invokes again"),
        (good.replace("write", "append"), 1, "unknown f"),
        (format!("# a comment\n\n{}", good.replace("\"value\": 1", "\"value\": \"one\"")), 3, "integers or null"),
        (format!("{good}\n{}", good.replace("process\": 1", "process\": 2").replace("0}", "0, \"extra\": 1}")), 2, "unknown field"),
        (format!("{good}\n{}", good.replace("process\": 1", "process\": 2").replace("invoke", "ok")), 2, "did not invoke"),
    ];
    for (bad, line, needle) in cases {
        let err = check_history(&bad).expect_err("malformed");
        assert_eq!(err.line, line, "{bad}: {err}");
        assert!(err.reason.contains(needle), "{err}");
        assert!(err.to_string().starts_with(&format!("line {line}:")));
    }
}

/// A 10,000-operation history on 10 keys from a simulated concurrent
/// register: each operation takes effect at a point inside its interval,
/// in the order of those points, so the history is linearizable.
pub fn big_history(ops: usize, keys: u64, seed: u64) -> String {
    let mut rng = seed;
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // Effects happen at strictly increasing times; each op's interval is
    // [effect - a, effect + b].
    let mut values = vec![None::<i64>; keys as usize];
    let mut events: Vec<(u64, usize, String)> = Vec::new();
    for i in 0..ops as u64 {
        let effect = 10 * (i + 1);
        let invoke = effect - rand(25).min(effect);
        let complete = effect + rand(25);
        let key = rand(keys) as usize;
        let show = |v: Option<i64>| v.map_or("null".to_owned(), |v| v.to_string());
        let (f, value_in, value_out) = match rand(3) {
            0 => {
                values[key] = Some(i as i64);
                ("write", i.to_string(), i.to_string())
            }
            1 => ("read", String::new(), show(values[key])),
            _ => {
                let before = show(values[key]);
                values[key] = Some(i as i64);
                ("cas", format!("[{before}, {i}]"), format!("[{before}, {i}]"))
            }
        };
        let v_in = if value_in.is_empty() { String::new() } else { format!(r#", "value": {value_in}"#) };
        events.push((invoke, 0, format!(r#"{{"process": {i}, "type": "invoke", "f": "{f}", "key": "k{key}"{v_in}, "time": {invoke}}}"#)));
        events.push((
            complete,
            1,
            format!(r#"{{"process": {i}, "type": "ok", "f": "{f}", "key": "k{key}", "value": {value_out}, "time": {complete}}}"#),
        ));
    }
    events.sort_by_key(|(t, kind, _)| (*t, *kind));
    events.into_iter().map(|(_, _, l)| l + "\n").collect()
}

#[test]
fn ten_thousand_operations_on_ten_keys() {
    let text = big_history(10_000, 10, 0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let result = check_history(&text).expect("well formed");
    let took = started.elapsed();
    assert_eq!(result.verdict, Verdict::Linearizable);
    assert_eq!((result.ops, result.keys), (10_000, 10));
    eprintln!("checked 10,000 operations on 10 keys in {took:?} ({} states)", result.states);
    // One read of a value never written breaks it, and the checker says where.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = lines.iter().position(|l| l.contains(r#""type": "ok", "f": "read""#)).expect("a read");
    let (cut, time) = (lines[at].rfind("\"value\": ").expect("a value"), lines[at].rfind("\"time\"").expect("a time"));
    lines[at] = format!("{}\"value\": 999999, {}", &lines[at][..cut], &lines[at][time..]);
    let result = check_history(&lines.join("\n")).expect("well formed");
    match result.verdict {
        Verdict::NotLinearizable { failed, .. } => assert_eq!(failed.kind, OpKind::Read(Some(999_999))),
        other => panic!("{other:?}"),
    }
}

/// Every order of every subset of the unknown outcomes, by brute force:
/// the definition the checker must agree with.
fn brute_force(ops: &[foundation_testkit::linearizability::Op]) -> bool {
    fn step(state: Option<i64>, kind: OpKind) -> Option<Option<i64>> {
        match kind {
            OpKind::Read(v) => (v == state).then_some(state),
            OpKind::Write(v) => Some(v),
            OpKind::Cas(e, n) => (e == state).then_some(n),
        }
    }
    fn go(ops: &[foundation_testkit::linearizability::Op], left: u32, state: Option<i64>) -> bool {
        let mandatory = |i: usize| left & (1 << i) != 0 && ops[i].ret.is_some();
        if !(0..ops.len()).any(mandatory) {
            return true;
        }
        (0..ops.len()).filter(|&x| left & (1 << x) != 0).any(|x| {
            let blocked = (0..ops.len()).any(|y| y != x && mandatory(y) && ops[y].ret.is_some_and(|r| r < ops[x].call));
            !blocked && step(state, ops[x].kind).is_some_and(|after| go(ops, left & !(1 << x), after))
        })
    }
    go(ops, (1u32 << ops.len()) - 1, None)
}

#[test]
fn the_checker_agrees_with_brute_force_on_small_random_histories() {
    use foundation_testkit::linearizability::{Limits, Op, check_with};
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let (mut yes, mut no) = (0, 0);
    for case in 0..20_000 {
        let n = 1 + rand(7) as usize;
        // Few values and times: duplicate values and ties on purpose.
        let value = |r: u64| if r == 0 { None } else { Some(r as i64) };
        let ops: Vec<Op> = (0..n)
            .map(|i| {
                let call = rand(8);
                let ret = call + rand(4);
                let kind = match rand(3) {
                    0 => OpKind::Read(value(rand(4))),
                    1 => OpKind::Write(value(rand(4))),
                    _ => OpKind::Cas(value(rand(4)), value(rand(4))),
                };
                let unknown = !matches!(kind, OpKind::Read(_)) && rand(3) == 0;
                Op { process: i as u64, key: "x".into(), kind, call, ret: (!unknown).then_some(ret), line: i + 1 }
            })
            .collect();
        let expected = brute_force(&ops);
        let got = check_with(&ops, Limits::DEFAULT).verdict;
        assert_eq!(got == Verdict::Linearizable, expected, "case {case}: {ops:#?} -> {got:?}");
        if expected { yes += 1 } else { no += 1 }
    }
    assert!(yes > 2_000 && no > 2_000, "{yes} linearizable, {no} not: the cases should cover both");
}
