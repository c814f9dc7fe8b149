//! Foundation's test kit: whole clusters inside a test, under faults and
//! chaos, with their histories checked.
//!
//! - [`cluster`]: `TestCluster` on a simulated (turmoil, deterministic from
//!   a seed), an in-process or an OS-process backend, and its faults;
//! - [`chaos`]: the nemeses and the seeded chaos monkey;
//! - [`workload`] and [`recorder`]: clients that record histories;
//! - [`linearizability`]: the checker `foundation check` runs;
//! - [`scenario`]: the seed's Layer 4 (workloads beside the monkey, heal,
//!   convergence, the checks) as one function, `run_chaos`;
//! - [`generators`]: proptest strategies with a seed in every value;
//! - helpers: waiting with explicit timeouts ([`wait`]), memory
//!   ([`memory`]), telemetry ([`telemetry`]), CPU load ([`load`]), and the
//!   chaos agent every test node runs ([`agent`]).
//!
//! A simulated three-node cluster: node 0 is cut off while the KV
//! workload runs for two seconds, then the partition heals; the majority
//! kept serving, every node agrees again, and the history is linearizable.
//!
//! ```
//! use std::time::Duration;
//! use foundation_testkit::cluster::{Backend, ClusterSpec, run};
//! use foundation_testkit::linearizability::{Verdict, check};
//! use foundation_testkit::workload::KvWorkload;
//!
//! let spec = ClusterSpec::new(Backend::Simulated, 3, 42);
//! let run = run(&spec, |cluster| async move {
//!     cluster.converged(Duration::from_secs(10)).await.map_err(anyhow::Error::msg)?;
//!     cluster.isolate(0).await?;
//!     let report = KvWorkload::new(42, Duration::from_secs(2)).run(&cluster).await;
//!     cluster.heal().await?;
//!     let (_, state) = cluster.converged(Duration::from_secs(10)).await.map_err(anyhow::Error::msg)?;
//!     Ok((report, state))
//! })
//! .expect("the run completes");
//! let (report, state) = run.value;
//! assert!(report.ok() > 0, "the majority side kept serving");
//! assert!(!state.kv.is_empty(), "the writes reached every node");
//! assert_eq!(check(&report.history.ops().expect("a valid history")).verdict, Verdict::Linearizable);
//! ```

#![warn(missing_docs)]

pub mod agent;
pub mod chaos;
pub mod cluster;
pub mod generators;
pub mod linearizability;
pub mod recorder;
pub mod scenario;
pub mod telemetry;
pub mod workload;

pub use foundation_testutil::memory::{MemoryUsage, measure_memory_usage, rss_bytes};
pub use foundation_testutil::wait::{WaitTimeout, assert_eventually, assert_eventually_eq, assert_eventually_with, wait_for_condition};
/// Waiting, memory, load, port and OTLP collector helpers, from the leaf crate `foundation-testutil`.
pub use foundation_testutil::{load, memory, otlp, ports, wait};
pub use telemetry::{CapturedEvent, TelemetryCapture, capture_telemetry};
