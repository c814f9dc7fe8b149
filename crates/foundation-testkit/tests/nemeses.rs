//! The nemeses of issue 12: what each finds, and the kit's honesty.
//!
//! Nemeses that find a bug in today's code: each bug has an `#[ignore]`d
//! test below, named after it, that fails on today's code with the failing
//! seed; the session that fixes the bug un-ignores it (and moves the
//! nemesis into `Nemesis::DEFAULT`). `slow_consumer`'s bug is fixed (issue
//! 15), and so is `big_state`'s (appends capped in bytes, snapshots in
//! chunks): their tests run.
//!
//! | nemesis | bug | replay |
//! |---|---|---|
//! | `clock_skew` | a lock lease is judged by the proposer's clock: a node whose clock is off grants a held lock | `foundation chaos --backend sim --seed 0 --duration 30 --rate 500 --faults clock_skew` |
//! | `slow_link` | none left: large values that never committed were fixed (`append_ttl`); a registry history found not linearizable was the kit's model, which did not let a name go with a cut-off node (`names_released_with_a_cut_off_node_are_in_the_model`) | `NEMESES=slow_link BACKEND=inprocess CHAOS_SEEDS=4 cargo test --release -p foundation-testkit --test nemeses explore -- --ignored --nocapture` |
//!
//! Exploration (`#[ignore]`d): `NEMESES=big_state CHAOS_SEEDS=20 cargo test
//! --release -p foundation-testkit --test nemeses explore -- --ignored
//! --nocapture` runs the Layer 4 scenario with only those nemeses and prints
//! every seed's checks (`BACKEND=inprocess` or `processes` with
//! `FOUNDATION_BIN`, `CHAOS_SECS`, `CHAOS_SEED_START` too).

use std::time::Duration;

use foundation_testkit::chaos::Nemesis;
use foundation_testkit::cluster::{Backend, ClusterSpec, RunError, cluster_size, run};
use foundation_testkit::scenario::{ChaosOutcome, ChaosRun, run_chaos};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn layer4(backend: Backend, seed: u64, faults: &[Nemesis], duration: Duration) -> Result<ChaosOutcome, String> {
    layer4_with(ClusterSpec::new(backend, cluster_size(), seed), faults, duration, 1)
}

fn layer4_with(mut spec: ClusterSpec, faults: &[Nemesis], duration: Duration, big_state_frames: usize) -> Result<ChaosOutcome, String> {
    let mut chaos = ChaosRun::new(duration);
    chaos.faults = faults.to_vec();
    chaos.big_state_frames = big_state_frames;
    spec.wall_limit = Some(chaos.wall_limit());
    run(&spec, move |cluster| async move { run_chaos(&cluster, &chaos).await }).map(|r| r.value).map_err(|e| e.to_string())
}

fn summary(o: &ChaosOutcome) -> String {
    format!(
        "{} ops {:.3}, {} faults ({} no effect) {:?}, locks {}/{} refused, services {} ops, {:?}, convergence {:?}, violations {:?}",
        o.workload.total(),
        o.workload.success_rate(),
        o.chaos.failures_injected(),
        o.chaos.no_effect(),
        o.chaos.by_kind(),
        o.locks.granted(),
        o.locks.refused(),
        o.services.total(),
        o.check.verdict,
        o.convergence,
        o.violations(),
    )
}

/// Runs `nemesis` alone for 30 simulated seconds on `seed` and asserts
/// that every check passes (what the fix of its bug must make true).
fn passes_alone(nemesis: Nemesis, seed: u64) {
    passes_alone_on(ClusterSpec::new(Backend::Simulated, cluster_size(), seed), nemesis, 1);
}

fn passes_alone_on(spec: ClusterSpec, nemesis: Nemesis, big_state_frames: usize) -> ChaosOutcome {
    let (seed, backend) = (spec.seed, spec.backend);
    let o = layer4_with(spec, &[nemesis], Duration::from_secs(30), big_state_frames).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    // Every check but the fault count: the threshold is the seed's for its
    // mix, and a slow nemesis alone (big_state holds for as long as the
    // node takes to catch up) may inject fewer.
    let checks = foundation_testkit::scenario::Checks { failures_injected: true, ..o.checks() };
    assert!(
        checks.all() && o.chaos.failures_injected() > 0,
        "seed {seed}: {:?}: {}\nreplay: foundation chaos --backend {backend} --seed {seed} --duration 30 --rate 500 --faults {nemesis}",
        o.checks(),
        summary(&o)
    );
    o
}

/// `big_state`: a follower that was down while the state grew past the
/// frame limit (1 MiB in simulation) never catches up: the leader sends the
/// entries it missed in one append (or a snapshot in one frame), which is
/// over the limit, again and again. Seed 0 failed with: "n1 had not caught
/// up 10 s after it came back (applied 47, the state was at 100) after
/// missing 1.12 MiB". Fixed (storage issue): appends are capped in bytes
/// below the frame limit and snapshots go in chunks. The storage issue's
/// test writes four frames' worth, in simulation and in process (real TCP
/// and openraft, a 1 MiB frame limit), with every acknowledged key read
/// back by the run's checks after the node's peers are killed in turn.
#[test]
fn a_follower_that_missed_a_state_past_the_frame_limit_catches_up() {
    passes_alone(Nemesis::BigState, 0);
}

#[test]
fn a_follower_that_missed_four_frames_of_state_catches_up_in_simulation() {
    four_frames_caught_up(ClusterSpec::new(Backend::Simulated, cluster_size(), 0));
}

#[test]
fn a_follower_that_missed_four_frames_of_state_catches_up_in_process() {
    let mut spec = ClusterSpec::new(Backend::InProcess, cluster_size(), 0);
    spec.frame_limit = Some(1 << 20);
    four_frames_caught_up(spec);
}

/// `big_state` at four frames passes alone, and at least one injection
/// went all the way: caught up, then read every value back with another
/// node down.
fn four_frames_caught_up(spec: ClusterSpec) {
    let o = passes_alone_on(spec, Nemesis::BigState, 4);
    let details: Vec<&str> = o.chaos.injections.iter().map(|i| i.detail.as_str()).collect();
    assert!(details.iter().any(|d| d.contains("caught up") && d.contains("read back through")), "{details:#?}");
}

/// `slow_link`: with one node down, the other two's link capped at 4 MiB/s
/// each way, values of 1 MiB (a sixteenth of a frame) never committed: a
/// leader waited for an append's answer for 30 ms (three quarters of a
/// heartbeat, openraft's `soft_ttl`) whatever its size, so an append that
/// needs 0.25 s on the link timed out and was sent again, for ever. Seed
/// 0 failed with "1 of 1 values of 1.00 MiB did not commit within 5.0 s
/// with n1's links at 4.00 MiB/s and ["n3"] down", three times in three.
/// Fixed: an append waits for its answer a heartbeat plus its bytes at
/// 1 MiB/s (`append_ttl`).
///
/// With every workload, the service workload's too: in one of four runs,
/// before its model let a name go with a cut-off node (see
/// `names_released_with_a_cut_off_node_are_in_the_model`), the check found
/// the registry's history not linearizable.
#[test]
fn values_commit_across_a_slow_link() {
    let mut spec = ClusterSpec::new(Backend::InProcess, cluster_size(), 0);
    let mut chaos = ChaosRun::new(Duration::from_secs(30));
    chaos.faults = vec![Nemesis::SlowLink];
    spec.wall_limit = Some(chaos.wall_limit());
    let o = run(&spec, move |cluster| async move { run_chaos(&cluster, &chaos).await }).map(|r| r.value).expect("the run completes");
    let checks = foundation_testkit::scenario::Checks { failures_injected: true, ..o.checks() };
    assert!(
        checks.all(),
        "{:?}: {}\nreplay: foundation chaos --backend inprocess --seed 0 --duration 30 --rate 500 --faults slow_link",
        o.checks(),
        summary(&o)
    );
    assert!(o.chaos.injections.iter().any(|i| i.nemesis == Nemesis::SlowLink && i.effective), "{:#?}", o.chaos.injections);
}

/// The registry releases the names of a node its leader has not reached
/// for `REGISTRY_DOWN_GRACE` (a crashed node never releases them itself).
/// The service workload's model did not: `slow_link`, which kills nodes
/// down to a bare majority, once in four in-process runs gave "not
/// linearizable" on `registry/chaos.r0` (a `register` from nothing
/// succeeded 2 s after another, with no `unregister` between). Here, in
/// simulation (seed 3): a name registered to a process of n3 goes when n3
/// is killed, with nobody unregistering it (what the old model ruled
/// out); then, with the service clients running while each node in turn
/// is killed for 8 s, the workload records unregisters of unknown outcome
/// at the kills and the history is linearizable.
#[test]
fn names_released_with_a_cut_off_node_are_in_the_model() {
    use foundation::Pid;
    use foundation_testkit::agent::services::ServiceReply;
    use foundation_testkit::linearizability::{Verdict, check};
    use foundation_testkit::recorder::Recorder;
    use foundation_testkit::workload::services::{SERVICE_SWEEP_PROCESS_BASE, ServiceWorkload};
    let spec = ClusterSpec::new(Backend::Simulated, 3, 3);
    let out = run(&spec, |cluster| async move {
        let (n1, n3) = (cluster.names()[0].clone(), cluster.names()[2].clone());
        let t = Duration::from_secs(1);
        // Until a leader is up, a registration fails: retried.
        let mut registered = None;
        for _ in 0..100 {
            let pids: Vec<Pid> = cluster.client().rpc(&n3, "chaos.registry.pids", (), t).await.unwrap_or_default();
            if let Some(pid) = pids.first() {
                let r: Result<ServiceReply<Result<(), Pid>>, _> =
                    cluster.client().rpc(&n3, "chaos.registry.register", ("own".to_owned(), *pid, t), t * 2).await;
                if matches!(r, Ok(ServiceReply::Done(Ok(())))) {
                    registered = Some(*pid);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pid = registered.ok_or_else(|| anyhow::anyhow!("no registration in 10 s"))?;
        cluster.kill(2).await?;
        let mut released = false;
        for _ in 0..150 {
            let r: Result<ServiceReply<Option<Pid>>, _> =
                cluster.client().rpc(&n1, "chaos.registry.whereis", ("own".to_owned(), t), t * 2).await;
            match r {
                Ok(ServiceReply::Done(None)) => {
                    released = true;
                    break;
                }
                Ok(ServiceReply::Done(Some(p))) => anyhow::ensure!(p == pid, "the name went to {p}"),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::ensure!(released, "the name of a process of a killed node was still there after 15 s");
        cluster.restart(2).await?;

        let services = ServiceWorkload { clients: 3, think: Duration::from_millis(20), ..ServiceWorkload::new(3, Duration::from_secs(54)) };
        let kills = async {
            for round in 0..6 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                cluster.kill(round % 3).await?;
                tokio::time::sleep(Duration::from_secs(8)).await;
                cluster.restart(round % 3).await?;
            }
            anyhow::Ok(())
        };
        let ((report, violations), kills) = tokio::join!(services.run_recording(&cluster, Recorder::new()), kills);
        kills?;
        anyhow::ensure!(violations.is_empty(), "{violations:?}");
        let ops = report.history.ops()?;
        let sweeps = ops.iter().filter(|o| o.process >= SERVICE_SWEEP_PROCESS_BASE).count();
        anyhow::Ok((check(&ops).verdict, sweeps))
    })
    .expect("the run completes")
    .value;
    let (verdict, sweeps) = out;
    assert!(sweeps > 0, "no kill recorded a release");
    assert_eq!(verdict, Verdict::Linearizable);
}

/// `slow_consumer`: a process that stops reading its mailbox while the
/// other nodes send to it stalled their connections to its node (the
/// reader waited for room in the mailbox), Raft's traffic with them: the
/// node stopped applying the log. Fixed by issue 15 (a full mailbox parks
/// its messages and pauses its remote senders, never the connection's
/// reader). Seed 0 failed before: "n2 had not applied index 111 after
/// 1.4 s (it was at 77) while only a user process's mailbox on n2 was
/// full".
#[test]
fn a_mailbox_that_is_never_read_does_not_stall_consensus() {
    passes_alone(Nemesis::SlowConsumer, 0);
}

/// `clock_skew`: a lock's lease is an absolute time from the proposer's
/// clock (`Command::Acquire { now_ms }`), so a node whose clock is ahead
/// grants a lock whose holder still trusts its lease (and a node behind
/// grants leases that end early). Fencing tokens still only grow. Not
/// filed yet: leases judged on the leader's clock (durations, as etcd's),
/// or documented as the fencing token being the only guarantee. Seed 0
/// fails today: "l0: c0.0 (token 96) held it 0.592-0.696 s while c1.0
/// (token 98) held it 0.602-1.038 s".
#[test]
#[ignore = "finds a known bug (lock leases judged by the proposer's clock break exclusion under clock skew); un-ignore with its fix"]
fn lock_leases_exclude_under_clock_skew() {
    passes_alone(Nemesis::ClockSkew, 0);
}

/// The new nemeses that find nothing in today's code run clean, and each
/// has an effect.
#[test]
fn oneway_partitions_link_faults_and_restart_storms_run_clean() {
    let faults = [Nemesis::OnewayPartition, Nemesis::LinkFaults, Nemesis::RestartStorm];
    let o = layer4(Backend::Simulated, 3, &faults, Duration::from_secs(15)).expect("runs");
    assert!(o.checks().all(), "{:?}: {}", o.checks(), summary(&o));
    for n in faults {
        assert!(o.chaos.by_kind().get(&n).copied().unwrap_or(0) > 0, "{n} injected nothing: {}", summary(&o));
    }
}

/// Honest accounting: a nemesis that cannot apply to the cluster is left
/// out and listed; a run whose only nemesis cannot apply injects nothing
/// and fails its fault check.
#[test]
fn a_nemesis_that_cannot_apply_is_listed_and_counts_nothing() {
    let spec = ClusterSpec::new(Backend::Simulated, 3, 1);
    let o = run(&spec, |cluster| async move {
        let mut chaos = ChaosRun::new(Duration::from_secs(6));
        chaos.faults = vec![Nemesis::MajoritiesRing];
        run_chaos(&cluster, &chaos).await
    })
    .expect("runs")
    .value;
    assert_eq!(o.chaos.unavailable, vec!["majorities_ring needs at least 4 nodes (the cluster has 3)".to_owned()]);
    assert!(o.chaos.injections.is_empty() && o.chaos.errors.is_empty(), "{:?}", o.chaos);
    assert_eq!(o.chaos.failures_injected(), 0);
    assert!(!o.checks().failures_injected);
}

/// A run past its wall-clock limit fails and names the step it was stuck
/// in, on the simulator (where virtual time cannot catch it) and on real
/// nodes.
#[test]
fn a_run_past_its_wall_clock_limit_names_the_stuck_step() {
    for backend in [Backend::Simulated, Backend::InProcess] {
        let mut spec = ClusterSpec::new(backend, 3, 2);
        spec.wall_limit = Some(Duration::from_secs(2));
        spec.sim_limit = Duration::from_secs(1_000_000);
        let err = run(&spec, |cluster| async move {
            cluster.set_step("phase", "waiting for a reply that never comes");
            // Far past the limit, in virtual time too.
            tokio::time::sleep(Duration::from_secs(100_000)).await;
            anyhow::Ok(())
        })
        .expect_err("the limit fires");
        assert!(matches!(err, RunError::WallLimit { .. }), "{backend}: {err}");
        let text = err.to_string();
        assert!(text.contains("wall-clock limit of 2s") && text.contains("phase: waiting for a reply that never comes"), "{text}");
    }
}

#[test]
#[ignore = "exploration: NEMESES=a,b CHAOS_SEEDS=n cargo test --release -p foundation-testkit --test nemeses explore -- --ignored --nocapture"]
fn explore() {
    let faults: Vec<Nemesis> =
        std::env::var("NEMESES").unwrap_or_default().split(',').filter(|s| !s.is_empty()).map(|s| s.parse().expect("a nemesis")).collect();
    let faults = if faults.is_empty() { Nemesis::DEFAULT.to_vec() } else { faults };
    let backend = match std::env::var("BACKEND").as_deref() {
        Ok("inprocess") => Backend::InProcess,
        // The `foundation` binary: FOUNDATION_BIN (cargo builds it for the CLI's tests, not for these).
        Ok("processes") => Backend::Processes,
        _ => Backend::Simulated,
    };
    let start = env_u64("CHAOS_SEED_START", 0);
    let seeds = env_u64("CHAOS_SEEDS", 10);
    let duration = Duration::from_secs(env_u64("CHAOS_SECS", 30));
    let mut failed = Vec::new();
    for seed in start..start + seeds {
        let wall = std::time::Instant::now();
        match layer4(backend, seed, &faults, duration) {
            Ok(o) => {
                let c = o.checks();
                eprintln!("seed {seed} ({:.2} s): {} {c:?}", wall.elapsed().as_secs_f64(), summary(&o));
                if std::env::var_os("DUMP").is_some() {
                    for i in &o.chaos.injections {
                        eprintln!("  {:>8.3} s +{:.3} s {} {}", i.at_us as f64 / 1e6, i.held_us as f64 / 1e6, i.nemesis, i.detail);
                    }
                }
                if !c.all() {
                    failed.push(seed);
                }
            }
            Err(e) => {
                eprintln!("seed {seed}: ERROR {e}");
                failed.push(seed);
            }
        }
    }
    eprintln!("failed seeds: {failed:?}");
}
