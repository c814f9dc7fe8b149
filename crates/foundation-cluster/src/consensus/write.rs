//! The write path: [`Consensus::reach_consensus`] checks the proposal's
//! size and this member's storage and quorum, then proposes through the
//! local Raft member when it leads or forwards to the leader over the
//! `consensus.write` RPC, retrying while no leader has taken it; once one
//! may have, a timeout is `Unknown`. Traced writes get the spans
//! `consensus.write` and, on the leader, `raft.client_write`.

use std::time::Duration;

use foundation::context::with_global_context;
use openraft::error::ClientWriteError;
use openraft::vote::RaftLeaderId;

use super::{Command, Consensus, ConsensusError, Decision, RETRY, raft_err};
use crate::rpc::RpcError;

impl Consensus {
    /// Commits `command`, waiting at most `timeout`. With telemetry
    /// ([`ConsensusConfig::telemetry`]), the time it took goes into the
    /// histogram `foundation_consensus_commit_seconds{outcome}` (`committed`,
    /// `unknown`: it may still commit, `refused`).
    pub async fn reach_consensus(&self, command: Command, timeout: Duration) -> Result<Decision, ConsensusError> {
        let Some(mut span) = self.span("consensus.write", &command) else { return self.commit_timed(command, timeout).await };
        let result = with_global_context(span.context().clone(), self.commit_timed(command, timeout)).await;
        decided(&mut span, &result);
        result
    }

    /// A span in the current trace for `command` (see [`crate::traces`]).
    fn span(&self, name: &'static str, command: &Command) -> Option<crate::traces::Span> {
        // Looked at first: a write in no trace touches nothing else.
        foundation::context::current()?;
        let mut span = self.inner.cluster.upgrade()?.span(|| name.to_owned(), opentelemetry::trace::SpanKind::Internal)?;
        span.set("consensus.command", command.kind());
        Some(span)
    }

    async fn commit_timed(&self, command: Command, timeout: Duration) -> Result<Decision, ConsensusError> {
        let Some(telemetry) = &self.inner.config.telemetry else { return self.commit(command, timeout).await };
        let start = foundation::rt::Instant::now();
        let result = self.commit(command, timeout).await;
        let outcome = match &result {
            Ok(_) => "committed",
            Err(ConsensusError::Unknown(_)) => "unknown",
            Err(_) => "refused",
        };
        let secs = start.elapsed().as_secs_f64();
        telemetry.record(|| metrics::histogram!("foundation_consensus_commit_seconds", "outcome" => outcome).record(secs));
        result
    }

    async fn commit(&self, command: Command, timeout: Duration) -> Result<Decision, ConsensusError> {
        let limit = self.inner.config.max_proposal_bytes;
        if command.size() > limit {
            return Err(ConsensusError::TooLarge { len: command.size(), limit });
        }
        let deadline = tokio::time::Instant::now() + timeout;
        // Once a leader may have taken the proposal, a timeout is `Unknown`.
        let mut handed = false;
        loop {
            // Once handed, a failure is no longer "nothing happened".
            let quorum = match self.require_quorum() {
                Err(e) => return Err(if handed { ConsensusError::Unknown(timeout) } else { e }),
                Ok(q) => q,
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(if handed { ConsensusError::Unknown(timeout) } else { ConsensusError::NoLeader(timeout) });
            }
            if !quorum {
                tokio::time::sleep(RETRY.min(remaining)).await;
                continue;
            }
            let attempt = match self.leader() {
                Some((id, _)) if id == self.id() => {
                    handed = true;
                    self.write_here(command.clone(), remaining).await
                }
                Some((_, leader)) => {
                    let Some(cluster) = self.inner.cluster.upgrade() else { return Err(raft_err("this node has shut down")) };
                    match cluster
                        .rpc::<(Command, Duration), Result<Decision, ConsensusError>>(
                            &leader.name,
                            "consensus.write",
                            (command.clone(), remaining),
                            remaining,
                        )
                        .await
                    {
                        Ok(r) => {
                            // The leader refused it unproposed, or proposed it.
                            handed |= !matches!(r, Err(ConsensusError::NotLeader));
                            r
                        }
                        // It may have run there: retrying could apply it twice.
                        Err(RpcError::Timeout { .. } | RpcError::Lost { .. }) => return Err(ConsensusError::Unknown(timeout)),
                        // Not sent (or refused before it was read): try again.
                        Err(_) => Err(ConsensusError::NotLeader),
                    }
                }
                None => Err(ConsensusError::NotLeader),
            };
            match attempt {
                Err(ConsensusError::NotLeader) => tokio::time::sleep(RETRY.min(remaining)).await,
                Err(ConsensusError::Unknown(_)) => return Err(ConsensusError::Unknown(timeout)),
                other => return other,
            }
        }
    }

    /// Fails fast with `NoQuorum` when this member cannot see a majority;
    /// `Ok(false)` while it does not know the group's voters yet (a member
    /// that just started, before the leader's first append): wait.
    pub(super) fn require_quorum(&self) -> Result<bool, ConsensusError> {
        if let Some(why) = self.storage_failure() {
            return Err(ConsensusError::Storage(why));
        }
        let status = self.status();
        if status.quorum {
            return Ok(true);
        }
        if status.members.is_empty() {
            return Ok(false);
        }
        Err(ConsensusError::NoQuorum { reachable: status.reachable.len(), voters: status.members.len() })
    }

    /// Writes through the local Raft member (the leader, or it says where).
    pub(super) async fn write_here(&self, command: Command, timeout: Duration) -> Result<Decision, ConsensusError> {
        let Some(mut span) = self.span("raft.client_write", &command) else { return self.propose(command, timeout).await };
        let result = self.propose(command, timeout).await;
        decided(&mut span, &result);
        result
    }

    async fn propose(&self, command: Command, timeout: Duration) -> Result<Decision, ConsensusError> {
        #[cfg(feature = "bug-early-ack")]
        {
            let _ = timeout;
            let mut state = self.sm().dump().await;
            let applied = state.apply(0, command.clone());
            let raft = self.raft().clone();
            self.inner.rt.spawn(async move { raft.client_write(command).await.ok() });
            return Ok(Decision { committed: true, term: 0, index: 0, applied });
        }
        #[allow(unreachable_code)]
        match tokio::time::timeout(timeout, self.raft().client_write(command)).await {
            Err(_) => Err(ConsensusError::Unknown(timeout)),
            Ok(Ok(resp)) => {
                Ok(Decision { committed: true, term: resp.log_id.leader_id.term(), index: resp.log_id.index, applied: resp.data })
            }
            Ok(Err(e)) => match e.api_error() {
                Some(ClientWriteError::ForwardToLeader(_)) => Err(ConsensusError::NotLeader),
                // The entry was appended, then discarded by a new leader's log:
                // it may have committed elsewhere.
                Some(ClientWriteError::LogEntryDiscarded(_)) => Err(ConsensusError::Unknown(timeout)),
                _ => Err(raft_err(e)),
            },
        }
    }
}

/// Puts a write's outcome on its span: the entry, or why it failed.
fn decided(span: &mut crate::traces::Span, result: &Result<Decision, ConsensusError>) {
    if let Ok(d) = result {
        span.set("raft.index", d.index as i64);
        span.set("raft.term", d.term as i64);
    }
    span.outcome(result);
}
