//! What the backends share: the test secret, scratch directories, ports,
//! connecting the client, node seeds and partition pairs.

use std::time::Duration;

use foundation_cluster::mesh::Cluster;

use super::RunError;

/// The cluster secret every test cluster uses.
pub(crate) fn secret_text() -> &'static str {
    "foundation-testkit-cluster-secret"
}

pub(crate) fn secret() -> foundation_cluster::secret::ClusterSecret {
    foundation_cluster::secret::ClusterSecret::new(secret_text(), "the test kit").expect("a valid secret")
}

static SCRATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh scratch directory for a run's data directories (under the
/// system's temporary directory; the backend removes it at the end).
pub(crate) fn scratch_dir() -> Result<std::path::PathBuf, RunError> {
    let n = SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("foundation-testkit-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| RunError::Start(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// Free loopback ports for nodes to listen on
/// ([`foundation_testutil::ports::free_ports`]: outside the kernel's
/// ephemeral range, never one this process handed out before).
///
/// # Errors
/// No free port left in that range.
pub fn free_ports(n: usize) -> Result<Vec<u16>, RunError> {
    foundation_testutil::ports::free_ports(n).map_err(|e| RunError::Start(e.to_string()))
}

/// Connects the client to every node (retrying while they start: 30 s).
pub(crate) async fn connect_all(client: &Cluster, addrs: &[String]) -> Result<(), String> {
    for addr in addrs {
        let mut tries = 0;
        while let Err(e) = client.connect(addr).await {
            tries += 1;
            if tries > 600 {
                return Err(format!("the client cannot reach {addr}: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Seed of node `i`'s RNG, from the run's seed (SplitMix64).
pub(crate) fn node_seed(seed: u64, i: u64) -> u64 {
    let z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i.wrapping_add(1)));
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Node pairs (a < b) that `groups` separate; nodes in no group form one
/// more group.
pub(crate) fn separated_pairs(n: usize, groups: &[Vec<usize>]) -> Vec<(usize, usize)> {
    let group_of = |i: usize| groups.iter().position(|g| g.contains(&i)).unwrap_or(groups.len());
    let mut pairs = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            if group_of(a) != group_of(b) {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_separate_pairs_and_the_unlisted_form_a_group() {
        assert_eq!(separated_pairs(3, &[vec![0]]), vec![(0, 1), (0, 2)]);
        assert_eq!(separated_pairs(4, &[vec![0, 1], vec![2, 3]]), vec![(0, 2), (0, 3), (1, 2), (1, 3)]);
        assert_eq!(separated_pairs(3, &[vec![0, 1, 2]]), vec![]);
    }

    #[test]
    fn node_seeds_differ_per_node_and_per_run() {
        assert_ne!(node_seed(1, 0), node_seed(1, 1));
        assert_ne!(node_seed(1, 0), node_seed(2, 0));
        assert_eq!(node_seed(7, 3), node_seed(7, 3));
    }
}
