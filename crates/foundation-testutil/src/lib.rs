//! Test helpers with no Foundation dependency: the core and cluster crates
//! use them in their own tests without a dependency edge pointing up to the
//! test kit (which depends on both). The test kit re-exports all of them.
//!
//! - [`wait`]: waiting on conditions with explicit timeouts, never bare
//!   sleeps;
//! - [`memory`]: resident memory of this process;
//! - [`load`]: CPU load and scheduler lateness.
#![warn(missing_docs)]

pub mod load;
pub mod memory;
pub mod wait;

pub use memory::{MemoryUsage, measure_memory_usage, rss_bytes};
pub use wait::{WaitTimeout, assert_eventually, assert_eventually_eq, assert_eventually_with, wait_for_condition};
