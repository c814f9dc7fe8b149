//! The state machine: applies committed entries to the key/value state,
//! answers queries, and builds and installs snapshots. With a data
//! directory the state is in `state.redb` ([`StateDb`]); without one it is
//! a [`State`] in memory.

#[allow(clippy::wildcard_imports)] // the store's private pieces (disk, ops, codecs)
use super::*;
use std::io::Read as _;

/// Entries applied in one batch (one transaction of the state database).
const APPLY_BATCH: usize = 1024;

/// Where the state is.
pub(super) enum Backend {
    /// In memory, with its latest snapshot encoded; on a `MemoryDisk`
    /// (`disk`), the snapshot is persisted there.
    Memory { data: State, snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>, disk: Option<Disk> },
    /// In a data directory's `state.redb` (`log`: its `raft.log`, closed
    /// with it); `pending`: a snapshot whose install was cut short, to
    /// install again at start.
    Db { db: StateDb, log: Disk, pending: Option<(SnapshotMeta, SnapshotData)> },
    /// Closed (the member's storage failed or it stopped).
    Closed,
}

pub(super) struct SmInner {
    /// Bytes of entries applied since the last snapshot, and the threshold
    /// past which one is due (`u64::MAX`: by entry count only).
    pub(super) bytes_since_snapshot: u64,
    pub(super) snapshot_log_bytes: u64,
    pub(super) last_applied: Option<LogId>,
    pub(super) membership: StoredMembershipOf<TypeConfig>,
    pub(super) backend: Backend,
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
    /// Where snapshot builds are reported, and as which member.
    pub(super) telemetry: Option<(crate::services::Telemetry, String)>,
}

fn closed() -> io::Error {
    io_err("the state machine's storage is closed")
}

impl StateMachine {
    /// Wakes when a snapshot is due by bytes applied (see
    /// `ConsensusConfig::snapshot_log_bytes`); ends with the state machine.
    #[must_use = "the signal reaches only a receiver that is kept"]
    pub fn snapshot_due(&self) -> tokio::sync::watch::Receiver<u64> {
        self.snapshot_due.subscribe()
    }

    /// Answers a read here (no linearizability by itself: see `Consensus::query`).
    ///
    /// A state that cannot be read (closed: the member is stopping or
    /// reopening its storage; a read that failed) is an error, never an
    /// empty answer: a member being shut down answered a linearizable read
    /// with "no value" (the `big_state` nemesis, in process).
    pub async fn query(&self, q: &Query) -> io::Result<Answer> {
        let inner = self.inner.lock().await;
        match &inner.backend {
            Backend::Memory { data, .. } => Ok(data.query(q)),
            Backend::Db { db, .. } => {
                let db = db.clone();
                drop(inner);
                db.query(q).inspect_err(|e| tracing::error!(error = %e, "reading the state failed"))
            }
            Backend::Closed => Err(closed()),
        }
    }

    /// The whole state, for comparisons.
    pub async fn dump(&self) -> State {
        let inner = self.inner.lock().await;
        match &inner.backend {
            Backend::Memory { data, .. } => data.clone(),
            Backend::Db { db, .. } => {
                let db = db.clone();
                drop(inner);
                db.dump().unwrap_or_default()
            }
            Backend::Closed => State::default(),
        }
    }

    /// Keys changed by commands applied from now on.
    #[must_use = "changes are delivered only to a receiver that is kept"]
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Closes the storage (after what is queued is written).
    pub async fn close(&self) {
        let backend = std::mem::replace(&mut self.inner.lock().await.backend, Backend::Closed);
        match backend {
            Backend::Memory { disk: Some(d), .. } => d.close().await,
            Backend::Db { db, log, .. } => {
                db.close().await;
                log.close().await;
            }
            _ => {}
        }
    }

    /// The last applied log index.
    pub async fn applied_index(&self) -> Option<u64> {
        self.inner.lock().await.last_applied.as_ref().map(|l| l.index())
    }

    /// Applies one batch and answers its entries.
    async fn apply_batch(
        &self,
        batch: Vec<(LogId, Payload)>,
        responders: Vec<Option<openraft::storage::ApplyResponder<TypeConfig>>>,
    ) -> io::Result<()> {
        let Some(last) = batch.last().map(|(id, _)| *id) else { return Ok(()) };
        let bytes: u64 = batch.iter().map(|(_, p)| crate::consensus::network::payload_bytes(p) as u64).sum();
        let keys: Vec<Option<String>> = batch
            .iter()
            .map(|(_, p)| match p {
                EntryPayload::Normal(Command::Put { key, .. } | Command::Delete { key } | Command::Cas { key, .. }) => Some(key.clone()),
                _ => None,
            })
            .collect();
        let membership = batch.iter().rev().find_map(|(id, p)| match p {
            EntryPayload::Membership(m) => Some(openraft::StoredMembership::new(Some(*id), m.clone())),
            _ => None,
        });
        let mut inner = self.inner.lock().await;
        inner.bytes_since_snapshot += bytes;
        if inner.bytes_since_snapshot >= inner.snapshot_log_bytes {
            inner.bytes_since_snapshot = 0;
            self.snapshot_due.send_modify(|n| *n += 1);
        }
        let answers = match &mut inner.backend {
            Backend::Memory { data, .. } => batch
                .into_iter()
                .map(|(id, p)| match p {
                    EntryPayload::Normal(cmd) => data.apply(id.index, cmd),
                    _ => Applied::default(),
                })
                .collect(),
            Backend::Db { db, .. } => {
                let db = db.clone();
                drop(inner);
                let answered = responders.iter().map(Option::is_some);
                let answers = db.apply(batch.into_iter().zip(answered).map(|((id, p), a)| (id, p, a)).collect()).await?;
                inner = self.inner.lock().await;
                answers
            }
            Backend::Closed => return Err(closed()),
        };
        inner.last_applied = Some(last);
        if let Some(m) = membership {
            inner.membership = m;
        }
        drop(inner);
        for ((applied, responder), key) in answers.into_iter().zip(responders).zip(keys) {
            if let Some(k) = key.filter(|_| applied.ok) {
                // No watcher is fine.
                let _ = self.changes.send(k);
            }
            if let Some(r) = responder {
                r.send(applied);
            }
        }
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembershipOf<TypeConfig>), io::Error> {
        let inner = self.inner.lock().await;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let (mut batch, mut responders) = (Vec::new(), Vec::new());
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            batch.push((entry.log_id, entry.payload));
            responders.push(responder);
            if batch.len() >= APPLY_BATCH {
                self.apply_batch(std::mem::take(&mut batch), std::mem::take(&mut responders)).await?;
            }
        }
        self.apply_batch(batch, responders).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let mut inner = self.inner.lock().await;
        match &mut inner.backend {
            Backend::Memory { data, snapshot: current, disk } => {
                let bytes = match snapshot {
                    SnapshotData::Bytes(b) => b,
                    other => {
                        let mut all = Vec::new();
                        other.reader().read_to_end(&mut all)?;
                        Arc::new(all)
                    }
                };
                let (found, state) = snapshot::decode_state(&bytes)?;
                if found != *meta {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "the snapshot's header does not match its metadata"));
                }
                *data = state;
                *current = Some((meta.clone(), bytes.clone()));
                if let Some(d) = disk.clone() {
                    drop(inner);
                    d.write(vec![Op::Meta(SNAPSHOT, encode(&StoredSnapshot { meta: meta.clone(), data: bytes.to_vec() })?)]).await?;
                    inner = self.inner.lock().await;
                }
            }
            Backend::Db { db, .. } => {
                let db = db.clone();
                drop(inner);
                db.install(meta.clone(), snapshot).await?;
                inner = self.inner.lock().await;
                if let Backend::Db { pending, .. } = &mut inner.backend {
                    *pending = None;
                }
            }
            Backend::Closed => return Err(closed()),
        }
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, SnapshotData>>, io::Error> {
        let inner = self.inner.lock().await;
        Ok(match &inner.backend {
            Backend::Memory { snapshot, .. } => {
                snapshot.as_ref().map(|(meta, b)| openraft::Snapshot { meta: meta.clone(), snapshot: SnapshotData::Bytes(b.clone()) })
            }
            // A snapshot is what is applied now (nothing applied: none).
            Backend::Db { pending: Some((meta, data)), .. } => Some(openraft::Snapshot { meta: meta.clone(), snapshot: data.clone() }),
            Backend::Db { db, pending: None, .. } if inner.last_applied.is_some() => {
                let db = db.clone();
                drop(inner);
                let (meta, snapshot) = db.snapshot().await?;
                Some(openraft::Snapshot { meta, snapshot })
            }
            Backend::Db { .. } => None,
            Backend::Closed => return Err(closed()),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let start = foundation::rt::Instant::now();
        let built = self.build().await;
        if let Some((telemetry, member)) = &self.telemetry {
            let index = built.as_ref().ok().and_then(|s| s.meta.last_log_id.as_ref()).map_or(0, |l| l.index);
            let outcome = if built.is_ok() { "built" } else { "failed" };
            super::super::observe::emit(
                &Some(telemetry.clone()),
                "foundation.consensus.snapshot_build",
                &[("index", index as f64), ("seconds", start.elapsed().as_secs_f64())],
                &[("member", member), ("outcome", outcome)],
            );
        }
        built
    }
}

impl StateMachine {
    async fn build(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let mut inner = self.inner.lock().await;
        inner.bytes_since_snapshot = 0;
        let meta = SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone() };
        match &mut inner.backend {
            // In memory (simulation and tests: small states), encoded under
            // the lock.
            Backend::Memory { data, snapshot, disk } => {
                let bytes = Arc::new(snapshot::encode_state(&meta, data)?);
                *snapshot = Some((meta.clone(), bytes.clone()));
                if let Some(d) = disk.clone() {
                    drop(inner);
                    d.write(vec![Op::Meta(SNAPSHOT, encode(&StoredSnapshot { meta: meta.clone(), data: bytes.to_vec() })?)]).await?;
                }
                Ok(openraft::Snapshot { meta, snapshot: SnapshotData::Bytes(bytes) })
            }
            // What is applied now, made durable: a read transaction, while
            // applying goes on.
            Backend::Db { db, .. } => {
                let db = db.clone();
                drop(inner);
                let (meta, data) = db.snapshot().await?;
                Ok(openraft::Snapshot { meta, snapshot: data })
            }
            Backend::Closed => Err(closed()),
        }
    }
}
