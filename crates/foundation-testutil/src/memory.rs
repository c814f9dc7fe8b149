//! Memory measurement from the OS's view of this process (resident set).

/// Resident memory of this process in bytes (`VmRSS` of Linux's
/// `/proc/self/status`); `None` where that file does not exist.
pub fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident memory before and after some work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Resident bytes before.
    pub before: usize,
    /// Resident bytes after.
    pub after: usize,
}

impl MemoryUsage {
    /// Growth in bytes (negative if memory was returned).
    pub fn delta(&self) -> i64 {
        self.after as i64 - self.before as i64
    }
}

/// Runs `f` and reports resident memory before and after (the seed's
/// `measure_memory_usage`).
pub async fn measure_memory_usage<T, F: Future<Output = T>>(f: F) -> (T, MemoryUsage) {
    let before = rss_bytes().unwrap_or(0);
    let out = f.await;
    let after = rss_bytes().unwrap_or(0);
    (out, MemoryUsage { before, after })
}
