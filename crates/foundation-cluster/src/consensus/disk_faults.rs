//! The storage fault seam: what a consensus store's next writes do, set by
//! a test (the test kit's storage nemeses), modelled on FoundationDB's
//! simulated disk.
//!
//! A [`DiskFaults`] handle is shared by the test and one member's store
//! ([`super::ConsensusConfig::disk_faults`]). The store consults it once per
//! write batch (one transaction, one fsync), before anything is written:
//!
//! | fault | what the batch does |
//! |---|---|
//! | [`DiskError::NoSpace`] | fails with `StorageFull` (ENOSPC); nothing is written |
//! | [`DiskError::Io`] | fails with an I/O error (EIO on fsync); nothing is written |
//! | latency | takes that much longer; on the in-memory disk the first half of the batch is written before the wait and the rest after, so a crash meanwhile leaves a torn tail of writes that were never acknowledged |
//!
//! Faults at restart (a data directory lost or truncated) need no seam: the
//! test changes the directory or the [`super::MemoryDisk`] while the node is
//! down.

use std::io;
use std::sync::Arc;
use std::time::Duration;

/// An error the next write batches fail with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskError {
    /// No space left on the device (ENOSPC).
    NoSpace,
    /// An I/O error on fsync (EIO): the batch may not be durable.
    Io,
}

impl DiskError {
    fn to_io(self) -> io::Error {
        match self {
            DiskError::NoSpace => io::Error::new(io::ErrorKind::StorageFull, "no space left on device (injected)"),
            DiskError::Io => io::Error::other("input/output error on fsync (injected)"),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    error: Option<DiskError>,
    latency: Duration,
    /// Batches failed by an injected error.
    failed: u64,
    /// Batches slowed by an injected latency.
    slowed: u64,
}

/// Storage faults for one member's store (no fault by default). Cheap to
/// clone: clones share the faults.
#[derive(Clone, Debug, Default)]
pub struct DiskFaults {
    state: Arc<parking_lot::Mutex<State>>,
}

impl DiskFaults {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every write batch from now on fails with `error` (`None`: none does).
    pub fn fail(&self, error: Option<DiskError>) {
        self.state.lock().error = error;
    }

    /// Every write batch from now on takes `latency` longer.
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().latency = latency;
    }

    /// Clears every fault.
    pub fn clear(&self) {
        let mut s = self.state.lock();
        s.error = None;
        s.latency = Duration::ZERO;
    }

    /// Batches failed by an injected error so far: whether an injection
    /// had an effect.
    pub fn batches_failed(&self) -> u64 {
        self.state.lock().failed
    }

    /// Batches slowed by an injected latency so far.
    pub fn batches_slowed(&self) -> u64 {
        self.state.lock().slowed
    }

    /// Called by the store before a batch: the injected error, or the
    /// latency to add.
    pub(crate) fn before_batch(&self) -> io::Result<Duration> {
        let mut s = self.state.lock();
        if let Some(e) = s.error {
            s.failed += 1;
            return Err(e.to_io());
        }
        if !s.latency.is_zero() {
            s.slowed += 1;
        }
        Ok(s.latency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_shared_counted_and_cleared() {
        let faults = DiskFaults::new();
        let store_side = faults.clone();
        assert_eq!(store_side.before_batch().unwrap(), Duration::ZERO);
        faults.fail(Some(DiskError::NoSpace));
        let e = store_side.before_batch().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        faults.fail(Some(DiskError::Io));
        assert!(store_side.before_batch().unwrap_err().to_string().contains("fsync"));
        assert_eq!(faults.batches_failed(), 2);
        faults.clear();
        faults.set_latency(Duration::from_millis(5));
        assert_eq!(store_side.before_batch().unwrap(), Duration::from_millis(5));
        assert_eq!(faults.batches_slowed(), 1);
        faults.clear();
        assert_eq!(store_side.before_batch().unwrap(), Duration::ZERO);
    }
}
