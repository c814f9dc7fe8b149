//! Process identifiers.
//!
//! A [`Pid`] names one process for its whole life and never again: a local
//! id is a table slot plus that slot's generation (see the node's table), so
//! a later process in the same slot has another id; and a restarted node gets
//! a new `creation`. A pid that outlived its process (or its node) cannot
//! reach a newer process by accident.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies a node incarnation: a hash of the node's name plus a
/// `creation` number that differs between starts of the same name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    /// FNV-1a hash of the node name (32 bits).
    pub name_hash: u32,
    /// Distinguishes incarnations of one name.
    pub creation: u32,
}

impl NodeId {
    /// The id of the incarnation `creation` of the node called `name`.
    pub fn new(name: &str, creation: u32) -> Self {
        Self { name_hash: fnv1a32(name.as_bytes()), creation }
    }
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.name_hash)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}/{}", self.name_hash, self.creation)
    }
}

/// A process id: the node it lives on and its local id there.
///
/// `Copy`, hashable, ordered, serializable; prints like Erlang's `<node.id>`.
///
/// ```
/// use foundation::{NodeId, Pid};
/// let pid = Pid::new(NodeId::new("a", 1), 42);
/// assert_eq!(pid.to_string(), format!("<{}.42>", pid.node()));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pid {
    node: NodeId,
    id: u64,
}

impl Pid {
    /// Builds a pid (normally only a node does this).
    pub const fn new(node: NodeId, id: u64) -> Self {
        Self { node, id }
    }

    /// The node the process lives on.
    pub const fn node(self) -> NodeId {
        self.node
    }

    /// The local id, unique within the node incarnation.
    pub const fn id(self) -> u64 {
        self.id
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}>", self.node, self.id)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{:?}.{}>", self.node, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_differ_by_node_incarnation_and_id() {
        let a1 = Pid::new(NodeId::new("a", 1), 1);
        assert_eq!(a1, Pid::new(NodeId::new("a", 1), 1));
        assert_ne!(a1, Pid::new(NodeId::new("a", 2), 1), "a restarted node is another incarnation");
        assert_ne!(a1, Pid::new(NodeId::new("b", 1), 1));
        assert_ne!(a1, Pid::new(NodeId::new("a", 1), 2));
        assert_eq!(format!("{a1:?}"), format!("<{:08x}/1.1>", NodeId::new("a", 1).name_hash));
    }
}
