//! Coordination on consensus: locks with leases and fencing tokens, and
//! barriers.
//!
//! # Locks
//! [`Consensus::acquire_lock`] takes a named lock for a holder until its
//! lease ends; the same holder renews it. Every grant, a renewal too, gets
//! a fencing token, the index of its entry in the log, so tokens only grow:
//! two holders never hold a lock under the same token, a release sent
//! before a renewal (its outcome unknown to the holder) does not end the
//! renewed lease, and a resource that remembers the largest token it has
//! seen refuses a holder whose lease ran out unnoticed (its token is
//! smaller). Lease ends are judged with the proposer's clock
//! (`Rt::system_time`): leases assume clocks agree to well within a lease;
//! the fencing token does not.
//!
//! # Barriers
//! [`Consensus::barrier`] records an arrival and waits until `count`
//! participants have arrived.

use std::time::{Duration, UNIX_EPOCH};

use super::types::{Answer, Command, LockState, Query};
use super::{Consensus, ConsensusError};

/// How often a barrier looks again.
const BARRIER_POLL: Duration = Duration::from_millis(10);

/// Why a lock was not granted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Another holder has it.
    #[error("lock held by {} (token {}) until {} ms", .0.holder, .0.token, .0.expires_ms)]
    Held(LockState),
    /// Consensus did not decide (see [`ConsensusError`]).
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
}

impl Consensus {
    fn now_ms(&self) -> u64 {
        let now = self.inner.cluster.upgrade().map(|c| c.node().rt().system_time());
        now.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as u64)
    }

    /// Takes (or renews) `lock` for `holder` for `lease`; returns the lease
    /// with its fencing token.
    pub async fn acquire_lock(&self, lock: &str, holder: &str, lease: Duration, timeout: Duration) -> Result<LockState, LockError> {
        let cmd = Command::Acquire { lock: lock.into(), holder: holder.into(), lease_ms: lease.as_millis() as u64, now_ms: self.now_ms() };
        let decision = self.reach_consensus(cmd, timeout).await?;
        let state = decision.applied.lock.ok_or_else(|| ConsensusError::Raft("a lock command without a lock state".into()))?;
        if decision.applied.ok { Ok(state) } else { Err(LockError::Held(state)) }
    }

    /// Gives `lock` back; `false` if `holder` no longer held it under `token`.
    pub async fn release_lock(&self, lock: &str, holder: &str, token: u64, timeout: Duration) -> Result<bool, ConsensusError> {
        let cmd = Command::Release { lock: lock.into(), holder: holder.into(), token };
        Ok(self.reach_consensus(cmd, timeout).await?.applied.ok)
    }

    /// The lock's lease as the group knows it (linearizable).
    pub async fn lock_state(&self, lock: &str, timeout: Duration) -> Result<Option<LockState>, ConsensusError> {
        match self.query(Query::Lock(lock.into()), timeout).await? {
            Answer::Lock(l) => Ok(l),
            other => Err(ConsensusError::Raft(format!("unexpected answer {other:?}"))),
        }
    }

    /// Arrives at `barrier` as `participant` and waits until `count`
    /// participants have arrived (at most `timeout` in all).
    pub async fn barrier(&self, barrier: &str, participant: &str, count: u64, timeout: Duration) -> Result<(), ConsensusError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let cmd = Command::Arrive { barrier: barrier.into(), participant: participant.into() };
        let mut arrived = self.reach_consensus(cmd, timeout).await?.applied.arrived.unwrap_or(0);
        while arrived < count {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ConsensusError::NoLeader(timeout));
            }
            tokio::time::sleep(BARRIER_POLL.min(remaining)).await;
            if let Answer::Arrived(n) = self.query(Query::Arrived(barrier.into()), remaining).await? {
                arrived = n;
            }
        }
        Ok(())
    }
}
