//! Distribution for Foundation: the wire (frames [`frame`], the cluster
//! secret [`secret`], the authenticated [`handshake`]) and the full mesh of
//! nodes with heartbeats and up/down events ([`mesh`]). Remote processes,
//! RPC and consensus build on it (later work).

#![warn(missing_docs)]

pub mod admin;
pub mod consensus;
pub mod frame;
pub mod handshake;
pub mod mesh;
pub mod outbox;
pub mod remote;
pub mod rpc;
pub mod secret;
pub mod server;
pub mod services;
pub mod tls;

pub use mesh::{Cluster, ClusterConfig, ClusterError, NodeEvent, WeakCluster};
pub use outbox::PushError;
pub use remote::RemoteSendError;
pub use rpc::RpcError;
pub use tls::{TlsConfig, TlsError};
