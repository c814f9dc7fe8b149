//! Foundation: BEAM-style processes for Rust.
//!
//! - [`rt`]: the runtime seam (spawn, time, seeded RNG, network).
//! - [`Node`]: a local runtime handle owning processes, names and groups.
//! - Processes: [`Node::spawn`], [`Ctx`] (the process's view of itself),
//!   [`Addr`] (typed send handles), [`Pid`].
//! - [`exit`]: exit reasons, links and monitors, with their semantics.
//! - [`mailbox`]: bounded mailboxes and overflow policies.
//! - [`messages`]: sending strategies by size, zero-copy payloads, flow control.
//! - [`schedulers`]: CPU work that yields, utilization, blocking offload.
//! - [`supervisor`]: OTP supervisors.
//! - [`port`]: external OS processes as supervised processes.
//! - [`ecosystem`]: a coordinator plus workers under a supervisor.
//! - [`context`]: a trace context that follows messages and calls.
//! - [`events`]: a bounded event store.
//!
//! A process that keeps a running total and answers each call with it:
//!
//! ```
//! use std::time::Duration;
//! use foundation::{Ctx, Node, Reply};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let node = Node::new("demo");
//! let counter = node.spawn(|mut ctx: Ctx<(u64, Reply<u64>)>| async move {
//!     let mut total = 0;
//!     loop {
//!         let (n, reply) = ctx.recv().await;
//!         total += n;
//!         let _ = reply.send(total);
//!     }
//! });
//! assert_eq!(counter.call(|r| (5, r), Duration::from_secs(1)).await, Ok(5));
//! assert_eq!(counter.call(|r| (2, r), Duration::from_secs(1)).await, Ok(7));
//! # }
//! ```

#![warn(missing_docs)]

mod addr;
pub mod context;
mod ctx;
pub mod dist;
pub mod ecosystem;
pub mod events;
pub mod exit;
pub mod mailbox;
mod message;
pub mod messages;
mod node;
mod pid;
pub mod port;
mod process;
mod reply;
pub mod rt;
pub mod schedulers;
pub mod stats;
pub mod supervisor;
mod table;

pub use addr::{Addr, CallError};
pub use ctx::{Ctx, Event};
pub use exit::{ExitReason, IntoExit, MonitorRef};
pub use mailbox::{ByteBudget, ConfigError, MailboxConfig, Overflow, SendError};
pub use message::Message;
pub use node::{NAME_BYTES_MAX, Node, NodeConfig, RegistryError, SpawnError, SpawnOpts};
pub use pid::{NodeId, Pid};
pub use process::{ProcessInfo, SIGNAL_QUEUE_MAX};
pub use reply::{Answer, Reply, reply_channel};
pub use stats::{NodeStats, Observed};
