//! What the replicated log holds: commands on a key/value state machine, the
//! answer each one gets, and how a member of the Raft group is addressed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A command: a change to the replicated key/value state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        #[serde(with = "bytes")]
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets `key` to `new` (or removes it when `None`) only if its value is
    /// `expected` (`None`: absent).
    Cas {
        /// The key.
        key: String,
        /// The value it must have.
        #[serde(with = "bytes::option")]
        expected: Option<Vec<u8>>,
        /// The value to give it.
        #[serde(with = "bytes::option")]
        new: Option<Vec<u8>>,
    },
    /// Takes (or renews) the lease on `lock` for `holder` until
    /// `now_ms + lease_ms` (milliseconds since the Unix epoch, from the
    /// proposer's clock). Every grant, a renewal too, gets a new fencing
    /// token: the index of this entry in the log.
    Acquire {
        /// The lock.
        lock: String,
        /// Who takes it.
        holder: String,
        /// The lease length.
        lease_ms: u64,
        /// The proposer's time.
        now_ms: u64,
    },
    /// Gives the lock back, if `holder` still holds it under `token`.
    Release {
        /// The lock.
        lock: String,
        /// Who gives it back.
        holder: String,
        /// The fencing token it was granted.
        token: u64,
    },
    /// Records `participant` at `barrier`.
    Arrive {
        /// The barrier.
        barrier: String,
        /// Who arrived.
        participant: String,
    },
}

impl Command {
    /// What kind of command it is (`put`, `delete`, `cas`, `acquire`,
    /// `release`, `arrive`): a span's attribute, never the keys or values.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Put { .. } => "put",
            Self::Delete { .. } => "delete",
            Self::Cas { .. } => "cas",
            Self::Acquire { .. } => "acquire",
            Self::Release { .. } => "release",
            Self::Arrive { .. } => "arrive",
        }
    }

    /// Bytes of keys and values (for the proposal size limit).
    pub fn size(&self) -> usize {
        match self {
            Self::Put { key, value } => key.len() + value.len(),
            Self::Delete { key } => key.len(),
            Self::Cas { key, expected, new } => key.len() + expected.as_ref().map_or(0, Vec::len) + new.as_ref().map_or(0, Vec::len),
            Self::Acquire { lock, holder, .. } | Self::Release { lock, holder, .. } => lock.len() + holder.len(),
            Self::Arrive { barrier, participant } => barrier.len() + participant.len(),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put { key, value } => write!(f, "put {key} ({} bytes)", value.len()),
            Self::Delete { key } => write!(f, "delete {key}"),
            Self::Cas { key, .. } => write!(f, "cas {key}"),
            Self::Acquire { lock, holder, .. } => write!(f, "acquire {lock} for {holder}"),
            Self::Release { lock, holder, token } => write!(f, "release {lock} by {holder} ({token})"),
            Self::Arrive { barrier, participant } => write!(f, "arrive {participant} at {barrier}"),
        }
    }
}

/// What applying a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Whether it took effect (`false`: a compare-and-set whose expectation
    /// failed, a delete of an absent key, a lock held by another, a release
    /// by a holder that no longer holds it).
    pub ok: bool,
    /// The key's value before.
    #[serde(with = "bytes::option")]
    pub previous: Option<Vec<u8>>,
    /// For a lock: the lease as it stands after the command.
    pub lock: Option<LockState>,
    /// For a barrier: how many have arrived.
    pub arrived: Option<u64>,
}

/// A lock's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    /// Who holds it.
    pub holder: String,
    /// The fencing token of this holding: larger for every new holder.
    pub token: u64,
    /// When the lease ends (milliseconds since the Unix epoch).
    pub expires_ms: u64,
}

/// The replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Keys and values.
    pub kv: BTreeMap<String, Vec<u8>>,
    /// Locks by name.
    pub locks: BTreeMap<String, LockState>,
    /// Barriers by name: who has arrived.
    pub barriers: BTreeMap<String, BTreeSet<String>>,
}

impl State {
    /// Applies `cmd`, the log entry at `index`. Deterministic: the same
    /// commands give the same state on every member.
    pub fn apply(&mut self, index: u64, cmd: Command) -> Applied {
        let Ok(applied) = apply_to(self, index, cmd, true);
        applied
    }

    /// Answers a read.
    pub fn query(&self, q: &Query) -> Answer {
        let Ok(answer) = query_from(self, q);
        answer
    }
}

/// Byte strings as bytes, not as sequences of numbers: postcard writes the
/// same bytes either way (a length, then the bytes), but one at a time
/// through serde's sequence path that cost a tenth of the CPU of a
/// snapshot's transfer. Other formats (JSON) read either form.
pub(crate) mod bytes {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::{Deserialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }

    /// The same for an optional byte string.
    pub(crate) mod option {
        use super::*;

        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super")] Vec<u8>);

        struct Ref<'a>(&'a [u8]);

        impl serde::Serialize for Ref<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }

        pub(crate) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(b) => s.serialize_some(&Ref(b)),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

/// Reads of a replicated state, wherever it is kept (in memory, or in the
/// tables of a database).
pub(crate) trait StateRead {
    /// What a failed read is.
    type Error;
    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    fn lock(&self, name: &str) -> Result<Option<LockState>, Self::Error>;
    fn arrived(&self, barrier: &str) -> Result<BTreeSet<String>, Self::Error>;
}

/// Changes to a replicated state.
pub(crate) trait StateWrite: StateRead {
    fn set_value(&mut self, key: String, value: Vec<u8>) -> Result<(), Self::Error>;
    fn remove_value(&mut self, key: &str) -> Result<(), Self::Error>;
    fn set_lock(&mut self, name: String, lock: LockState) -> Result<(), Self::Error>;
    fn remove_lock(&mut self, name: &str) -> Result<(), Self::Error>;
    fn set_arrived(&mut self, barrier: String, arrived: BTreeSet<String>) -> Result<(), Self::Error>;
}

/// Applies `cmd`, the log entry at `index`, to `state`: the one definition
/// of what a command does, for every place a state is kept. Without
/// `answered` (nobody waits for the answer: a follower, a replay), a put
/// does not read the value it replaces.
pub(crate) fn apply_to<S: StateWrite>(state: &mut S, index: u64, cmd: Command, answered: bool) -> Result<Applied, S::Error> {
    let done = |ok, previous| Applied { ok, previous, ..Applied::default() };
    Ok(match cmd {
        Command::Put { key, value } => {
            let previous = if answered { state.value(&key)? } else { None };
            state.set_value(key, value)?;
            done(true, previous)
        }
        Command::Delete { key } => {
            let previous = state.value(&key)?;
            if previous.is_some() {
                state.remove_value(&key)?;
            }
            done(previous.is_some(), previous)
        }
        Command::Cas { key, expected, new } => {
            let current = state.value(&key)?;
            if current != expected {
                return Ok(done(false, current));
            }
            match new {
                Some(v) => state.set_value(key, v)?,
                None => state.remove_value(&key)?,
            }
            done(true, current)
        }
        Command::Acquire { lock, holder, lease_ms, now_ms } => {
            let expires_ms = now_ms.saturating_add(lease_ms);
            if let Some(l) = state.lock(&lock)?
                && l.expires_ms > now_ms
                && l.holder != holder
            {
                return Ok(Applied { ok: false, lock: Some(l), ..Applied::default() });
            }
            // A renewal gets a new token too: a release its holder sent
            // before renewing (and never learned the outcome of) carries
            // the old token, and must not end the renewed lease.
            let granted = LockState { holder, token: index, expires_ms };
            state.set_lock(lock, granted.clone())?;
            Applied { ok: true, lock: Some(granted), ..Applied::default() }
        }
        Command::Release { lock, holder, token } => match state.lock(&lock)? {
            Some(l) if l.holder == holder && l.token == token => {
                state.remove_lock(&lock)?;
                Applied { ok: true, lock: Some(l), ..Applied::default() }
            }
            other => Applied { ok: false, lock: other, ..Applied::default() },
        },
        Command::Arrive { barrier, participant } => {
            let mut arrived = state.arrived(&barrier)?;
            let ok = arrived.insert(participant);
            let count = arrived.len() as u64;
            if ok {
                state.set_arrived(barrier, arrived)?;
            }
            Applied { ok, arrived: Some(count), ..Applied::default() }
        }
    })
}

/// Answers `q` from `state`.
pub(crate) fn query_from<S: StateRead>(state: &S, q: &Query) -> Result<Answer, S::Error> {
    Ok(match q {
        Query::Get(key) => Answer::Value(state.value(key)?),
        Query::Lock(name) => Answer::Lock(state.lock(name)?),
        Query::Arrived(name) => Answer::Arrived(state.arrived(name)?.len() as u64),
    })
}

impl StateRead for State {
    type Error = std::convert::Infallible;
    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.kv.get(key).cloned())
    }
    fn lock(&self, name: &str) -> Result<Option<LockState>, Self::Error> {
        Ok(self.locks.get(name).cloned())
    }
    fn arrived(&self, barrier: &str) -> Result<BTreeSet<String>, Self::Error> {
        Ok(self.barriers.get(barrier).cloned().unwrap_or_default())
    }
}

impl StateWrite for State {
    fn set_value(&mut self, key: String, value: Vec<u8>) -> Result<(), Self::Error> {
        self.kv.insert(key, value);
        Ok(())
    }
    fn remove_value(&mut self, key: &str) -> Result<(), Self::Error> {
        self.kv.remove(key);
        Ok(())
    }
    fn set_lock(&mut self, name: String, lock: LockState) -> Result<(), Self::Error> {
        self.locks.insert(name, lock);
        Ok(())
    }
    fn remove_lock(&mut self, name: &str) -> Result<(), Self::Error> {
        self.locks.remove(name);
        Ok(())
    }
    fn set_arrived(&mut self, barrier: String, arrived: BTreeSet<String>) -> Result<(), Self::Error> {
        self.barriers.insert(barrier, arrived);
        Ok(())
    }
}

/// A read of the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// A key's value.
    Get(String),
    /// A lock's lease.
    Lock(String),
    /// How many arrived at a barrier.
    Arrived(String),
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// A key's value.
    Value(Option<Vec<u8>>),
    /// A lock's lease (expired leases included: compare with the time).
    Lock(Option<LockState>),
    /// Arrivals at a barrier.
    Arrived(u64),
}

/// A member of the Raft group: its cluster node name and address.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node's name in the cluster mesh.
    pub name: String,
    /// The node's listen address.
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// Foundation's Raft types.
    pub TypeConfig:
        D = Command,
        R = Applied,
        Node = Member,
        AsyncRuntime = super::runtime::SeededTokio,
);

/// A Raft node id: chosen once per member and never reused (a node whose
/// data is lost must join under a new id).
pub type NodeId = u64;

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(holder: &str, now_ms: u64) -> Command {
        Command::Acquire { lock: "l".into(), holder: holder.into(), lease_ms: 100, now_ms }
    }

    #[test]
    fn leases_expire_renew_and_fence() {
        let mut s = State::default();
        let a = s.apply(10, acquire("a", 1000));
        assert!(a.ok);
        assert_eq!(a.lock.as_ref().map(|l| (l.token, l.expires_ms)), Some((10, 1100)));
        // Another holder before the lease ends: refused, told who holds it.
        let b = s.apply(11, acquire("b", 1050));
        assert!(!b.ok);
        assert_eq!(b.lock.map(|l| l.holder), Some("a".into()));
        // The holder renews, under a new token.
        let renewed = s.apply(12, acquire("a", 1090));
        assert_eq!(renewed.lock.map(|l| (l.token, l.expires_ms)), Some((12, 1190)));
        // After the lease ends, another holder gets a larger token; the old
        // holder's release no longer matches.
        let b = s.apply(13, acquire("b", 1200));
        assert_eq!(b.lock.map(|l| (l.holder, l.token)), Some(("b".into(), 13)));
        assert!(!s.apply(14, Command::Release { lock: "l".into(), holder: "a".into(), token: 10 }).ok);
        assert!(s.apply(15, Command::Release { lock: "l".into(), holder: "b".into(), token: 13 }).ok);
        assert_eq!(s.query(&Query::Lock("l".into())), Answer::Lock(None));
    }

    /// A holder gives the lock back, does not learn the outcome (its call
    /// timed out), and takes it again while the release is still on its
    /// way. The release, applied after the renewal, must not end the
    /// lease the renewal granted: another holder would be granted the lock
    /// while the first rightly believes it holds it. Found in the chaos
    /// tier in process, 5 nodes: "l0: c2.1 (token 3720) held it
    /// 15.594-16.042 s while c0.3 (token 3772) held it 15.943-16.350 s".
    #[test]
    fn a_release_sent_before_a_renewal_does_not_end_it() {
        let mut s = State::default();
        let first = s.apply(10, acquire("a", 1000)).lock.expect("granted");
        // The release is sent (token 10) but not yet applied; `a` renews.
        let renewed = s.apply(12, acquire("a", 1050));
        assert!(renewed.ok);
        let renewed = renewed.lock.expect("renewed");
        // The release arrives now.
        let late = s.apply(13, Command::Release { lock: "l".into(), holder: "a".into(), token: first.token });
        assert!(!late.ok, "a release sent before the renewal ended it: {late:?}");
        let b = s.apply(14, acquire("b", 1100));
        assert!(!b.ok, "b was granted the lock while a's renewed lease runs to {}: {b:?}", renewed.expires_ms);
        // The renewal's own token gives it back.
        assert!(s.apply(15, Command::Release { lock: "l".into(), holder: "a".into(), token: renewed.token }).ok);
    }
}
