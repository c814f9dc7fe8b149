//! The seed's proptest generators (`Foundation.TestDataGenerators`):
//! [`ecosystem_config`], [`message_payload`] and [`distributed_operation`].
//!
//! Each generated value carries a `seed`: whatever a test does with the
//! value that involves randomness (a simulated cluster, a workload, a
//! monkey) takes it from there, so a failing case, and every case proptest
//! shrinks it to, replays the same way.

use std::time::Duration;

use bytes::Bytes;
use foundation::Message;
use foundation::ecosystem::{EcosystemConfig, GcStrategy, MemoryStrategy, ProcessSpec};
use proptest::prelude::*;

/// An Erlang-style alphanumeric atom: a lowercase letter, then up to 15
/// letters, digits or underscores.
fn atom() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,15}"
}

/// A generated ecosystem configuration (the seed's `ecosystem_config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenEcosystem {
    /// The coordinator's name.
    pub coordinator: String,
    /// The workers' module name (the ecosystem's name here).
    pub worker_module: String,
    /// Workers, 1..=100.
    pub worker_count: usize,
    /// Isolated heaps or a shared heap.
    pub memory_strategy: MemoryStrategy,
    /// Frequent minor or standard.
    pub gc_strategy: GcStrategy,
    /// The case's seed.
    pub seed: u64,
}

impl GenEcosystem {
    /// The configuration, with these process bodies.
    pub fn to_config<C: Message, W: Message>(&self, coordinator: ProcessSpec<C>, worker: ProcessSpec<W>) -> EcosystemConfig<C, W> {
        let mut c = EcosystemConfig::new(coordinator, worker, self.worker_count);
        c.name = Some(format!("{}.{}", self.coordinator, self.worker_module));
        c.memory_strategy = Some(self.memory_strategy);
        c.gc_strategy = Some(self.gc_strategy);
        c
    }
}

/// The seed's `ecosystem_config`.
pub fn ecosystem_config() -> impl Strategy<Value = GenEcosystem> {
    (
        atom(),
        atom(),
        1usize..=100,
        prop_oneof![Just(MemoryStrategy::IsolatedHeaps), Just(MemoryStrategy::SharedHeap)],
        prop_oneof![Just(GcStrategy::FrequentMinor), Just(GcStrategy::Standard)],
        any::<u64>(),
    )
        .prop_map(|(coordinator, worker_module, worker_count, memory_strategy, gc_strategy, seed)| GenEcosystem {
            coordinator,
            worker_module,
            worker_count,
            memory_strategy,
            gc_strategy,
            seed,
        })
}

/// A generated message (the seed's `message_payload`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenPayload {
    /// The bytes, 1 B ..= `max` (1,000,000 in the seed).
    pub data: Bytes,
    /// Their size (the seed's `metadata.size`).
    pub size: usize,
    /// The case's seed.
    pub seed: u64,
}

/// The seed's `message_payload`: 1 B to 1 MB (`max` bytes at most).
pub fn message_payload(max: usize) -> impl Strategy<Value = GenPayload> {
    (1usize..=max.max(1), any::<u64>()).prop_map(|(size, seed)| {
        // Content from the seed (proptest shrinks the size and the seed,
        // not a megabyte vector byte by byte).
        let mut x = seed | 1;
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        GenPayload { data: Bytes::from(data), size, seed }
    })
}

/// A generated distributed operation (the seed's `distributed_operation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenOperation {
    /// The operation's name.
    pub operation: String,
    /// The nodes it targets (1..=10 names).
    pub target_nodes: Vec<String>,
    /// Its timeout, 1..=30 s.
    pub timeout: Duration,
    /// Whether it must go through consensus.
    pub consensus_required: bool,
    /// The case's seed.
    pub seed: u64,
}

/// The seed's `distributed_operation`.
pub fn distributed_operation() -> impl Strategy<Value = GenOperation> {
    (atom(), prop::collection::vec(atom(), 1..=10), 1_000u64..=30_000, any::<bool>(), any::<u64>()).prop_map(
        |(operation, target_nodes, timeout_ms, consensus_required, seed)| GenOperation {
            operation,
            target_nodes,
            timeout: Duration::from_millis(timeout_ms),
            consensus_required,
            seed,
        },
    )
}
