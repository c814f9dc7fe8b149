//! The lock workload: clients take a few named locks through the nodes'
//! coordination service (`chaos.lock.acquire` on a node, so the lease is
//! judged by that node's clock), use them for a while, and give them back;
//! then [`check_locks`] checks what they saw.
//!
//! A client holds a lock from the answer that granted it until it starts
//! giving it back, or until its lease runs out by its own reckoning: the
//! call's start plus the lease, less [`LockWorkload::margin`] (the clock
//! error a holder allows for). Sometimes it keeps using the lock past that
//! point (it knows its lease is over), to press on the lease's end.
//!
//! Checked, for each lock:
//! - **mutual exclusion**: no two holders' holdings overlap;
//! - **fencing tokens only grow**: a holding granted after another one
//!   was acknowledged has a larger token, and one token never has two
//!   holders.
//!
//! An acquire whose outcome is unknown may hold the lock (others are then
//! refused until its lease ends) but never counts as a holding: the client
//! does not use it, and carries on under a new holder name.

use std::collections::BTreeMap;
use std::time::Duration;

use foundation_cluster::rpc::RpcError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::agent::services::{AcquireReply, ServiceReply};
use crate::cluster::TestCluster;
use crate::recorder::Recorder;

/// The lock workload.
#[derive(Clone, Debug)]
pub struct LockWorkload {
    /// Concurrent clients.
    pub clients: usize,
    /// Locks (`l0`, `l1`, ...).
    pub locks: usize,
    /// The lease each acquire asks for.
    pub lease: Duration,
    /// The clock error a holder allows for: it trusts its lease for
    /// `lease - margin` from its call.
    pub margin: Duration,
    /// How long clients run.
    pub duration: Duration,
    /// Each call's timeout.
    pub op_timeout: Duration,
    /// Pause between a client's attempts.
    pub think: Duration,
    /// Seed of the clients' choices.
    pub seed: u64,
}

/// What one call did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum LockOutcome {
    /// Granted under this token.
    Granted {
        /// The fencing token.
        token: u64,
    },
    /// Refused: another holder has it.
    Held {
        /// Who.
        holder: String,
        /// Under which token.
        token: u64,
    },
    /// Given back (`true`), or it was no longer held under the token.
    Released {
        /// Whether it still held it.
        held: bool,
    },
    /// Did not happen.
    Failed {
        /// Why.
        why: String,
    },
    /// May or may not have happened.
    Unknown {
        /// Why.
        why: String,
    },
}

/// One lock call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockEvent {
    /// The client.
    pub client: usize,
    /// The holder name it used.
    pub holder: String,
    /// The lock.
    pub lock: String,
    /// `acquire` or `release`.
    pub op: &'static str,
    /// The node it called.
    pub node: String,
    /// When the call started (µs since the workload started).
    pub invoke_us: u64,
    /// When it ended.
    pub complete_us: u64,
    /// How.
    #[serde(flatten)]
    pub outcome: LockOutcome,
}

/// What the lock workload saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockReport {
    /// Every call, in invoke order.
    pub events: Vec<LockEvent>,
    /// The lease the clients asked for (µs) and the margin they kept (µs).
    pub lease_us: u64,
    /// See [`LockWorkload::margin`].
    pub margin_us: u64,
}

impl LockReport {
    /// Locks granted.
    pub fn granted(&self) -> usize {
        self.events.iter().filter(|e| matches!(e.outcome, LockOutcome::Granted { .. })).count()
    }

    /// Acquires refused because another held the lock.
    pub fn refused(&self) -> usize {
        self.events.iter().filter(|e| matches!(e.outcome, LockOutcome::Held { .. })).count()
    }

    /// Mutual exclusion and fencing violations ([`check_locks`]).
    pub fn violations(&self) -> Vec<String> {
        check_locks(&self.events, Duration::from_micros(self.lease_us), Duration::from_micros(self.margin_us))
    }
}

impl LockWorkload {
    /// 3 clients on one lock, leases of 500 ms trusted for 450 ms, 1 s
    /// timeouts, 50 ms between attempts.
    pub fn new(seed: u64, duration: Duration) -> Self {
        Self {
            clients: 3,
            locks: 1,
            lease: Duration::from_millis(500),
            margin: Duration::from_millis(50),
            duration,
            op_timeout: Duration::from_secs(1),
            think: Duration::from_millis(50),
            seed,
        }
    }

    /// Runs the clients until `duration` has passed.
    pub async fn run(&self, cluster: &TestCluster) -> LockReport {
        let clock = Recorder::new();
        let tasks: Vec<_> = (0..self.clients)
            .map(|c| {
                let (w, cluster, clock) = (self.clone(), cluster.clone(), clock.clone());
                foundation::rt::spawn(async move { w.client(c, &cluster, &clock).await })
            })
            .collect();
        let mut events = Vec::new();
        for t in tasks {
            events.extend(t.await.unwrap_or_default());
        }
        events.sort_by_key(|e| (e.invoke_us, e.client));
        LockReport { events, lease_us: micros(self.lease), margin_us: micros(self.margin) }
    }

    async fn client(&self, c: usize, cluster: &TestCluster, clock: &Recorder) -> Vec<LockEvent> {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ (c as u64 + 1).wrapping_mul(0x6a09_e667_f3bc_c909));
        let mut node = c % cluster.size();
        let mut incarnation = 0;
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + self.duration;
        while tokio::time::Instant::now() < deadline {
            let holder = format!("c{c}.{incarnation}");
            let lock = format!("l{}", rng.random_range(0..self.locks.max(1)));
            let name = cluster.names()[node].clone();
            let invoke_us = clock.now_us();
            let req = (lock.clone(), holder.clone(), self.lease, self.op_timeout);
            let reply: Result<AcquireReply, RpcError> =
                cluster.client().rpc(&name, "chaos.lock.acquire", req, self.op_timeout + self.op_timeout / 2).await;
            let outcome = match reply {
                Ok(ServiceReply::Done(Ok(l))) => LockOutcome::Granted { token: l.token },
                Ok(ServiceReply::Done(Err(l))) => LockOutcome::Held { holder: l.holder, token: l.token },
                Ok(ServiceReply::Failed(why)) => LockOutcome::Failed { why },
                Ok(ServiceReply::Unknown(why)) => LockOutcome::Unknown { why },
                Err(e) => rpc_outcome(&e),
            };
            let granted = match &outcome {
                LockOutcome::Granted { token } => Some(*token),
                _ => None,
            };
            let moved = matches!(outcome, LockOutcome::Failed { .. } | LockOutcome::Unknown { .. });
            if matches!(outcome, LockOutcome::Unknown { .. }) {
                incarnation += 1;
            }
            let event = |op, invoke_us, outcome| LockEvent {
                client: c,
                holder: holder.clone(),
                lock: lock.clone(),
                op,
                node: name.clone(),
                invoke_us,
                complete_us: clock.now_us(),
                outcome,
            };
            events.push(event("acquire", invoke_us, outcome));
            if let Some(token) = granted {
                // Use it: usually within the lease, sometimes past it.
                let lease_us = micros(self.lease);
                tokio::time::sleep(Duration::from_micros(rng.random_range(0..=lease_us + lease_us / 5))).await;
                let invoke_us = clock.now_us();
                let req = (lock.clone(), holder.clone(), token, self.op_timeout);
                let reply: Result<ServiceReply<bool>, RpcError> =
                    cluster.client().rpc(&name, "chaos.lock.release", req, self.op_timeout + self.op_timeout / 2).await;
                let outcome = match reply {
                    Ok(ServiceReply::Done(held)) => LockOutcome::Released { held },
                    Ok(ServiceReply::Failed(why)) => LockOutcome::Failed { why },
                    Ok(ServiceReply::Unknown(why)) => LockOutcome::Unknown { why },
                    Err(e) => rpc_outcome(&e),
                };
                events.push(event("release", invoke_us, outcome));
            }
            if moved {
                node = (node + 1) % cluster.size();
            }
            tokio::time::sleep(self.think).await;
        }
        events
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// An RPC error as an outcome: refused before it ran is failed, anything
/// else unknown.
fn rpc_outcome(e: &RpcError) -> LockOutcome {
    match e {
        RpcError::UnknownHandler { .. } | RpcError::Busy { .. } | RpcError::BadRequest { .. } | RpcError::Send(_) => {
            LockOutcome::Failed { why: e.to_string() }
        }
        _ => LockOutcome::Unknown { why: e.to_string() },
    }
}

/// A holding a client acted on.
struct Holding<'a> {
    holder: &'a str,
    token: u64,
    invoke_us: u64,
    from_us: u64,
    until_us: u64,
}

/// Checks a lock history: mutual exclusion (by the holders' own reckoning
/// of their leases, `lease - margin` from each call's start) and growing
/// fencing tokens. Returns the violations, each named with its holders,
/// tokens and times.
pub fn check_locks(events: &[LockEvent], lease: Duration, margin: Duration) -> Vec<String> {
    let trust_us = micros(lease.saturating_sub(margin));
    let mut by_lock: BTreeMap<&str, Vec<Holding<'_>>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.op == "acquire") {
        let LockOutcome::Granted { token } = e.outcome else { continue };
        let released = events
            .iter()
            .filter(|r| r.op == "release" && r.client == e.client && r.lock == e.lock && r.invoke_us >= e.complete_us)
            .map(|r| r.invoke_us)
            .min()
            .unwrap_or(u64::MAX);
        let until_us = (e.invoke_us + trust_us).min(released);
        by_lock.entry(&e.lock).or_default().push(Holding {
            holder: &e.holder,
            token,
            invoke_us: e.invoke_us,
            from_us: e.complete_us,
            until_us,
        });
    }
    let mut violations = Vec::new();
    let s = |us: u64| us as f64 / 1e6;
    for (lock, holdings) in &by_lock {
        for (i, a) in holdings.iter().enumerate() {
            for b in &holdings[i + 1..] {
                if a.holder == b.holder {
                    continue;
                }
                if a.token == b.token {
                    violations.push(format!("{lock}: token {} granted to both {} and {}", a.token, a.holder, b.holder));
                }
                if a.from_us < a.until_us && b.from_us < b.until_us && a.from_us < b.until_us && b.from_us < a.until_us {
                    violations.push(format!(
                        "{lock}: {} (token {}) held it {:.3}-{:.3} s while {} (token {}) held it {:.3}-{:.3} s",
                        a.holder,
                        a.token,
                        s(a.from_us),
                        s(a.until_us),
                        b.holder,
                        b.token,
                        s(b.from_us),
                        s(b.until_us)
                    ));
                }
                for (x, y) in [(a, b), (b, a)] {
                    if x.from_us < y.invoke_us && x.token >= y.token {
                        violations.push(format!(
                            "{lock}: token went down: {} got {} (acknowledged at {:.3} s), then {} got {} (asked at {:.3} s)",
                            x.holder,
                            x.token,
                            s(x.from_us),
                            y.holder,
                            y.token,
                            s(y.invoke_us)
                        ));
                    }
                }
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(client: usize, token: u64, invoke_us: u64, complete_us: u64) -> LockEvent {
        LockEvent {
            client,
            holder: format!("c{client}.0"),
            lock: "l0".into(),
            op: "acquire",
            node: "n1".into(),
            invoke_us,
            complete_us,
            outcome: LockOutcome::Granted { token },
        }
    }

    fn release(client: usize, invoke_us: u64) -> LockEvent {
        LockEvent { op: "release", outcome: LockOutcome::Released { held: true }, ..grant(client, 0, invoke_us, invoke_us + 10) }
    }

    const LEASE: Duration = Duration::from_millis(500);
    const MARGIN: Duration = Duration::from_millis(50);

    #[test]
    fn one_holder_after_another_passes() {
        // c0 from 0.01 s to its release at 0.2 s; c1 after it; c2 after
        // c1's lease ran out (0.3 + 0.45 s) without a release.
        let events = vec![grant(0, 5, 0, 10_000), release(0, 200_000), grant(1, 9, 300_000, 310_000), grant(2, 12, 760_000, 770_000)];
        assert_eq!(check_locks(&events, LEASE, MARGIN), Vec::<String>::new());
    }

    #[test]
    fn overlapping_holders_are_a_violation() {
        // c1 is granted while c0 still trusts its lease (until 0.45 s).
        let events = vec![grant(0, 5, 0, 10_000), grant(1, 9, 300_000, 310_000)];
        let v = check_locks(&events, LEASE, MARGIN);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("c0.0 (token 5) held it 0.010-0.450 s while c1.0 (token 9)"), "{v:?}");
    }

    #[test]
    fn a_smaller_token_after_an_acknowledged_grant_is_a_violation() {
        let events = vec![grant(0, 9, 0, 10_000), release(0, 20_000), grant(1, 5, 30_000, 40_000)];
        let v = check_locks(&events, LEASE, MARGIN);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("token went down: c0.0 got 9"), "{v:?}");
    }

    #[test]
    fn one_token_for_two_holders_is_a_violation() {
        let events = vec![grant(0, 7, 0, 10_000), release(0, 20_000), grant(1, 7, 30_000, 40_000)];
        let v = check_locks(&events, LEASE, MARGIN);
        assert!(v.iter().any(|v| v.contains("token 7 granted to both")), "{v:?}");
    }
}
