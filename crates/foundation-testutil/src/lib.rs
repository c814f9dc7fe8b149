//! Test helpers with no Foundation dependency: the core and cluster crates
//! use them in their own tests without a dependency edge pointing up to the
//! test kit (which depends on both). The test kit re-exports all of them.
//!
//! - [`wait`]: waiting on conditions with explicit timeouts, never bare
//!   sleeps;
//! - [`memory`]: resident memory of this process;
//! - [`load`]: CPU load and scheduler lateness;
//! - [`ports`]: free loopback ports outside the kernel's ephemeral range;
//! - [`otlp`]: an OpenTelemetry collector on loopback that keeps the spans
//!   it is sent (OTLP/HTTP, protobuf), for tests of span export.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use foundation_testutil::assert_eventually;
//!
//! static TICKS: AtomicU32 = AtomicU32::new(0);
//! tokio::spawn(async {
//!     for _ in 0..5 {
//!         tokio::time::sleep(Duration::from_millis(2)).await;
//!         TICKS.fetch_add(1, Ordering::Relaxed);
//!     }
//! });
//! assert_eventually("five ticks", || TICKS.load(Ordering::Relaxed) == 5, Duration::from_secs(5)).await;
//! assert!(foundation_testutil::rss_bytes().is_none_or(|b| b > 0));
//! # });
//! ```
#![warn(missing_docs)]

pub mod load;
pub mod memory;
pub mod otlp;
pub mod ports;
pub mod wait;

pub use memory::{MemoryUsage, measure_memory_usage, rss_bytes};
pub use wait::{WaitTimeout, assert_eventually, assert_eventually_eq, assert_eventually_with, wait_for_condition};
