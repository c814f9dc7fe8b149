//! Running a test body against a cluster: [`run`] picks the backend,
//! bounds the body by the spec's wall-clock limit, and hands back its
//! value with the cluster's fault log.

#[allow(clippy::wildcard_imports)] // the cluster module's types and imports
use super::*;

/// What a run gives back: the body's value and how long it took.
#[derive(Debug)]
pub struct Run<T> {
    /// The body's value.
    pub value: T,
    /// Time inside the cluster (virtual under simulation).
    pub cluster_time: Duration,
    /// Wall-clock time of the whole run.
    pub wall_time: Duration,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec cannot run.
    #[error("invalid cluster spec: {0}")]
    Spec(String),
    /// The cluster did not start.
    #[error("the cluster did not start: {0}")]
    Start(String),
    /// The body failed.
    #[error("{0:#}")]
    Body(anyhow::Error),
    /// The simulator failed (a host's error, or the run went past
    /// `sim_limit`).
    #[error("simulation: {0}")]
    Sim(String),
    /// A simulated host's task panicked (the first panic's message; the
    /// panic hook printed where). The run stops there: the host would go
    /// on without whatever the task was doing.
    #[error("a simulated host's task panicked: {0}")]
    TaskPanic(String),
    /// The run went past [`ClusterSpec::wall_limit`] of wall-clock time.
    #[error("the run went past its wall-clock limit of {limit:?}; it was stuck in {step}")]
    WallLimit {
        /// The limit.
        limit: Duration,
        /// What the run was doing ([`TestCluster::steps`]).
        step: String,
    },
}

/// Starts the cluster `spec` describes, runs `body` on it, and stops it.
///
/// Blocking: the simulated backend steps turmoil on this thread, the
/// in-process one runs its own tokio runtime. Call it from a plain `#[test]`.
pub fn run<T, F, Fut>(spec: &ClusterSpec, body: F) -> Result<Run<T>, RunError>
where
    T: Send + 'static,
    F: FnOnce(TestCluster) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    if spec.nodes == 0 {
        return Err(RunError::Spec("a cluster needs at least one node".into()));
    }
    if !spec.services.contains(&Service::Consensus) {
        return Err(RunError::Spec("the test kit's clusters need the consensus service".into()));
    }
    if spec.backend == Backend::Processes && spec.frame_limit.is_some() {
        return Err(RunError::Spec(
            "the process backend runs `foundation node` with the default frame limit: leave frame_limit unset".into(),
        ));
    }
    if spec.backend != Backend::Processes && spec.tls.is_some() {
        return Err(RunError::Spec("TLS is an option of the process backend: leave tls unset".into()));
    }
    if spec.backend != Backend::Processes && spec.http {
        return Err(RunError::Spec("the admin API is an option of the process backend: leave http unset".into()));
    }
    if spec.backend == Backend::Simulated && spec.otlp_endpoint.is_some() {
        return Err(RunError::Spec(
            "a simulated run exports no spans (its clock and network are simulated): leave otlp_endpoint unset, or run in process".into(),
        ));
    }
    if spec.frame_limit.is_some_and(|l| l < MIN_FRAME_LIMIT) {
        return Err(RunError::Spec(format!("a frame limit under {MIN_FRAME_LIMIT} bytes cannot carry the cluster's own frames")));
    }
    match spec.backend {
        Backend::Simulated => sim::run(spec, body),
        Backend::InProcess => inprocess::run(spec, body),
        Backend::Processes => processes::run(spec, body),
    }
}

/// The smallest [`ClusterSpec::frame_limit`] accepted (Raft heartbeats and
/// the workloads' frames must fit).
pub const MIN_FRAME_LIMIT: usize = 64 << 10;

/// Runs a real backend's body under the spec's wall-clock limit.
pub(crate) async fn body_within<T>(cluster: &TestCluster, body: impl Future<Output = anyhow::Result<T>>) -> Result<T, RunError> {
    match cluster.spec().wall_limit {
        None => body.await.map_err(RunError::Body),
        Some(limit) => match tokio::time::timeout(limit, body).await {
            Ok(r) => r.map_err(RunError::Body),
            Err(_) => Err(RunError::WallLimit { limit, step: cluster.steps() }),
        },
    }
}
