//! Foundation's test kit: the seed's "Test Helpers and Utilities" (waiting
//! on conditions with explicit timeouts, with the last observed value on
//! failure; measuring memory; capturing telemetry) and the linearizability
//! checker. Cluster backends, nemeses and workloads come next.

pub mod agent;
pub mod chaos;
pub mod cluster;
pub mod generators;
pub mod linearizability;
pub mod load;
pub mod memory;
pub mod recorder;
pub mod scenario;
pub mod telemetry;
pub mod wait;
pub mod workload;

pub use memory::{MemoryUsage, measure_memory_usage, rss_bytes};
pub use telemetry::{CapturedEvent, TelemetryCapture, capture_telemetry};
pub use wait::{WaitTimeout, assert_eventually, assert_eventually_eq, assert_eventually_with, wait_for_condition};
