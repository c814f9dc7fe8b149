//! What the log says about a member's Raft, from openraft's metrics: a new
//! leader or term, a snapshot taken or installed, Raft stopping on a fatal
//! error (a storage read that failed, for one), and, on the leader, a
//! follower that cannot catch up.
//!
//! With a Telemetry service ([`super::ConsensusConfig::telemetry`]), the
//! same goes out as events (see the README's table of the framework's
//! events): `foundation.consensus.leader`, `.snapshot`, `.follower`, and,
//! on the leader, each follower's `.replication_lag` at most once a
//! [`REVIEW_EVERY`]. A snapshot's steps are reported where they happen,
//! through [`emit`]: `.snapshot_build` by the state machine,
//! `.snapshot_send` by the leader's network client, `.snapshot_install`
//! by the member's `raft.snapshot_chunk` handler.
//!
//! A follower cannot catch up when it is more than
//! [`FOLLOWER_LAG_ENTRIES_MAX`] entries behind the leader's log, or behind
//! at all with its matched index unmoved for [`FOLLOWER_STALL`] (it is
//! down, cut off, or refusing appends). That is logged once when it starts
//! (a warning with the reason) and once when it ends (at most
//! [`FOLLOWER_CAUGHT_UP_ENTRIES`] behind and moving), each
//! follower's lines bounded by a [`LogLimit`] in case it flaps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use foundation::rt::Instant;
use openraft::RaftMetrics;
use openraft::async_runtime::WatchReceiver;

use openraft::ServerState;

use super::Inner;
use super::types::{NodeId, TypeConfig};
use crate::log_limit::LogLimit;
use crate::services::Telemetry;

/// A follower further behind than this many entries cannot catch up.
pub const FOLLOWER_LAG_ENTRIES_MAX: u64 = 10_000;
/// A follower behind whose matched index has not moved for this long
/// cannot catch up.
pub const FOLLOWER_STALL: Duration = Duration::from_secs(5);
/// A lagging follower is back once it is at most this many entries behind
/// and moving.
pub const FOLLOWER_CAUGHT_UP_ENTRIES: u64 = 64;
/// How often the metrics are looked at when nothing changes (a stalled
/// follower changes nothing).
const REVIEW_EVERY: Duration = Duration::from_secs(1);

/// Watches the member's Raft metrics (across storage reopenings) and logs
/// what changed; ends with the member.
pub(super) fn observe(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    inner.rt.spawn(async move {
        let mut seen = Seen { telemetry: weak.upgrade().and_then(|inner| inner.config.telemetry.clone()), ..Seen::default() };
        // One receiver for as long as its Raft lives: a fresh clone each
        // round would see the current value as new and wake at once, and
        // the loop would spin (it hung every simulated run).
        let mut kept = None;
        loop {
            let (mut metrics, name) = {
                let Some(inner) = weak.upgrade() else { return };
                if inner.stopping.load(Ordering::Acquire) {
                    return;
                }
                let metrics = kept.take().unwrap_or_else(|| inner.current.read().raft.metrics());
                (metrics, inner.name.clone())
            };
            let now = Instant::now();
            let m = metrics.borrow_watched().clone();
            seen.review(&name, &m, now);
            tokio::select! {
                biased;
                changed = metrics.changed() => {
                    if changed.is_ok() {
                        kept = Some(metrics);
                    } else {
                        // This Raft stopped (a storage reopening replaces
                        // it): look again, at the new one, after a pause.
                        foundation::rt::sleep(REVIEW_EVERY).await;
                    }
                }
                _ = foundation::rt::sleep(REVIEW_EVERY) => kept = Some(metrics),
            }
        }
    });
}

/// What was last logged, and each follower's progress (on the leader).
struct Seen {
    first: bool,
    leader: Option<NodeId>,
    term: u64,
    snapshot: Option<u64>,
    fatal: bool,
    followers: BTreeMap<NodeId, Progress>,
    limit: LogLimit,
    telemetry: Option<Telemetry>,
}

/// Emits `event` with measurements and metadata, when there is telemetry.
pub(super) fn emit(telemetry: &Option<Telemetry>, event: &str, measurements: &[(&str, f64)], metadata: &[(&str, &str)]) {
    if let Some(t) = telemetry {
        let m = measurements.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        let meta = metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        t.emit(event, &m, &meta);
    }
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            first: true,
            leader: None,
            term: 0,
            snapshot: None,
            fatal: false,
            followers: BTreeMap::new(),
            limit: LogLimit::new(4, Duration::from_secs(60)),
            telemetry: None,
        }
    }
}

/// A follower's matched index, since when, and whether it is lagging.
struct Progress {
    matched: Option<u64>,
    since: Instant,
    lagging: bool,
    /// When its lag was last reported to telemetry.
    reported: Option<Instant>,
}

/// A member's name in the membership, else its id.
fn name_of(m: &RaftMetrics<TypeConfig>, id: NodeId) -> String {
    m.membership_config.membership().get_node(&id).map_or_else(|| format!("id {id}"), |n| n.name.clone())
}

impl Seen {
    fn review(&mut self, me: &str, m: &RaftMetrics<TypeConfig>, now: Instant) {
        let leader = m.current_leader;
        if (leader, m.current_term) != (self.leader, self.term) && !(self.first && leader.is_none()) {
            let what = if leader != self.leader { "leader changed" } else { "term changed" };
            let name = leader.map_or_else(|| "none".to_owned(), |id| name_of(m, id));
            tracing::info!(member = %me, leader = %name, term = m.current_term, state = ?m.state, "{what}");
            let state = format!("{:?}", m.state);
            emit(
                &self.telemetry,
                "foundation.consensus.leader",
                &[("term", m.current_term as f64)],
                &[("member", me), ("leader", &name), ("state", &state)],
            );
        }
        (self.leader, self.term) = (leader, m.current_term);
        let snapshot = m.snapshot.as_ref().map(|l| l.index);
        if snapshot != self.snapshot && !self.first {
            tracing::info!(member = %me, index = snapshot, "snapshot: this member's state machine has a new snapshot (taken or installed)");
            emit(&self.telemetry, "foundation.consensus.snapshot", &[("index", snapshot.unwrap_or(0) as f64)], &[("member", me)]);
        }
        self.snapshot = snapshot;
        if let (Err(fatal), false) = (&m.running_state, self.fatal) {
            tracing::error!(member = %me, error = %fatal, "raft stopped on a fatal error");
        }
        self.fatal = m.running_state.is_err();
        self.first = false;
        self.followers_caught_up(me, m, now);
    }

    /// On the leader: logs the followers that start or stop lagging.
    fn followers_caught_up(&mut self, me: &str, m: &RaftMetrics<TypeConfig>, now: Instant) {
        let Some(replication) = m.replication.as_ref().filter(|_| m.state == ServerState::Leader) else {
            self.followers.clear();
            return;
        };
        let last = m.last_log_index.unwrap_or(0);
        self.followers.retain(|id, _| replication.contains_key(id));
        for (id, matched) in replication.iter().filter(|(id, _)| **id != m.id) {
            let matched = matched.as_ref().map(|l| l.index);
            let p = self.followers.entry(*id).or_insert(Progress { matched, since: now, lagging: false, reported: None });
            if p.matched != matched {
                (p.matched, p.since) = (matched, now);
            }
            let behind = last.saturating_sub(matched.unwrap_or(0));
            let stalled = behind > 0 && now.saturating_duration_since(p.since) >= FOLLOWER_STALL;
            if self.telemetry.is_some() && p.reported.is_none_or(|r| now.saturating_duration_since(r) >= REVIEW_EVERY) {
                p.reported = Some(now);
                let follower = name_of(m, *id);
                emit(
                    &self.telemetry,
                    "foundation.consensus.replication_lag",
                    &[("entries", behind as f64)],
                    &[("member", me), ("follower", &follower)],
                );
            }
            let lagging =
                if p.lagging { stalled || behind > FOLLOWER_CAUGHT_UP_ENTRIES } else { behind > FOLLOWER_LAG_ENTRIES_MAX || stalled };
            if lagging == p.lagging {
                continue;
            }
            p.lagging = lagging;
            let follower = name_of(m, *id);
            let state = if lagging { "lagging" } else { "caught_up" };
            emit(
                &self.telemetry,
                "foundation.consensus.follower",
                &[("behind", behind as f64)],
                &[("member", me), ("follower", &follower), ("state", state)],
            );
            let Some(left_out) = self.limit.check(&follower, now) else { continue };
            if lagging {
                let reason = if stalled {
                    format!("its matched index has not moved for {} s while behind", now.saturating_duration_since(p.since).as_secs())
                } else {
                    format!("it is more than {FOLLOWER_LAG_ENTRIES_MAX} entries behind")
                };
                tracing::warn!(member = %me, %follower, matched, last_log_index = last, behind, %reason, left_out, "a follower cannot catch up");
            } else {
                tracing::info!(member = %me, %follower, matched, last_log_index = last, left_out, "the follower caught up");
            }
        }
    }
}
