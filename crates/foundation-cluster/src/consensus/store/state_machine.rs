//! The state machine: applies committed entries to the key/value state,
//! answers queries, and builds and installs snapshots.

#[allow(clippy::wildcard_imports)] // the store's private pieces (disk, ops, codecs)
use super::*;

#[derive(Default)]
pub(super) struct SmInner {
    /// Bytes of entries applied since the last snapshot, and the threshold
    /// past which one is due (`u64::MAX`: by entry count only).
    pub(super) bytes_since_snapshot: u64,
    pub(super) snapshot_log_bytes: u64,
    pub(super) last_applied: Option<LogId>,
    pub(super) membership: StoredMembershipOf<TypeConfig>,
    pub(super) data: State,
    pub(super) snapshot: Option<StoredSnapshot>,
    pub(super) disk: Option<Disk>,
}

/// Applied key changes kept for slow watchers (they skip ahead past it).
pub const CHANGES_BUFFER: usize = 1024;

/// The key/value state machine. Cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    pub(super) inner: Arc<Mutex<SmInner>>,
    /// Keys changed by applied commands, in apply order.
    pub(super) changes: tokio::sync::broadcast::Sender<String>,
    /// Bumped when the entries applied since the last snapshot pass the
    /// byte threshold: a snapshot is due.
    pub(super) snapshot_due: Arc<tokio::sync::watch::Sender<u64>>,
}

impl StateMachine {
    /// Wakes when a snapshot is due by bytes applied (see
    /// `ConsensusConfig::snapshot_log_bytes`); ends with the state machine.
    #[must_use = "the signal reaches only a receiver that is kept"]
    pub fn snapshot_due(&self) -> tokio::sync::watch::Receiver<u64> {
        self.snapshot_due.subscribe()
    }

    /// Answers a read here (no linearizability by itself: see `Consensus::query`).
    pub async fn query(&self, q: &Query) -> Answer {
        self.inner.lock().await.data.query(q)
    }

    /// The whole state, for comparisons.
    pub async fn dump(&self) -> State {
        self.inner.lock().await.data.clone()
    }

    /// Keys changed by commands applied from now on.
    #[must_use = "changes are delivered only to a receiver that is kept"]
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Closes the data directory (after what is queued is written).
    pub async fn close(&self) {
        let disk = self.inner.lock().await.disk.take();
        if let Some(d) = disk {
            d.close().await;
        }
    }

    /// The last applied log index.
    pub async fn applied_index(&self) -> Option<u64> {
        self.inner.lock().await.last_applied.as_ref().map(|l| l.index())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembershipOf<TypeConfig>), io::Error> {
        let inner = self.inner.lock().await;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let mut inner = self.inner.lock().await;
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            inner.last_applied = Some(entry.log_id);
            inner.bytes_since_snapshot += crate::consensus::network::entry_bytes(&entry) as u64;
            if inner.bytes_since_snapshot >= inner.snapshot_log_bytes {
                inner.bytes_since_snapshot = 0;
                self.snapshot_due.send_modify(|n| *n += 1);
            }
            let applied = match entry.payload {
                EntryPayload::Blank => Applied::default(),
                EntryPayload::Normal(cmd) => {
                    let key = match &cmd {
                        Command::Put { key, .. } | Command::Delete { key } | Command::Cas { key, .. } => Some(key.clone()),
                        _ => None,
                    };
                    let applied = inner.data.apply(entry.log_id.index, cmd);
                    if let Some(k) = key.filter(|_| applied.ok) {
                        // No watcher is fine.
                        let _ = self.changes.send(k);
                    }
                    applied
                }
                EntryPayload::Membership(m) => {
                    inner.membership = openraft::StoredMembership::new(Some(entry.log_id), m);
                    Applied::default()
                }
            };
            if let Some(r) = responder {
                r.send(applied);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<TypeConfig>, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let data: State = decode(&snapshot)?;
        let stored = StoredSnapshot { meta: meta.clone(), data: snapshot };
        let disk = {
            let mut inner = self.inner.lock().await;
            inner.data = data;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some(stored.clone());
            inner.disk.clone()
        };
        match disk {
            Some(d) => d.write(vec![Op::Meta(SNAPSHOT, encode(&stored)?)]).await,
            None => Ok(()),
        }
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        let inner = self.inner.lock().await;
        Ok(inner.snapshot.as_ref().map(|s| openraft::Snapshot { meta: s.meta.clone(), snapshot: s.data.clone() }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let (stored, disk) = {
            let mut inner = self.inner.lock().await;
            inner.bytes_since_snapshot = 0;
            let data = encode(&inner.data)?;
            let meta = openraft::SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone() };
            let stored = StoredSnapshot { meta, data };
            inner.snapshot = Some(stored.clone());
            (stored, inner.disk.clone())
        };
        if let Some(d) = disk {
            d.write(vec![Op::Meta(SNAPSHOT, encode(&stored)?)]).await?;
        }
        Ok(openraft::Snapshot { meta: stored.meta, snapshot: stored.data })
    }
}
