//! Distribution for Foundation. This first part is the wire: frames
//! ([`frame`]), the cluster secret ([`secret`]) and the authenticated
//! handshake ([`handshake`]). Nodes, remote processes, RPC and consensus
//! build on it (later work).

#![warn(missing_docs)]

pub mod frame;
pub mod handshake;
pub mod secret;
