//! Storage benches: what a member's memory, restart and disk cost as its
//! state grows, and how fast a follower that missed a large state catches
//! up. Durable members (the log's file, the state in redb) on loopback; the state is written through
//! consensus with 256 KiB values (small values where entries are counted).
//! These write gigabytes: run them with `--runs 1`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use foundation_cluster::consensus::{Command, Consensus, ConsensusConfig};
use foundation_cluster::{Cluster, ClusterConfig};

use super::consensus::{Group, group_of};
use super::{Bench, Harness, Sizes};

const T: Duration = Duration::from_secs(30);
const BIG_VALUE: usize = 256 << 10;
const WRITERS: usize = 16;
const MIB: usize = 1 << 20;

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: "node.rss_at_state", unit: "MiB", target: "<= 512 (4 GiB of state)", run: rss_at_state, warmup: false },
        Bench { name: "node.restart", unit: "ms", target: "<= 1000 (1 GiB, 100k entries)", run: restart, warmup: false },
        Bench { name: "disk.bytes_per_entry", unit: "B", target: "- (216 B of key and value)", run: bytes_per_entry, warmup: false },
        Bench { name: "disk.amplification", unit: "x data", target: "<= 3", run: amplification, warmup: false },
        Bench { name: "consensus.snapshot_catchup", unit: "MB/s", target: ">= 200 (1 GiB missed)", run: snapshot_catchup, warmup: false },
    ]
}

/// Writes `bytes` of state in 256 KiB values (keys `big/<n>`) through
/// `member`, from 16 concurrent writers.
async fn write_state(h: &Harness, member: &Consensus, bytes: usize) -> anyhow::Result<()> {
    let count = bytes.div_ceil(BIG_VALUE);
    let member = member.clone();
    h.on_scheduler(0, async move {
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let member = member.clone();
            writers.spawn(async move {
                for n in (w..count).step_by(WRITERS) {
                    let value = vec![(n % 251) as u8; BIG_VALUE];
                    member.reach_consensus(Command::Put { key: format!("big/{n:08}"), value }, T).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = writers.join_next().await {
            done.context("a writer panicked")??;
        }
        anyhow::Ok(())
    })
    .await?
}

/// Writes `count` entries of a 16-byte key and a 200-byte value (distinct
/// keys), from 64 concurrent writers.
async fn write_small(h: &Harness, member: &Consensus, count: usize) -> anyhow::Result<()> {
    let member = member.clone();
    h.on_scheduler(0, async move {
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..64 {
            let member = member.clone();
            writers.spawn(async move {
                for n in (w..count).step_by(64) {
                    member.reach_consensus(Command::Put { key: format!("small/{n:010}"), value: vec![b's'; 200] }, T).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = writers.join_next().await {
            done.context("a writer panicked")??;
        }
        anyhow::Ok(())
    })
    .await?
}

/// This process's resident memory, in MiB.
fn rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kib / 1024.0)
}

/// Bytes of disk the files under `dir` take (allocated blocks, as `du`:
/// redb's files are sparse where it has not written).
fn disk_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { disk_bytes(&entry.path())? } else { meta.blocks() * 512 };
    }
    Ok(total)
}

/// Bytes of disk `file` takes (allocated blocks).
fn file_bytes(file: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(file).map_or(0, |m| m.blocks() * 512)
}

/// RSS of this process, which runs one member (and the bench), once 4 GiB
/// of state (64 MiB with `--quick`) were written through it and read back.
fn rss_at_state(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let bytes = sizes.pick(4 << 30, 64 * MIB);
    h.driver.block_on(async {
        let g = group_of(h, 1, ConsensusConfig::new).await?;
        write_state(h, &g.members[0], bytes).await?;
        // Every value read once, through the state database's cache.
        for n in 0..bytes.div_ceil(BIG_VALUE) {
            let v = g.members[0].local_get(&format!("big/{n:08}")).await.with_context(|| format!("big/{n:08} is missing"))?;
            anyhow::ensure!(v.len() == BIG_VALUE, "big/{n:08} has {} bytes", v.len());
        }
        let rss = rss_mib()?;
        let data = g.dir.0.join(g.nodes[0].name());
        let size = |f: &str| file_bytes(&data.join(f)) >> 20;
        eprintln!("  node.rss_at_state: on disk, raft.log {} MiB, state.redb {} MiB", size("raft.log"), size("state.redb"));
        g.stop().await;
        Ok(rss)
    })
}

/// Milliseconds from starting a member again on a data directory holding
/// 1 GiB of state (64 MiB with `--quick`) and 100,000 log entries (10,000)
/// to its first committed write.
fn restart(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let (bytes, entries) = (sizes.pick(1 << 30, 64 * MIB), sizes.pick(100_000, 10_000));
    // Snapshots (and the log's purge) only by entries, past what is written.
    let keep_log = |id| {
        let mut c = ConsensusConfig::new(id);
        c.snapshot_every = 1_000_000;
        c.snapshot_log_bytes = u64::MAX;
        c
    };
    h.driver.block_on(async {
        let g = group_of(h, 1, ConsensusConfig::new).await?;
        write_state(h, &g.members[0], bytes).await?;
        let g = restart_member(h, g, keep_log).await?.1;
        write_small(h, &g.members[0], entries).await?;
        let (took, g) = restart_member(h, g, keep_log).await?;
        g.stop().await;
        Ok(took.as_secs_f64() * 1e3)
    })
}

/// Stops the only member of `g` and starts it again on its data directory
/// (a new node under the same name): how long until a write committed.
async fn restart_member(h: &Harness, mut g: Group, config: fn(u64) -> ConsensusConfig) -> anyhow::Result<(Duration, Group)> {
    let (member, node) = (g.members.remove(0), g.nodes.remove(0));
    member.shutdown().await;
    node.shutdown();
    let (name, data, secret) = (node.name().to_owned(), g.dir.0.join(node.name()), g.secret.clone());
    let fresh = h.named_node(&name);
    let start = Instant::now();
    let (cluster, member) = h
        .on_scheduler(0, async move {
            let cluster = Cluster::start(fresh, ClusterConfig::new(name, "127.0.0.1:0", secret)).await?;
            let mut config = config(1).durable(data);
            config.existing = true;
            let member = Consensus::start(&cluster, config).await?;
            anyhow::Ok((cluster, member))
        })
        .await??;
    loop {
        match member.reach_consensus(Command::Put { key: "restarted".into(), value: vec![1] }, Duration::from_millis(100)).await {
            Ok(_) => break,
            Err(e) if start.elapsed() > T => bail!("no write committed within {T:?} of the restart: {e}"),
            Err(_) => {}
        }
    }
    let took = start.elapsed();
    g.nodes.push(cluster);
    g.members.push(member);
    Ok((took, g))
}

/// Entries written for the disk benches: 110,000 (20,000 with `--quick`)
/// of a 16-byte key and a 200-byte value, to distinct keys.
fn disk_entries(sizes: &Sizes) -> usize {
    sizes.pick(110_000, 20_000)
}

/// A member's data directory after `disk_entries` small writes and a
/// snapshot (the log purged behind it): (bytes on disk, entries).
fn disk_after_writes(sizes: &Sizes, h: &Harness) -> anyhow::Result<(u64, usize)> {
    let entries = disk_entries(sizes);
    h.driver.block_on(async {
        let g = group_of(h, 1, ConsensusConfig::new).await?;
        write_small(h, &g.members[0], entries).await?;
        g.members[0].snapshot().await.context("a snapshot")?;
        let data = g.dir.0.join(g.nodes[0].name());
        let bytes = disk_bytes(&data)?;
        let size = |f: &str| file_bytes(&data.join(f)) >> 10;
        eprintln!("  disk: raft.log {} KiB, state.redb {} KiB", size("raft.log"), size("state.redb"));
        g.stop().await;
        Ok((bytes, entries))
    })
}

/// Bytes of disk per entry written (16-byte key, 200-byte value).
fn bytes_per_entry(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let (bytes, entries) = disk_after_writes(sizes, h)?;
    Ok(bytes as f64 / entries as f64)
}

/// Bytes of disk over the bytes of keys and values they hold.
fn amplification(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let (bytes, entries) = disk_after_writes(sizes, h)?;
    let logical = entries as f64 * (16.0 + 200.0);
    Ok(bytes as f64 / logical)
}

/// A follower is down while 1 GiB of state (64 MiB with `--quick`) is
/// written and the leader's log is purged behind snapshots; then it comes
/// back: megabytes of state per second until it has applied what the
/// leader had.
fn snapshot_catchup(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let bytes = sizes.pick(1 << 30, 64 * MIB);
    // Ten entries kept behind a snapshot: the follower catches up through
    // the snapshot, not the log (1,000 entries of 256 KiB would be 250 MiB).
    let config = |id| {
        let mut c = ConsensusConfig::new(id);
        c.logs_kept = 10;
        c.snapshot_log_bytes = 16 << 20;
        c
    };
    h.driver.block_on(async {
        let mut g = group_of(h, 3, config).await?;
        let li = g.leader()?;
        let f = (li + 1) % 3;
        g.members[f].shutdown().await;
        g.nodes[f].shutdown();
        write_state(h, &g.members[li], bytes).await?;
        let target = g.members[li].applied_index().await.context("the leader applied nothing")?;
        let (name, data, secret, leader_addr) =
            (g.nodes[f].name().to_owned(), g.dir.0.join(g.nodes[f].name()), g.secret.clone(), g.nodes[li].addr().to_owned());
        let fresh = h.named_node(&name);
        let start = Instant::now();
        let (cluster, member) = h
            .on_scheduler(f, async move {
                let cluster = Cluster::start(fresh, ClusterConfig::new(name, "127.0.0.1:0", secret)).await?;
                cluster.connect(&leader_addr).await?;
                let mut config = config(f as u64 + 1).durable(data);
                config.existing = true;
                let member = Consensus::start(&cluster, config).await?;
                anyhow::Ok((cluster, member))
            })
            .await??;
        while member.applied_index().await.is_none_or(|i| i < target) {
            if start.elapsed() > Duration::from_secs(600) {
                bail!("the follower did not catch up in 10 minutes (applied {:?} of {target})", member.applied_index().await);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        g.nodes[f] = cluster;
        g.members[f] = member;
        g.stop().await;
        Ok(bytes as f64 / 1e6 / took.as_secs_f64())
    })
}
