//! Nemeses and a seeded chaos monkey that composes them.
//!
//! Every nemesis injects one fault and undoes it after a hold (a random
//! 200 ms – 2 s); the monkey waits a random interval (0 – 1 s, as the
//! seed's `:timer.sleep(:rand.uniform(1000))`) between injections and
//! keeps at most one nemesis active at a time, so a 3-node cluster always
//! comes back to a majority. Every fault goes through
//! [`TestCluster::apply`] (logged with its time) or is logged here.
//!
//! | nemesis | what it does |
//! |---|---|
//! | `kill_process` | kills a random worker of a random node's agent ecosystem (its supervisor restarts it) |
//! | `partition` | random halves |
//! | `memory_pressure` | a node holds 64 MiB (16 MiB simulated), touched, for the hold |
//! | `cpu_spike` | a node's task spins for the hold (simulated: the node is paused, as a starved node looks) |
//! | `message_flood` | 2,000 messages to a random node's agent coordinator, never waiting (a full mailbox refuses) |
//! | `crash_restart` | kills a node, restarts it after the hold |
//! | `majorities_ring` | every node sees a majority, no two the same one (5+ nodes) |
//! | `bridge` | two halves that only a middle node sees both of |
//! | `swizzle_clog` | clogs a random subset's links one by one, then unclogs them in another order |

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::agent::FLOOD_TARGET;
use crate::cluster::{Backend, Fault, FaultError, TestCluster};

/// A kind of fault the monkey can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Nemesis {
    /// Kill a random process.
    KillProcess,
    /// Random halves.
    Partition,
    /// Memory pressure on a node.
    MemoryPressure,
    /// A CPU spike on a node.
    CpuSpike,
    /// A message flood to a node.
    MessageFlood,
    /// Crash a node and restart it.
    CrashRestart,
    /// Majorities ring.
    MajoritiesRing,
    /// Bridge.
    Bridge,
    /// Swizzle-clog.
    SwizzleClog,
}

impl Nemesis {
    /// Every nemesis.
    pub const ALL: [Nemesis; 9] = [
        Self::KillProcess,
        Self::Partition,
        Self::MemoryPressure,
        Self::CpuSpike,
        Self::MessageFlood,
        Self::CrashRestart,
        Self::MajoritiesRing,
        Self::Bridge,
        Self::SwizzleClog,
    ];

    /// The seed's five.
    pub const SEED: [Nemesis; 5] = [Self::KillProcess, Self::Partition, Self::MemoryPressure, Self::CpuSpike, Self::MessageFlood];

    /// Its name (as `--faults` takes it).
    pub fn name(self) -> &'static str {
        match self {
            Self::KillProcess => "kill_process",
            Self::Partition => "partition",
            Self::MemoryPressure => "memory_pressure",
            Self::CpuSpike => "cpu_spike",
            Self::MessageFlood => "message_flood",
            Self::CrashRestart => "crash_restart",
            Self::MajoritiesRing => "majorities_ring",
            Self::Bridge => "bridge",
            Self::SwizzleClog => "swizzle_clog",
        }
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nemesis {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|n| n.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|n| n.name()).collect();
            format!("unknown fault {s:?}; the faults are {}", names.join(", "))
        })
    }
}

/// One injection, as the monkey logs it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Injection {
    /// When (µs since the cluster started).
    pub at_us: u64,
    /// How long until it was undone (µs).
    pub held_us: u64,
    /// Which nemesis.
    pub nemesis: Nemesis,
    /// What it hit.
    pub detail: String,
}

/// What the monkey did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChaosReport {
    /// Every injection, in order.
    pub injections: Vec<Injection>,
    /// Injections that failed to apply (a node down, a call that timed out).
    pub errors: Vec<String>,
}

impl ChaosReport {
    /// How many faults were injected.
    pub fn failures_injected(&self) -> usize {
        self.injections.len()
    }

    /// Injections per nemesis.
    pub fn by_kind(&self) -> BTreeMap<Nemesis, usize> {
        let mut m = BTreeMap::new();
        for i in &self.injections {
            *m.entry(i.nemesis).or_insert(0) += 1;
        }
        m
    }
}

/// A seeded chaos monkey.
#[derive(Clone, Debug)]
pub struct ChaosMonkey {
    seed: u64,
    weights: Vec<(Nemesis, u32)>,
    interval: (Duration, Duration),
    hold: (Duration, Duration),
}

impl ChaosMonkey {
    /// Every nemesis at weight 1; intervals 0–1 s; holds 200 ms – 2 s.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            weights: Nemesis::ALL.iter().map(|n| (*n, 1)).collect(),
            interval: (Duration::ZERO, Duration::from_secs(1)),
            hold: (Duration::from_millis(200), Duration::from_secs(2)),
        }
    }

    /// Only these nemeses, at weight 1 each.
    pub fn only(mut self, nemeses: &[Nemesis]) -> Self {
        self.weights = nemeses.iter().map(|n| (*n, 1)).collect();
        self
    }

    /// Sets one nemesis's weight (0 turns it off).
    pub fn weight(mut self, nemesis: Nemesis, weight: u32) -> Self {
        self.weights.retain(|(n, _)| *n != nemesis);
        if weight > 0 {
            self.weights.push((nemesis, weight));
        }
        self
    }

    /// The pause between injections: uniform in `[min, max]`.
    pub fn interval(mut self, min: Duration, max: Duration) -> Self {
        self.interval = (min, max.max(min));
        self
    }

    /// How long a fault stays: uniform in `[min, max]`.
    pub fn hold(mut self, min: Duration, max: Duration) -> Self {
        self.hold = (min, max.max(min));
        self
    }

    fn pick(&self, rng: &mut SmallRng) -> Option<Nemesis> {
        let total: u32 = self.weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let mut roll = rng.random_range(0..total);
        for (n, w) in &self.weights {
            if roll < *w {
                return Some(*n);
            }
            roll -= w;
        }
        None
    }

    /// Injects faults for `duration`, then undoes the last one.
    pub async fn run(&self, cluster: &TestCluster, duration: Duration) -> ChaosReport {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ 0xc4a0_5eed);
        let mut report = ChaosReport::default();
        let deadline = tokio::time::Instant::now() + duration;
        while tokio::time::Instant::now() < deadline {
            let wait = uniform(&mut rng, self.interval);
            tokio::time::sleep(wait.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let Some(nemesis) = self.pick(&mut rng) else { break };
            let hold = uniform(&mut rng, self.hold).min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let at_us = micros(cluster.elapsed());
            match inject(cluster, nemesis, hold, &mut rng).await {
                Ok(detail) => {
                    tracing::info!(at_us, %nemesis, %detail, "chaos");
                    report.injections.push(Injection { at_us, held_us: micros(cluster.elapsed()) - at_us, nemesis, detail });
                }
                Err(e) => report.errors.push(format!("{nemesis} at {at_us} µs: {e}")),
            }
        }
        report
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn uniform(rng: &mut SmallRng, (min, max): (Duration, Duration)) -> Duration {
    if max <= min { min } else { Duration::from_micros(rng.random_range(micros(min)..=micros(max))) }
}

/// Majorities ring: with `m = n/2 + 1` (a majority), node `i` sees the
/// nodes within ring distance `d = ceil((m-1)/2)`, so itself and at least
/// `m - 1` others; the pairs farther apart are cut, and neighbours see
/// different majorities. Empty for fewer than 4 nodes.
pub fn majorities_ring(n: usize) -> Vec<(usize, usize)> {
    let d = (n / 2).div_ceil(2);
    let mut cut = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            if (b - a).min(n - (b - a)) > d {
                cut.push((a, b));
            }
        }
    }
    cut
}

async fn inject(cluster: &TestCluster, nemesis: Nemesis, hold: Duration, rng: &mut SmallRng) -> Result<String, String> {
    let n = cluster.size();
    let live: Vec<usize> = (0..n).filter(|i| !cluster.killed().contains(i)).collect();
    let Some(&target) = live.get(rng.random_range(0..live.len().max(1))) else {
        return Err("no live node".into());
    };
    let name = cluster.names()[target].clone();
    let sim = cluster.spec().backend == Backend::Simulated;
    let e = |e: FaultError| e.to_string();
    let detail = match nemesis {
        Nemesis::KillProcess => {
            let killed: Option<String> =
                cluster.client().rpc(&name, "chaos.kill_process", (), Duration::from_secs(1)).await.map_err(|e| e.to_string())?;
            tokio::time::sleep(hold).await;
            format!("{name}: {}", killed.unwrap_or_else(|| "no worker to kill".into()))
        }
        Nemesis::Partition => {
            let mut nodes: Vec<usize> = (0..n).collect();
            nodes.shuffle(rng);
            let half = nodes[..n / 2].to_vec();
            cluster.apply(Fault::Partition { groups: vec![half.clone()] }).await.map_err(e)?;
            tokio::time::sleep(hold).await;
            cluster.heal().await.map_err(e)?;
            format!("{half:?} | rest")
        }
        Nemesis::MemoryPressure => {
            let bytes: usize = if sim { 16 << 20 } else { 64 << 20 };
            let held: usize = cluster
                .client()
                .rpc(&name, "chaos.memory", (bytes, hold), hold + Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string())?;
            format!("{name}: {} MiB", held >> 20)
        }
        Nemesis::CpuSpike => {
            if sim {
                cluster.pause(target).await.map_err(e)?;
                tokio::time::sleep(hold).await;
                cluster.resume(target).await.map_err(e)?;
            } else {
                let _: u64 =
                    cluster.client().rpc(&name, "chaos.cpu", hold, hold + Duration::from_secs(2)).await.map_err(|e| e.to_string())?;
            }
            format!("{name}: {} ms", hold.as_millis())
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
            format!("{name}: 2000 messages, {refused} refused")
        }
        Nemesis::CrashRestart => {
            cluster.kill(target).await.map_err(e)?;
            tokio::time::sleep(hold).await;
            cluster.restart(target).await.map_err(e)?;
            name
        }
        Nemesis::MajoritiesRing | Nemesis::Bridge => {
            let cut = if nemesis == Nemesis::Bridge { bridge(n, rng) } else { majorities_ring(n) };
            if cut.is_empty() {
                return Err(format!("no {nemesis} on {n} nodes"));
            }
            cluster.apply(Fault::Cut { pairs: cut.clone() }).await.map_err(e)?;
            tokio::time::sleep(hold).await;
            cluster.heal().await.map_err(e)?;
            format!("cut {cut:?}")
        }
        Nemesis::SwizzleClog => {
            let mut nodes: Vec<usize> = (0..n).collect();
            nodes.shuffle(rng);
            nodes.truncate(rng.random_range(1..=n.div_ceil(2)));
            let step = hold / (2 * nodes.len() as u32).max(1);
            let mut clogged = Vec::new();
            for &a in &nodes {
                for b in (0..n).filter(|b| *b != a) {
                    cluster.clog(a, b).await.map_err(e)?;
                    clogged.push((a, b));
                }
                tokio::time::sleep(step).await;
            }
            clogged.shuffle(rng);
            for &(a, b) in &clogged {
                cluster.unclog(a, b).await.map_err(e)?;
            }
            tokio::time::sleep(step).await;
            format!("clogged {nodes:?}")
        }
    };
    Ok(detail)
}

/// Bridge: two halves, with one random node in the middle that sees both.
fn bridge(n: usize, rng: &mut SmallRng) -> Vec<(usize, usize)> {
    if n < 3 {
        return Vec::new();
    }
    let mut nodes: Vec<usize> = (0..n).collect();
    nodes.shuffle(rng);
    let (left, rest) = nodes.split_at((n - 1) / 2);
    let right = &rest[1..];
    let mut cut: Vec<(usize, usize)> = left.iter().flat_map(|a| right.iter().map(move |b| ((*a).min(*b), (*a).max(*b)))).collect();
    cut.sort_unstable();
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities_ring_leaves_every_node_a_majority_and_no_two_the_same() {
        assert!(majorities_ring(3).is_empty());
        for n in [5, 7] {
            let cut = majorities_ring(n);
            assert!(!cut.is_empty());
            let sees = |a: usize| (0..n).filter(|b| *b == a || !cut.contains(&(a.min(*b), a.max(*b)))).collect::<Vec<_>>();
            for a in 0..n {
                assert!(sees(a).len() > n / 2, "node {a} sees {:?} of {n}", sees(a));
            }
            assert_ne!(sees(0), sees(1));
        }
    }

    #[test]
    fn a_bridge_keeps_one_node_seeing_both_sides() {
        let mut rng = SmallRng::seed_from_u64(3);
        let cut = bridge(5, &mut rng);
        assert_eq!(cut.len(), 4);
        let touched: std::collections::BTreeSet<usize> = cut.iter().flat_map(|(a, b)| [*a, *b]).collect();
        assert_eq!(touched.len(), 4, "the middle node is cut from no one");
    }

    #[test]
    fn nemeses_parse_by_name_and_unknown_names_list_the_choices() {
        assert_eq!("swizzle_clog".parse::<Nemesis>(), Ok(Nemesis::SwizzleClog));
        let err = "flood".parse::<Nemesis>().unwrap_err();
        assert!(err.contains("message_flood"), "{err}");
    }
}
