//! What the replicated log holds: commands on a key/value state machine, the
//! answer each one gets, and how a member of the Raft group is addressed.

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
        expected: Option<Vec<u8>>,
        /// The value to give it.
        new: Option<Vec<u8>>,
    },
}

impl Command {
    /// Bytes of keys and values (for the proposal size limit).
    pub fn size(&self) -> usize {
        match self {
            Self::Put { key, value } => key.len() + value.len(),
            Self::Delete { key } => key.len(),
            Self::Cas { key, expected, new } => key.len() + expected.as_ref().map_or(0, Vec::len) + new.as_ref().map_or(0, Vec::len),
        }
    }

    /// The key it changes.
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key } | Self::Cas { key, .. } => key,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put { key, value } => write!(f, "put {key} ({} bytes)", value.len()),
            Self::Delete { key } => write!(f, "delete {key}"),
            Self::Cas { key, .. } => write!(f, "cas {key}"),
        }
    }
}

/// What applying a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Whether it took effect (`false`: a compare-and-set whose expectation
    /// failed, or a delete of an absent key).
    pub ok: bool,
    /// The key's value before.
    pub previous: Option<Vec<u8>>,
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
);

/// A Raft node id: chosen once per member and never reused (a node whose
/// data is lost must join under a new id).
pub type NodeId = u64;
