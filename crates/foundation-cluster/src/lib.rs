//! Distribution for Foundation:
//!
//! - the wire: frames ([`frame`]), the cluster secret ([`secret`]), the
//!   authenticated [`handshake`] and the sealed records after it ([`seal`]),
//!   optional mutual TLS ([`tls`]);
//! - the full mesh of nodes with heartbeats and up/down events ([`mesh`]),
//!   its per-peer queues ([`outbox`]);
//! - remote processes: send, links and monitors across nodes ([`remote`]),
//!   and RPC ([`rpc`]);
//! - Raft consensus, locks and barriers ([`consensus`]), and the cluster
//!   services on it: configuration, registry, telemetry ([`services`]);
//! - the node server that `foundation node` runs ([`server`]) and its admin
//!   HTTP API ([`admin`]);
//! - a bound on repeated log lines ([`log_limit`]).
//!
//! Two nodes in one process: one joins the other, and calls it.
//!
//! ```
//! use std::time::Duration;
//! use foundation::Node;
//! use foundation_cluster::secret::ClusterSecret;
//! use foundation_cluster::{Cluster, ClusterConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let secret = ClusterSecret::new("an example secret, 32 bytes or longer", "the example")?;
//! let a = Cluster::start(Node::new("a"), ClusterConfig::new("a", "127.0.0.1:0", secret.clone())).await?;
//! let b = Cluster::start(Node::new("b"), ClusterConfig::new("b", "127.0.0.1:0", secret)).await?;
//! b.connect(a.addr()).await?; // joins a, and through it the whole mesh
//! a.register_rpc("double", |n: u64| async move { n * 2 });
//! assert_eq!(b.rpc::<u64, u64>("a", "double", 21, Duration::from_secs(1)).await?, 42);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod admin;
pub mod consensus;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod log_limit;
pub mod mac;
pub mod mesh;
pub mod outbox;
pub mod remote;
pub mod rpc;
pub mod seal;
pub mod secret;
pub mod server;
pub mod services;
pub mod tls;
pub mod traces;

pub use mesh::{Cluster, ClusterConfig, ClusterError, NodeEvent, WeakCluster};
pub use outbox::PushError;
pub use remote::RemoteSendError;
pub use rpc::RpcError;
pub use tls::{TlsConfig, TlsError};
