//! Foundation's test kit. This first part holds the helpers of the seed's
//! "Test Helpers and Utilities": waiting on conditions with explicit
//! timeouts, and measuring memory. Cluster backends, nemeses and checkers
//! come with later layers.

pub mod linearizability;
pub mod load;
pub mod memory;
pub mod wait;

pub use memory::{MemoryUsage, measure_memory_usage, rss_bytes};
pub use wait::{WaitTimeout, assert_eventually, wait_for_condition};
