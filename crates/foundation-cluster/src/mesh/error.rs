//! Why a cluster operation failed.

use crate::handshake::HandshakeError;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Dialing a peer failed.
    #[error("cannot reach {addr}: {reason}")]
    Connect {
        /// The address dialed.
        addr: String,
        /// Why.
        reason: String,
    },
    /// TLS with the peer failed.
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        /// The address.
        addr: String,
        /// Why.
        source: crate::tls::TlsError,
    },
    /// The handshake failed.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The address.
        addr: String,
        /// Why.
        source: HandshakeError,
    },
    /// The peer's name hashes to the same 32 bits as a node this one
    /// already knows (or as this node's own): pids could not tell them
    /// apart, so the connection is refused.
    #[error("{peer} cannot join: its name hashes like {taken}'s ({hash:08x}); rename one of them")]
    NameCollision {
        /// The peer refused.
        peer: String,
        /// The node whose name hash it shares.
        taken: String,
        /// The 32-bit hash.
        hash: u32,
    },
    /// The node already belongs to a cluster (a `Node` has one
    /// distribution layer for its life).
    #[error("node {node} already belongs to a cluster: start a new Node for another one")]
    AlreadyDistributed {
        /// The node's name.
        node: String,
    },
}
