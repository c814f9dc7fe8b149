//! A migrating pool keeps an idle scheduler fed. Alone in its own test
//! binary: the split it checks is of two scheduler threads that share the
//! machine's cores, and the other pool tests, run beside it on the same
//! cores, took CPU from one of them (the split fell to 1,272 and 728).

mod common;

use foundation::rt::{RtConfig, SchedulerPool, Spawner};
use foundation::{Node, NodeConfig};

fn migrating_node(schedulers: usize) -> Node {
    let rt = RtConfig { spawner: Spawner::Pool(SchedulerPool::migrating(schedulers).expect("scheduler threads")), ..RtConfig::default() };
    Node::with_config(NodeConfig { name: "fed".into(), rt, ..NodeConfig::default() }).expect("valid config")
}

/// Work items of a fan-out from one process on a fresh migrating pool of
/// two, per scheduler: (0, 1).
fn fan_out_split() -> (usize, usize) {
    let threads: Vec<String> = common::fan_out(&migrating_node(2), WORKERS, ITEMS).into_iter().flatten().collect();
    let on = |s: &str| threads.iter().filter(|n| n.as_str() == s).count();
    let split = (on("foundation-sched-0"), on("foundation-sched-1"));
    assert_eq!(split.0 + split.1, WORKERS * ITEMS, "{threads:?}");
    split
}

const WORKERS: usize = 400;
const ITEMS: usize = 10;

/// The idle scheduler is kept fed, not just started: in a fan-out from one
/// process, each scheduler runs at least 47 % of the 4,000 work items, in
/// one of five tries. Exporting used to stop as soon as the other
/// scheduler was busy and start again once it idled: in twelve quiet runs
/// the less used scheduler ran 1,390–1,803 items (35–45 %); fed,
/// 1,956–2,000 (49–50 %). Five tries, because the split is of two
/// threads that share the machine's cores: beside a thread spinning on one
/// core, the fed pool's split was 1,563–1,977 (39–49 %), three of eight
/// runs over 47 %. (Alone in its test binary for the same reason: the
/// other pool tests beside it took it to 1,272 and 728.)
#[test]
fn an_idle_scheduler_is_kept_fed_until_the_work_is_shared() {
    let mut splits = Vec::new();
    for _ in 0..5 {
        let (zero, one) = fan_out_split();
        splits.push((zero, one));
        if zero.min(one) * 100 >= WORKERS * ITEMS * 47 {
            return;
        }
    }
    panic!("no try shared the work items 47/53 or better: {splits:?}");
}
