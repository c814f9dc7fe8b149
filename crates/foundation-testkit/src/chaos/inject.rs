//! What each nemesis does (see the table in [`super`]).

use std::time::Duration;

use bytes::Bytes;
use foundation_cluster::consensus::{
    Answer, CLIENT_QUERY, CLIENT_SUBMIT, Command, ConsensusError, Decision, PROPOSAL_BYTES_DEFAULT, Query,
};
use foundation_cluster::rpc::RpcError;
use rand::Rng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

use super::{Nemesis, bridge, majorities_ring, uniform};

mod slow_link;
use crate::agent::{FLOOD_MAX, FLOOD_TARGET, SLOW_MAILBOX};
use crate::cluster::{Backend, DiskError, Fault, FaultError, TestCluster};

/// How long a node that missed a large state, or went through a restart
/// storm, gets to apply the log again before the probe calls it a finding
/// (catching up takes well under a second on every backend).
pub const CATCH_UP: Duration = Duration::from_secs(10);
/// The shortest stall of a slow consumer (the probe needs the time).
const SLOW_STALL_MIN: Duration = Duration::from_secs(2);
/// A read-back's timeout (`big_state` retries within [`CATCH_UP`]).
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the flood runs before the probe writes its marker.
const PROBE_DELAY: Duration = Duration::from_millis(300);
/// Pause between a probe's attempts to commit its marker.
const PROBE_RETRY: Duration = Duration::from_millis(100);
/// Keys the `big_state` nemesis writes (and deletes again).
pub const BIG_PREFIX: &str = "chaos/big/";
/// The key the probes write.
pub const PROBE_KEY: &str = "chaos/probe";
/// Gaps between the kills and restarts of a restart storm: inside the
/// 1 s timeouts of the workloads' RPCs.
const STORM_GAP: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(300));
/// A restart storm lasts at least this long.
const STORM_MIN: Duration = Duration::from_secs(1);

/// What an injection did.
pub(super) struct Injected {
    pub detail: String,
    /// Whether it changed anything.
    pub effective: bool,
    /// A property the nemesis checked that did not hold.
    pub finding: Option<String>,
}

fn done(detail: String) -> Injected {
    Injected { detail, effective: true, finding: None }
}

fn fe(e: FaultError) -> String {
    e.to_string()
}

pub(super) async fn inject(
    cluster: &TestCluster,
    nemesis: Nemesis,
    hold: Duration,
    big_state_frames: usize,
    rng: &mut SmallRng,
) -> Result<Injected, String> {
    let n = cluster.size();
    let live: Vec<usize> = (0..n).filter(|i| !cluster.killed().contains(i)).collect();
    let Some(&target) = live.get(rng.random_range(0..live.len().max(1))) else {
        return Err("no live node".into());
    };
    let name = cluster.names()[target].clone();
    let sim = cluster.spec().backend == Backend::Simulated;
    match nemesis {
        Nemesis::KillProcess => {
            let killed: Option<String> =
                cluster.client().rpc(&name, "chaos.kill_process", (), Duration::from_secs(1)).await.map_err(|e| e.to_string())?;
            tokio::time::sleep(hold).await;
            Ok(match killed {
                Some(pid) => done(format!("{name}: {pid}")),
                None => Injected { detail: format!("{name}: no worker to kill"), effective: false, finding: None },
            })
        }
        Nemesis::Partition => {
            let mut nodes: Vec<usize> = (0..n).collect();
            nodes.shuffle(rng);
            let half = nodes[..n / 2].to_vec();
            cluster.apply(Fault::Partition { groups: vec![half.clone()] }).await.map_err(fe)?;
            tokio::time::sleep(hold).await;
            cluster.heal().await.map_err(fe)?;
            Ok(done(format!("{half:?} | rest")))
        }
        Nemesis::MemoryPressure => {
            let bytes: usize = if sim { 16 << 20 } else { 64 << 20 };
            let held: usize = cluster
                .client()
                .rpc(&name, "chaos.memory", (bytes, hold), hold + Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string())?;
            Ok(Injected { detail: format!("{name}: {} MiB", held >> 20), effective: held > 0, finding: None })
        }
        Nemesis::CpuSpike => {
            if sim {
                cluster.pause(target).await.map_err(fe)?;
                tokio::time::sleep(hold).await;
                cluster.resume(target).await.map_err(fe)?;
            } else {
                let _: u64 =
                    cluster.client().rpc(&name, "chaos.cpu", hold, hold + Duration::from_secs(2)).await.map_err(|e| e.to_string())?;
            }
            Ok(done(format!("{name}: {} ms", hold.as_millis())))
        }
        Nemesis::MessageFlood => {
            let msg = Bytes::from_static(&[0u8; 64]);
            let mut refused = 0;
            for _ in 0..2_000 {
                if cluster.client().send_named(&name, FLOOD_TARGET, msg.clone()).await.is_err() {
                    refused += 1;
                }
            }
            tokio::time::sleep(hold).await;
            Ok(Injected { detail: format!("{name}: 2000 messages, {refused} refused"), effective: refused < 2_000, finding: None })
        }
        Nemesis::CrashRestart => {
            cluster.kill(target).await.map_err(fe)?;
            tokio::time::sleep(hold).await;
            cluster.restart(target).await.map_err(fe)?;
            Ok(done(name))
        }
        Nemesis::MajoritiesRing | Nemesis::Bridge => {
            let cut = if nemesis == Nemesis::Bridge { bridge(n, rng) } else { majorities_ring(n) };
            if cut.is_empty() {
                return Err(format!("no {nemesis} on {n} nodes"));
            }
            cluster.apply(Fault::Cut { pairs: cut.clone() }).await.map_err(fe)?;
            tokio::time::sleep(hold).await;
            cluster.heal().await.map_err(fe)?;
            Ok(done(format!("cut {cut:?}")))
        }
        Nemesis::SwizzleClog => swizzle_clog(cluster, hold, rng).await,
        Nemesis::OnewayPartition => {
            let others: Vec<usize> = (0..n).filter(|i| *i != target).collect();
            // Deaf: it hears no one (its own messages still go out); mute:
            // the other way round.
            let deaf = rng.random_bool(0.5);
            let (from, to) = if deaf { (others, vec![target]) } else { (vec![target], others) };
            cluster.partition_oneway(&from, &to).await.map_err(fe)?;
            tokio::time::sleep(hold).await;
            cluster.heal().await.map_err(fe)?;
            Ok(done(format!("{name} {}", if deaf { "hears no one" } else { "is heard by no one" })))
        }
        Nemesis::LinkFaults => link_faults(cluster, hold, rng).await,
        Nemesis::ClockSkew => {
            let magnitude = rng.random_range(1_000..=5_000i64);
            let offset_ms = if rng.random_bool(0.5) { magnitude } else { -magnitude };
            cluster.apply(Fault::ClockSkew { node: target, offset_ms }).await.map_err(fe)?;
            tokio::time::sleep(hold).await;
            // A node restarted meanwhile has a right clock already.
            if !cluster.killed().contains(&target) && cluster.skewed().contains_key(&target) {
                cluster.apply(Fault::ClockSkew { node: target, offset_ms: 0 }).await.map_err(fe)?;
            }
            Ok(done(format!("{name}: {offset_ms:+} ms")))
        }
        Nemesis::BigState => big_state(cluster, target, hold, big_state_frames).await,
        Nemesis::SlowConsumer => slow_consumer(cluster, target, hold).await,
        Nemesis::SlowLink => slow_link::slow_link(cluster, target, hold).await,
        Nemesis::RestartStorm => restart_storm(cluster, target, hold, rng).await,
        Nemesis::DiskFull => disk_fails(cluster, target, hold, DiskError::NoSpace).await,
        Nemesis::DiskError => disk_fails(cluster, target, hold, DiskError::Io).await,
        Nemesis::SlowDisk => slow_disk(cluster, target, hold, rng).await,
        Nemesis::LostDisk | Nemesis::LostTail => lost_data(cluster, nemesis, target, hold, rng).await,
    }
}

/// Every write batch of `target`'s store fails for the hold; then the disk
/// works again, and the node must catch up.
async fn disk_fails(cluster: &TestCluster, target: usize, hold: Duration, error: DiskError) -> Result<Injected, String> {
    let name = cluster.names()[target].clone();
    let faults = cluster.spec().disk_faults(target);
    let before = faults.batches_failed();
    cluster.apply(Fault::DiskError { node: target, error: Some(error) }).await.map_err(fe)?;
    tokio::time::sleep(hold).await;
    cluster.apply(Fault::DiskError { node: target, error: None }).await.map_err(fe)?;
    let failed = faults.batches_failed() - before;
    let others = live_except(cluster, target);
    let finding = if failed > 0 {
        keeps_up(cluster, target, &others, CATCH_UP, &format!("its disk works again after {failed} failed writes")).await
    } else {
        None
    };
    Ok(Injected { detail: format!("{name}: {error:?}, {failed} write batches failed"), effective: failed > 0, finding })
}

/// A slow disk on `target`, killed halfway through the hold (in
/// simulation, half of the batch in flight is written: a torn tail);
/// restarted at its end, it must catch up.
async fn slow_disk(cluster: &TestCluster, target: usize, hold: Duration, rng: &mut SmallRng) -> Result<Injected, String> {
    let name = cluster.names()[target].clone();
    let latency_ms = rng.random_range(20..=200u64);
    let faults = cluster.spec().disk_faults(target);
    let before = faults.batches_slowed();
    cluster.apply(Fault::DiskLatency { node: target, latency_ms }).await.map_err(fe)?;
    tokio::time::sleep(hold / 2).await;
    cluster.kill(target).await.map_err(fe)?;
    cluster.apply(Fault::DiskLatency { node: target, latency_ms: 0 }).await.map_err(fe)?;
    tokio::time::sleep(hold / 2).await;
    cluster.restart(target).await.map_err(fe)?;
    let slowed = faults.batches_slowed() - before;
    let others = live_except(cluster, target);
    let finding = keeps_up(cluster, target, &others, CATCH_UP, &format!("it restarted after a slow disk ({latency_ms} ms a batch)")).await;
    Ok(Injected {
        detail: format!("{name}: {latency_ms} ms a batch, {slowed} batches slowed, killed halfway"),
        effective: slowed > 0,
        finding,
    })
}

/// Kills `target`, loses its data (all of it, or the log's tail), restarts
/// it after the hold; it must catch up.
async fn lost_data(cluster: &TestCluster, nemesis: Nemesis, target: usize, hold: Duration, rng: &mut SmallRng) -> Result<Injected, String> {
    let name = cluster.names()[target].clone();
    // A node that lost its data and was refused stays down: losing a second
    // one would take the majority.
    if !cluster.killed().is_empty() {
        let down = cluster.killed().len();
        return Ok(Injected { detail: format!("{name}: not touched, {down} node(s) down already"), effective: false, finding: None });
    }
    cluster.kill(target).await.map_err(fe)?;
    let what = if nemesis == Nemesis::LostDisk {
        cluster.apply(Fault::WipeDisk { node: target }).await.map_err(fe)?;
        "its data directory emptied".to_owned()
    } else {
        let entries = rng.random_range(1..=20u64);
        cluster.apply(Fault::TruncateLog { node: target, entries }).await.map_err(fe)?;
        format!("the last {entries} log entries lost")
    };
    tokio::time::sleep(hold).await;
    if let Err(e) = cluster.restart(target).await {
        // Refusing to start on lost data is right; the node stays down
        // (the run's recovery tries again).
        return Ok(Injected { detail: format!("{name}: {what}; the restart was refused: {e}"), effective: true, finding: None });
    }
    if nemesis == Nemesis::LostDisk {
        // It has run for a while (it was up when the nemesis began): it may
        // have voted and acknowledged entries. Starting again under its id
        // is what it must never do.
        let finding =
            format!("lost_disk: {name} started again with {what}: a member that lost its vote and log must not vote again under its id");
        return Ok(Injected { detail: format!("{name}: {what}; the restart was accepted"), effective: true, finding: Some(finding) });
    }
    let others = live_except(cluster, target);
    let finding = keeps_up(cluster, target, &others, CATCH_UP, &format!("it restarted with {what}")).await;
    Ok(Injected { detail: format!("{name}: {what}"), effective: true, finding })
}

async fn swizzle_clog(cluster: &TestCluster, hold: Duration, rng: &mut SmallRng) -> Result<Injected, String> {
    let n = cluster.size();
    let mut nodes: Vec<usize> = (0..n).collect();
    nodes.shuffle(rng);
    nodes.truncate(rng.random_range(1..=n.div_ceil(2)));
    let step = hold / (2 * nodes.len() as u32).max(1);
    let mut clogged = Vec::new();
    for &a in &nodes {
        for b in (0..n).filter(|b| *b != a) {
            cluster.clog(a, b).await.map_err(fe)?;
            clogged.push((a, b));
        }
        tokio::time::sleep(step).await;
    }
    clogged.shuffle(rng);
    for &(a, b) in &clogged {
        cluster.unclog(a, b).await.map_err(fe)?;
    }
    tokio::time::sleep(step).await;
    Ok(Injected { detail: format!("clogged {nodes:?}"), effective: !clogged.is_empty(), finding: None })
}

async fn link_faults(cluster: &TestCluster, hold: Duration, rng: &mut SmallRng) -> Result<Injected, String> {
    let n = cluster.size();
    let mut pairs: Vec<(usize, usize)> = (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).collect();
    pairs.shuffle(rng);
    pairs.truncate(rng.random_range(1..=pairs.len().max(1)));
    let mut set = Vec::new();
    for &(a, b) in &pairs {
        let latency = Duration::from_millis(rng.random_range(10..=300));
        let loss = if rng.random_bool(0.5) { 0.0 } else { (rng.random_range(1..=100) as f64) / 1000.0 };
        cluster.set_link(a, b, latency, loss).await.map_err(fe)?;
        set.push(format!("{a}-{b} {} ms {:.1} %", latency.as_millis(), loss * 100.0));
    }
    tokio::time::sleep(hold).await;
    cluster.heal().await.map_err(fe)?;
    Ok(Injected { detail: set.join(", "), effective: !set.is_empty(), finding: None })
}

/// Proposes `cmd` through `node`'s `consensus.submit`.
async fn submit(cluster: &TestCluster, node: &str, cmd: Command, timeout: Duration) -> Result<Decision, String> {
    let reply: Result<Result<Decision, ConsensusError>, RpcError> =
        cluster.client().rpc(node, CLIENT_SUBMIT, (cmd, timeout), timeout + timeout / 2).await;
    match reply {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Proposes `cmd` through each of `via` in turn until one commits it.
async fn submit_any(cluster: &TestCluster, via: &[usize], cmd: Command, timeout: Duration) -> Result<Decision, String> {
    let mut last = String::from("no node to propose through");
    for &node in via {
        match submit(cluster, &cluster.names()[node], cmd.clone(), timeout).await {
            Ok(d) => return Ok(d),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A node's applied index (through its agent: a small answer, whatever
/// the size of the state).
async fn applied(cluster: &TestCluster, node: usize) -> Option<u64> {
    let r: Result<Option<u64>, RpcError> = cluster.client().rpc(&cluster.names()[node], "chaos.applied", (), Duration::from_secs(1)).await;
    r.ok().flatten()
}

/// Waits until `node` has applied `index`: how long it took, or where it
/// was when `within` ran out.
async fn wait_applied(cluster: &TestCluster, node: usize, index: u64, within: Duration) -> Result<Duration, Option<u64>> {
    let start = tokio::time::Instant::now();
    loop {
        let at = applied(cluster, node).await;
        if at.is_some_and(|a| a >= index) {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= within {
            return Err(at);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn live_except(cluster: &TestCluster, node: usize) -> Vec<usize> {
    let (killed, paused) = (cluster.killed(), cluster.paused());
    (0..cluster.size()).filter(|i| *i != node && !killed.contains(i) && !paused.contains(i)).collect()
}

/// Commits a marker through one of `via` and waits until `node` applied
/// it: `None` when it did, what went wrong otherwise.
async fn keeps_up(cluster: &TestCluster, node: usize, via: &[usize], within: Duration, why: &str) -> Option<String> {
    let name = &cluster.names()[node];
    let value = cluster.elapsed().as_micros().to_string().into_bytes();
    let start = tokio::time::Instant::now();
    let marker = Command::Put { key: PROBE_KEY.into(), value };
    // Retried until `within`: the other nodes may still be reconnecting
    // after the previous fault (a refusal then comes at once).
    let d = loop {
        let left = within.saturating_sub(start.elapsed());
        match submit_any(cluster, via, marker.clone(), left.min(Duration::from_secs(2))).await {
            Ok(d) => break d,
            Err(_) if start.elapsed() + PROBE_RETRY < within => tokio::time::sleep(PROBE_RETRY).await,
            Err(e) => {
                return Some(format!("no write committed through the other nodes in {:.1} s while {why}: {e}", within.as_secs_f64()));
            }
        }
    };
    match wait_applied(cluster, node, d.index, within.saturating_sub(start.elapsed())).await {
        Ok(_) => None,
        Err(at) => {
            Some(format!("{name} had not applied index {} after {:.1} s (it was at {at:?}) while {why}", d.index, within.as_secs_f64()))
        }
    }
}

/// With `target` down, writes more than `frames` frame limits, brings it
/// back, waits for it to catch up, and deletes the keys again.
async fn big_state(cluster: &TestCluster, target: usize, hold: Duration, frames: usize) -> Result<Injected, String> {
    let name = cluster.names()[target].clone();
    let limit = cluster.spec().frame_limit();
    let chunk = (limit / 16).clamp(1, PROPOSAL_BYTES_DEFAULT - 1024);
    // Past `frames` frames: what the node missed must reach it in more
    // than one append, or a snapshot in chunks. (The mix uses one frame:
    // four made the injection long enough that sweep seed 100961 injected
    // too few faults.)
    let chunks = frames * limit / chunk + 2;
    cluster.kill(target).await.map_err(fe)?;
    let others = live_except(cluster, target);
    cluster.set_step("monkey", format!("big_state: writing {chunks} values of {chunk} bytes with {name} down"));
    let mut written = Vec::new();
    let mut last_index = None;
    for i in 0..chunks {
        let put = Command::Put { key: format!("{BIG_PREFIX}{i}"), value: vec![i as u8; chunk] };
        match submit_any(cluster, &others, put, Duration::from_secs(2)).await {
            Ok(d) => {
                written.push(i);
                last_index = Some(d.index);
            }
            // No node commits (no quorum without the node that is down):
            // stop, rather than wait out every value's timeout.
            Err(_) => break,
        }
    }
    tokio::time::sleep(hold).await;
    cluster.restart(target).await.map_err(fe)?;
    let bytes = written.len() * chunk;
    let what = format!("{} in {} values while {name} was down (frame limit {})", mib(bytes), written.len(), mib(limit));
    let mut finding = None;
    let caught = match last_index {
        None => "nothing was written".to_owned(),
        Some(index) => {
            cluster.set_step("monkey", format!("big_state: waiting for {name} to apply index {index}"));
            match wait_applied(cluster, target, index, CATCH_UP).await {
                Ok(took) => format!("caught up in {:.2} s", took.as_secs_f64()),
                Err(at) => {
                    finding = Some(format!(
                        "{name} had not caught up {} s after it came back (applied {at:?}, the state was at {index}) after missing {what}",
                        CATCH_UP.as_secs()
                    ));
                    "did not catch up".to_owned()
                }
            }
        }
    };
    let mut survived = String::new();
    if frames > 1 && finding.is_none() && last_index.is_some() {
        match survives_another_loss(cluster, target, &written, chunk).await {
            Ok(what) => survived = format!("; {what}"),
            Err(f) => finding = Some(f),
        }
    }
    cluster.set_step("monkey", "big_state: deleting the values");
    let all = live_except(cluster, usize::MAX);
    let mut left = 0;
    for i in written {
        // After one delete that no node commits, count the rest as left.
        if left > 0 || submit_any(cluster, &all, Command::Delete { key: format!("{BIG_PREFIX}{i}") }, Duration::from_secs(2)).await.is_err()
        {
            left += 1;
        }
    }
    let left = if left > 0 { format!("; {left} values not deleted") } else { String::new() };
    Ok(Injected { detail: format!("{what}; {caught}{survived}{left}"), effective: bytes > limit, finding })
}

/// The storage issue's form of `big_state`, after `target` caught up:
/// another node goes down, and every value written while `target` was
/// down reads back through `target` (a linearizable read, which needs
/// `target` in the quorum). Then that node comes back. Left out of the
/// one-frame mix: it doubles the nemesis's length.
async fn survives_another_loss(cluster: &TestCluster, target: usize, written: &[usize], chunk: usize) -> Result<String, String> {
    let name = &cluster.names()[target];
    let Some(&other) = live_except(cluster, target).first() else {
        return Err(format!("no node besides {name} to take down"));
    };
    let other_name = cluster.names()[other].clone();
    cluster.kill(other).await.map_err(|e| format!("could not kill {other_name}: {e}"))?;
    cluster.set_step("monkey", format!("big_state: reading {} values back through {name} with {other_name} down", written.len()));
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    let mut finding = None;
    'keys: for &i in written {
        let key = format!("{BIG_PREFIX}{i}");
        loop {
            let reply: Result<Result<Answer, ConsensusError>, RpcError> =
                cluster.client().rpc(name, CLIENT_QUERY, (Query::Get(key.clone()), READ_TIMEOUT), READ_TIMEOUT * 2).await;
            let why = match reply {
                Ok(Ok(Answer::Value(Some(v)))) if v.len() == chunk && v.iter().all(|b| *b == i as u8) => continue 'keys,
                Ok(Ok(answer)) => {
                    finding = Some(format!("{key} read back through {name} with {other_name} down as {}", shown(&answer)));
                    break 'keys;
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                finding =
                    Some(format!("{key} did not read back through {name} {} s after {other_name} went down: {why}", CATCH_UP.as_secs()));
                break 'keys;
            }
            tokio::time::sleep(PROBE_RETRY).await;
        }
    }
    if let Err(e) = cluster.restart(other).await {
        finding.get_or_insert(format!("could not restart {other_name}: {e}"));
    }
    match finding {
        Some(f) => Err(f),
        None => Ok(format!("all {} read back through {name} with {other_name} down", written.len())),
    }
}

/// An answer in a finding: a value's length and first byte, not its bytes.
fn shown(answer: &Answer) -> String {
    match answer {
        Answer::Value(Some(v)) => format!("{} bytes starting {:?}", v.len(), v.first()),
        other => format!("{other:?}"),
    }
}

/// Stops `target`'s slow consumer from reading while every other node
/// floods it, and checks that `target` keeps applying the log.
async fn slow_consumer(cluster: &TestCluster, target: usize, hold: Duration) -> Result<Injected, String> {
    let name = cluster.names()[target].clone();
    let senders = live_except(cluster, target);
    if senders.is_empty() {
        return Err("no other live node to flood from".into());
    }
    // Judge only a node that keeps up before its consumer stalls (not one
    // still coming back from the previous fault).
    if let Some(behind) = keeps_up(cluster, target, &senders, CATCH_UP, &format!("before {name}'s consumer stalled")).await {
        return Ok(Injected { detail: format!("{name}: not stalled, behind already: {behind}"), effective: false, finding: None });
    }
    let stall = hold.max(SLOW_STALL_MIN);
    let client = cluster.client();
    let running: bool = client.rpc(&name, "chaos.stall", stall, Duration::from_secs(2)).await.map_err(|e| format!("{name}: {e}"))?;
    if !running {
        return Ok(Injected { detail: format!("{name}: no slow consumer"), effective: false, finding: None });
    }
    let floods: Vec<_> = senders
        .iter()
        .map(|&s| {
            let (client, from, to) = (client.clone(), cluster.names()[s].clone(), name.clone());
            foundation::rt::spawn(async move {
                let r: Result<usize, RpcError> =
                    client.rpc(&from, "chaos.flood", (to, FLOOD_MAX, stall), stall + Duration::from_secs(2)).await;
                r.unwrap_or(0)
            })
        })
        .collect();
    tokio::time::sleep(PROBE_DELAY).await;
    let len: Option<usize> = client.rpc(&name, "chaos.slow_len", (), Duration::from_secs(1)).await.ok().flatten();
    let full = len.is_some_and(|l| l >= SLOW_MAILBOX);
    let why = format!("only a user process's mailbox on {name} was full");
    let finding = if full { keeps_up(cluster, target, &senders, stall - PROBE_DELAY * 2, &why).await } else { None };
    let mut sent = 0;
    for f in floods {
        sent += f.await.unwrap_or(0);
    }
    let from: Vec<&str> = senders.iter().map(|s| cluster.names()[*s].as_str()).collect();
    let detail =
        format!("{name}: mailbox {}/{SLOW_MAILBOX}, {sent} messages from {}", len.map_or("?".into(), |l| l.to_string()), from.join(", "));
    Ok(Injected { detail, effective: full, finding })
}

/// Kills and restarts `target` again and again (gaps inside the RPC
/// timeouts), then checks that it catches up.
async fn restart_storm(cluster: &TestCluster, target: usize, hold: Duration, rng: &mut SmallRng) -> Result<Injected, String> {
    let name = cluster.names()[target].clone();
    let until = tokio::time::Instant::now() + hold.max(STORM_MIN);
    let mut restarts = 0;
    while tokio::time::Instant::now() < until {
        cluster.kill(target).await.map_err(fe)?;
        tokio::time::sleep(uniform(rng, STORM_GAP)).await;
        cluster.restart(target).await.map_err(fe)?;
        restarts += 1;
        cluster.set_step("monkey", format!("restart_storm: {name} restarted {restarts} times"));
        tokio::time::sleep(uniform(rng, STORM_GAP)).await;
    }
    let others = live_except(cluster, target);
    let finding = keeps_up(cluster, target, &others, CATCH_UP, &format!("{name} was back after a restart storm")).await;
    Ok(Injected { detail: format!("{name}: {restarts} restarts"), effective: restarts > 0, finding })
}
