//! Consensus benches: a 3-node group on loopback with durable storage
//! (the log's file, one fdatasync per batch), driven by 64 closed-loop clients writing small
//! values through the leader; failover after the leader is stopped; and the
//! disk's own fdatasync rate, to read the commit rate against.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use foundation_cluster::consensus::{Command, Consensus, ConsensusConfig, Member};
use foundation_cluster::secret::ClusterSecret;
use foundation_cluster::{Cluster, ClusterConfig};

use super::{Bench, Harness, Sizes};

const CLIENTS: usize = 64;
const T: Duration = Duration::from_secs(10);

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: "consensus.commits", unit: "ops/s", target: ">= 40000 (etcd: 4831)", run: commits, warmup: true },
        Bench { name: "consensus.commit_p99", unit: "ms", target: "<= 10 (etcd: 34)", run: commit_p99, warmup: true },
        Bench { name: "consensus.failover", unit: "ms", target: "<= 500 (etcd: 1300)", run: failover, warmup: false },
        Bench { name: "consensus.failover_lan", unit: "ms", target: "<= 100 (etcd, 10/100 ms: 114)", run: failover_lan, warmup: false },
        Bench { name: "cluster.commit_p99_stalled_consumer", unit: "x idle p99", target: "<= 2", run: stalled_consumer, warmup: false },
        Bench { name: "disk.fdatasync_per_s", unit: "ops/s", target: "- (the ceiling)", run: fdatasync, warmup: false },
    ]
}

/// A scratch directory, `foundation-bench-{tag}-{pid}-{n}` in the temp
/// directory, removed on drop. A bench that is killed leaves its own (the
/// state bench's is gigabytes): the first scratch of the next bench
/// removes those of processes that are gone.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new(tag: &str) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = std::env::temp_dir();
        if n == 0 {
            remove_scratch_of_ended_benches(&tmp);
        }
        let dir = tmp.join(format!("foundation-bench-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

/// Removes the scratch directories in `tmp` whose bench process no longer
/// exists (no `/proc/{pid}`), saying so on stderr. Where `/proc` is not
/// mounted nothing can be told and nothing is removed; a live process
/// that reused the pid keeps them (the safe side).
fn remove_scratch_of_ended_benches(tmp: &std::path::Path) {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("foundation-bench-")) else { continue };
        let mut fields = rest.rsplit('-');
        let (Some(n), Some(pid)) = (fields.next(), fields.next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if n.parse::<u64>().is_err() || fields.next().is_none() || pid == std::process::id() || proc.join(pid.to_string()).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => eprintln!("removed {}: left by bench process {pid}, which ended before cleaning up", entry.path().display()),
            Err(e) => eprintln!("could not remove {} (left by bench process {pid}): {e}", entry.path().display()),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) struct Group {
    pub(super) nodes: Vec<Cluster>,
    pub(super) members: Vec<Consensus>,
    pub(super) dir: Scratch,
    pub(super) secret: ClusterSecret,
}

impl Group {
    pub(super) fn leader(&self) -> anyhow::Result<usize> {
        let (id, _) = self.members[0].leader().context("no leader")?;
        self.members.iter().position(|m| m.id() == id).context("the leader is not a member")
    }

    pub(super) async fn stop(self) {
        for (m, c) in self.members.iter().zip(&self.nodes) {
            m.shutdown().await;
            c.shutdown();
        }
    }
}

/// Three durable members, each node on its own scheduler in turn.
async fn group(h: &Harness, config: impl Fn(u64) -> ConsensusConfig + Send + Sync + Clone + 'static) -> anyhow::Result<Group> {
    group_of(h, 3, config).await
}

/// `n` durable members, each node on its own scheduler in turn.
pub(super) async fn group_of(
    h: &Harness,
    n: u64,
    config: impl Fn(u64) -> ConsensusConfig + Send + Sync + Clone + 'static,
) -> anyhow::Result<Group> {
    let dir = Scratch::new("raft")?;
    let secret = ClusterSecret::new("foundation-bench-secret-0123456789", "bench").context("secret")?;
    let mut nodes: Vec<Cluster> = Vec::new();
    let mut members = Vec::new();
    for i in 1..=n {
        let name = format!("n{i}");
        let node = h.named_node(&name);
        let (secret, data, join) = (secret.clone(), dir.0.join(&name), nodes.first().map(|c: &Cluster| c.addr().to_owned()));
        let config = config.clone();
        let (cluster, member) = h
            .on_scheduler((i as usize - 1) % 3, async move {
                let cluster = Cluster::start(node, ClusterConfig::new(name, "127.0.0.1:0", secret)).await?;
                if let Some(addr) = join {
                    cluster.connect(&addr).await?;
                }
                let member = Consensus::start(&cluster, config(i).durable(data)).await?;
                anyhow::Ok((cluster, member))
            })
            .await??;
        nodes.push(cluster);
        members.push(member);
    }
    let deadline = Instant::now() + T;
    while nodes.iter().any(|c| c.peers().len() < n as usize - 1) {
        if Instant::now() > deadline {
            bail!("the mesh did not form");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let all: BTreeMap<u64, Member> =
        nodes.iter().enumerate().map(|(i, c)| (i as u64 + 1, Member { name: c.name().to_owned(), addr: c.addr().to_owned() })).collect();
    members[0].initialize(all).await.context("initializing")?;
    for m in &members {
        m.wait_for_leader(T).await.context("electing")?;
    }
    // The first write also confirms the leader with a quorum.
    let leader = members[0].leader().context("a leader")?.0;
    let leader = members.iter().find(|m| m.id() == leader).context("leader")?;
    leader.reach_consensus(put(0, 0), T).await.context("the first write")?;
    Ok(Group { nodes, members, dir, secret })
}

fn put(client: usize, i: usize) -> Command {
    // 16-byte keys, 64-byte values, as in the etcd figures.
    Command::Put { key: format!("k{client:07}-{i:07}"), value: vec![b'v'; 64] }
}

/// `ops` writes by 64 closed-loop clients through the leader: elapsed time
/// and each write's latency.
async fn load(h: &Harness, g: &Group, ops: usize) -> anyhow::Result<(Duration, Vec<Duration>)> {
    load_by(h, g, ops, CLIENTS).await
}

/// [`load`] with `clients` closed-loop clients.
pub(super) async fn load_by(h: &Harness, g: &Group, ops: usize, clients_n: usize) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let leader = g.members[g.leader()?].clone();
    h.on_scheduler(0, async move {
        let per_client = ops.div_ceil(clients_n);
        let start = Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..clients_n {
            let leader = leader.clone();
            clients.spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let t = Instant::now();
                    leader.reach_consensus(put(c, i), T).await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            });
        }
        let mut all = Vec::with_capacity(ops);
        while let Some(done) = clients.join_next().await {
            all.extend(done.context("a client panicked")??);
        }
        anyhow::Ok((start.elapsed(), all))
    })
    .await?
}

fn commits(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let ops = sizes.pick(32_000, 3_200);
    h.driver.block_on(async {
        let g = group(h, ConsensusConfig::new).await?;
        let (elapsed, latencies) = load(h, &g, ops).await?;
        g.stop().await;
        Ok(latencies.len() as f64 / elapsed.as_secs_f64())
    })
}

fn commit_p99(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let ops = sizes.pick(32_000, 3_200);
    h.driver.block_on(async {
        let g = group(h, ConsensusConfig::new).await?;
        let (_, mut latencies) = load(h, &g, ops).await?;
        g.stop().await;
        let p99 = foundation_testkit::load::p99(&mut latencies).as_secs_f64() * 1e3;
        // The shape of the tail, on stderr (sorted by `p99`).
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;
        eprintln!(
            "  consensus.commit_p99: p50 {:.2} p90 {:.2} p99 {p99:.2} p99.9 {:.2} max {:.2} ms",
            at(0.5),
            at(0.9),
            at(0.999),
            at(1.0)
        );
        Ok(p99)
    })
}

/// Commit p99 while a process on a follower never reads and the leader's
/// node floods it (with `send_wait`: the sender honours the credit
/// window), over the p99 of the same load without the flood, in the same
/// group: idle, flooded, idle, flooded. Both p99s go to stderr.
fn stalled_consumer(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let ops = sizes.pick(16_000, 1_600);
    h.driver.block_on(async {
        let g = group(h, ConsensusConfig::new).await?;
        let li = g.leader()?;
        let (leader, follower) = (g.nodes[li].clone(), g.nodes[(li + 1) % 3].clone());
        follower.register_message::<bytes::Bytes>();
        let stuck = follower.node().spawn(|_ctx: foundation::Ctx<bytes::Bytes>| std::future::pending::<()>()).pid();
        let payload = bytes::Bytes::from(vec![1u8; 16 << 10]);
        let (mut idle, mut flooded, mut total_sent) = (Vec::new(), Vec::new(), 0u64);
        for _ in 0..2 {
            idle.extend(load(h, &g, ops).await?.1);
            let stop = Arc::new(AtomicBool::new(false));
            let (flooder, stop_flood, payload) = (leader.clone(), stop.clone(), payload.clone());
            let flood = foundation::rt::spawn(async move {
                let mut sent = 0u64;
                while !stop_flood.load(Ordering::Relaxed) {
                    // Waits while the window is shut: the never-reading
                    // process holds it shut once it has filled.
                    let wait = tokio::time::timeout(Duration::from_millis(50), flooder.send_wait(stuck, payload.clone()));
                    match wait.await {
                        Ok(Ok(())) => sent += 1,
                        Ok(Err(e)) => return Err(e),
                        Err(_) => {}
                    }
                }
                Ok(sent)
            });
            flooded.extend(load(h, &g, ops).await?.1);
            stop.store(true, Ordering::Relaxed);
            let sent = flood.await.context("the flood panicked")?.context("flooding")?;
            total_sent += sent;
        }
        g.stop().await;
        // The first round fills the process's mailbox and window; after
        // that the flood waits on a shut window, as it should.
        anyhow::ensure!(total_sent > 0, "the flood sent nothing");
        let (idle, flooded) = (foundation_testkit::load::p99(&mut idle), foundation_testkit::load::p99(&mut flooded));
        eprintln!(
            "  cluster.commit_p99_stalled_consumer: idle p99 {:.2} ms, flooded p99 {:.2} ms",
            idle.as_secs_f64() * 1e3,
            flooded.as_secs_f64() * 1e3
        );
        Ok(flooded.as_secs_f64() / idle.as_secs_f64())
    })
}

/// Milliseconds from stopping the leader to the next committed write on a
/// survivor, with the default timeouts.
fn failover(_sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    failover_with(h, ConsensusConfig::new)
}

/// The same with the LAN profile (`ConsensusConfig::lan`).
fn failover_lan(_sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    failover_with(h, |id| ConsensusConfig::new(id).lan())
}

fn failover_with(h: &Harness, config: fn(u64) -> ConsensusConfig) -> anyhow::Result<f64> {
    h.driver.block_on(async {
        let g = group(h, config).await?;
        let li = g.leader()?;
        let survivor = g.members[(li + 1) % 3].clone();
        let stopped = Instant::now();
        g.members[li].shutdown().await;
        g.nodes[li].shutdown();
        let mut i = 0;
        loop {
            i += 1;
            match survivor.reach_consensus(put(999, i), Duration::from_millis(100)).await {
                Ok(_) => break,
                Err(e) if stopped.elapsed() > T => bail!("no write committed within {T:?} of the failover: {e}"),
                Err(_) => {}
            }
        }
        let took = stopped.elapsed();
        g.stop().await;
        Ok(took.as_secs_f64() * 1e3)
    })
}

/// fdatasync per second of 4 KiB appends in the temporary directory, for
/// half a second.
fn fdatasync(_sizes: &Sizes, _h: &Harness) -> anyhow::Result<f64> {
    let dir = Scratch::new("fsync")?;
    let mut f = std::fs::File::create(dir.0.join("probe")).context("creating the probe file")?;
    let block = [7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(500) {
        f.write_all(&block).context("writing")?;
        f.sync_data().context("fdatasync")?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
