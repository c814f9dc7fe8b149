//! Consensus on loopback clusters of `TEST_CLUSTER_SIZE` nodes (default 3):
//! seed 3.2 (a leader among the nodes; a decision committed with term > 0;
//! identical state everywhere; surviving a stopped node), seed 3.4 (the
//! majority side of a partition stays operational, the isolated node knows
//! it is not, healing restores all), restart from disk, membership changes,
//! and bad input.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use foundation_cluster::Cluster;
use foundation_cluster::consensus::{Command, Consensus, ConsensusConfig, ConsensusError, Decision, Member};

mod common;
use common::{WAIT, start, until};

const T: Duration = Duration::from_secs(5);

fn size() -> usize {
    std::env::var("TEST_CLUSTER_SIZE").ok().and_then(|s| s.parse().ok()).filter(|n| *n >= 3).unwrap_or(3)
}

fn member(c: &Cluster) -> Member {
    Member { name: c.name().to_owned(), addr: c.addr().to_owned() }
}

/// A fresh directory for a durable test (removed on drop).
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!("foundation-{tag}-{}-{n}", std::process::id())))
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `n` meshed nodes, each running a consensus member (ids 1..=n).
async fn group(n: usize, dirs: Option<&TempDir>) -> (Vec<Cluster>, Vec<Consensus>) {
    let mut nodes = Vec::new();
    for i in 1..=n {
        nodes.push(start(&format!("node{i}")).await);
    }
    for c in &nodes[1..] {
        c.connect(nodes[0].addr()).await.expect("joins");
    }
    for c in &nodes {
        until("the mesh is complete", || c.peers().len() == n - 1).await;
    }
    let members = start_members(&nodes, dirs).await;
    let all: BTreeMap<u64, Member> = nodes.iter().enumerate().map(|(i, c)| (i as u64 + 1, member(c))).collect();
    members[0].initialize(all).await.expect("initialized");
    for m in &members {
        m.wait_for_leader(WAIT).await.expect("a leader");
    }
    (nodes, members)
}

async fn start_members(nodes: &[Cluster], dirs: Option<&TempDir>) -> Vec<Consensus> {
    let mut members = Vec::new();
    for (i, c) in nodes.iter().enumerate() {
        let mut config = ConsensusConfig::new(i as u64 + 1);
        if let Some(d) = dirs {
            config = config.durable(d.0.join(c.name()));
        }
        members.push(Consensus::start(c, config).await.expect("starts"));
    }
    members
}

fn put(key: &str, value: &str) -> Command {
    Command::Put { key: key.into(), value: value.as_bytes().to_vec() }
}

async fn states_converge(members: &[&Consensus]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut states = Vec::new();
        for m in members {
            states.push(m.local_state().await);
        }
        if states.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "states differ: {states:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_is_committed_everywhere_and_survives_a_stopped_node() {
    let n = size();
    let (nodes, members) = group(n, None).await;
    // A leader is among the nodes, and all agree on it.
    let (leader_id, leader) = members[0].leader().expect("a leader");
    assert!(nodes.iter().any(|c| c.name() == leader.name));
    for m in &members {
        until("all agree on the leader", || m.leader().map(|l| l.0) == Some(leader_id)).await;
    }
    // A decision from a follower (forwarded) and one from the leader.
    let follower = members.iter().find(|m| m.id() != leader_id).expect("a follower");
    let decision = follower.reach_consensus(put("proposal", "value"), T).await.expect("committed");
    assert!(decision.committed);
    assert!(decision.term > 0);
    let lead = members.iter().find(|m| m.id() == leader_id).expect("the leader");
    let second = lead.reach_consensus(put("second", "v2"), T).await.expect("committed");
    assert!(second.index > decision.index);
    states_converge(&members.iter().collect::<Vec<_>>()).await;
    assert_eq!(follower.get("proposal", T).await, Ok(Some(b"value".to_vec())), "linearizable read through the leader");
    // Stop the leader: the others elect another and keep committing.
    let li = members.iter().position(|m| m.id() == leader_id).expect("leader index");
    members[li].shutdown().await;
    nodes[li].shutdown();
    let rest: Vec<&Consensus> = members.iter().enumerate().filter(|(i, _)| *i != li).map(|(_, m)| m).collect();
    // A proposal forwarded to the stopped leader just before its connection
    // closed may have reached it: that outcome is `Unknown`, and a put is
    // idempotent, so it is retried (what a client does).
    let started = tokio::time::Instant::now();
    let after = loop {
        match rest[0].reach_consensus(put("after", "failover"), T).await {
            Err(ConsensusError::Unknown(_)) if started.elapsed() < T => continue,
            other => break other.expect("committed after the leader stopped"),
        }
    };
    assert!(after.term > decision.term, "a new term: {} after {}", after.term, decision.term);
    states_converge(&rest).await;
    assert_eq!(rest[1].get("after", T).await, Ok(Some(b"failover".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_majority_side_of_a_partition_stays_operational_and_the_isolated_node_knows() {
    let n = size();
    let (nodes, members) = group(n, None).await;
    let isolated = n - 1;
    // Partition: the last node alone, the rest together (both sides hold).
    for (i, c) in nodes.iter().enumerate().filter(|(i, _)| *i != isolated) {
        let _ = i;
        c.disconnect(nodes[isolated].name());
        nodes[isolated].disconnect(c.name());
    }
    let started = tokio::time::Instant::now();
    until("the isolated node reports no quorum", || {
        let s = members[isolated].status();
        !s.operational && !s.quorum
    })
    .await;
    assert!(started.elapsed() < Duration::from_millis(1200), "about two election timeouts at most: {:?}", started.elapsed());
    for m in &members[..isolated] {
        until("the majority is operational", || {
            let s = m.status();
            s.operational && s.quorum
        })
        .await;
    }
    // Writes: the majority commits, the isolated node refuses at once.
    members[0].reach_consensus(put("during", "partition"), T).await.expect("majority commits");
    let refused = tokio::time::Instant::now();
    let err = members[isolated].reach_consensus(put("lost", "x"), T).await.expect_err("no quorum");
    assert!(matches!(err, ConsensusError::NoQuorum { reachable: 1, .. }), "{err}");
    assert!(refused.elapsed() < Duration::from_millis(100), "refused promptly: {:?}", refused.elapsed());
    // Heal: everyone is operational again and catches up.
    for c in &nodes[..isolated] {
        c.connect(nodes[isolated].addr()).await.expect("heals");
    }
    for m in &members {
        until("operational after healing", || m.status().operational).await;
    }
    states_converge(&members.iter().collect::<Vec<_>>()).await;
    assert_eq!(members[isolated].get("during", T).await, Ok(Some(b"partition".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_group_recovers_its_log_and_state_from_disk() {
    let dir = TempDir::new("restart");
    let (nodes, members) = group(3, Some(&dir)).await;
    for i in 0..20 {
        members[i % 3].reach_consensus(put(&format!("k{i}"), &format!("v{i}")), T).await.expect("committed");
    }
    states_converge(&members.iter().collect::<Vec<_>>()).await;
    let before = members[0].local_state().await;
    for (m, c) in members.iter().zip(&nodes) {
        m.shutdown().await;
        c.shutdown();
    }
    // The same names and data directories, new processes of the nodes.
    let mut again = Vec::new();
    for i in 1..=3 {
        again.push(start(&format!("node{i}")).await);
    }
    for c in &again[1..] {
        c.connect(again[0].addr()).await.expect("joins");
    }
    for c in &again {
        until("the mesh is complete", || c.peers().len() == 2).await;
    }
    let members = start_members(&again, Some(&dir)).await;
    // Already initialized: the group forms from what is on disk.
    for m in &members {
        m.wait_for_leader(WAIT).await.expect("a leader from the recovered log");
    }
    members[1].reach_consensus(put("after", "restart"), T).await.expect("commits after the restart");
    states_converge(&members.iter().collect::<Vec<_>>()).await;
    let after = members[2].local_state().await;
    for (k, v) in &before.kv {
        assert_eq!(after.kv.get(k), Some(v), "{k} survived the restart");
    }
    assert_eq!(members[0].get("k19", T).await, Ok(Some(b"v19".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_through_joint_consensus() {
    let (nodes, members) = group(3, None).await;
    members[0].reach_consensus(put("before", "join"), T).await.expect("committed");
    let newcomer = start("node4").await;
    newcomer.connect(nodes[0].addr()).await.expect("joins the mesh");
    until("the mesh is complete", || newcomer.peers().len() == 3).await;
    let fourth = Consensus::start(&newcomer, ConsensusConfig::new(4)).await.expect("starts");
    let (leader_id, _) = members[0].leader().expect("a leader");
    let leader = members.iter().find(|m| m.id() == leader_id).expect("the leader");
    leader.add_member(4, member(&newcomer), T).await.expect("added");
    assert_eq!(leader.members().len(), 4);
    until("the newcomer knows the four voters", || fourth.members().len() == 4).await;
    let mut all: Vec<&Consensus> = members.iter().collect();
    all.push(&fourth);
    states_converge(&all).await;
    assert_eq!(fourth.get("before", T).await, Ok(Some(b"join".to_vec())));
    // Remove a follower; the rest keep committing.
    let gone = members.iter().find(|m| m.id() != leader_id).expect("a follower").id();
    leader.remove_member(gone, T).await.expect("removed");
    assert!(!leader.members().contains_key(&gone));
    fourth.reach_consensus(put("after", "leave"), T).await.expect("committed by the new voter set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_proposals_and_second_initializations_are_refused() {
    let (nodes, members) = group(3, None).await;
    let big = Command::Put { key: "big".into(), value: vec![0; (1 << 20) + 1] };
    assert!(matches!(members[0].reach_consensus(big, T).await, Err(ConsensusError::TooLarge { .. })));
    let all: BTreeMap<u64, Member> = nodes.iter().enumerate().map(|(i, c)| (i as u64 + 1, member(c))).collect();
    assert_eq!(members[1].initialize(all).await, Err(ConsensusError::AlreadyInitialized));
    // Compare-and-set answers whether it applied.
    let d = members[2].reach_consensus(Command::Cas { key: "c".into(), expected: None, new: Some(b"1".to_vec()) }, T).await.expect("cas");
    assert!(d.applied.ok);
    let d = members[0].reach_consensus(Command::Cas { key: "c".into(), expected: None, new: Some(b"2".to_vec()) }, T).await.expect("cas");
    assert!(!d.applied.ok);
    assert_eq!(d.applied.previous, Some(b"1".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_holders_never_hold_a_lock_under_the_same_token() {
    let (_nodes, members) = group(3, None).await;
    // Twelve contenders on the three members, each trying for the lock many
    // times with short leases; every grant is recorded.
    let grants = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<(u64, String, u64)>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..12 {
        let m = members[c % 3].clone();
        let grants = grants.clone();
        tasks.spawn(async move {
            let me = format!("client{c}");
            for _ in 0..10 {
                match m.acquire_lock("resource", &me, Duration::from_millis(50), T).await {
                    Ok(lease) => {
                        grants.lock().push((lease.token, me.clone(), lease.expires_ms));
                        if c % 2 == 0 {
                            assert!(m.release_lock("resource", &me, lease.token, T).await.expect("decided"));
                        }
                    }
                    Err(foundation_cluster::consensus::coordination::LockError::Held(other)) => assert_ne!(other.holder, me),
                    Err(e) => panic!("{e}"),
                }
                tokio::time::sleep(Duration::from_millis(7)).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a contender panicked");
    }
    let grants = grants.lock().clone();
    assert!(grants.len() >= 5, "some grants: {}", grants.len());
    // One holder per token (every grant, a renewal too, has its own).
    let mut by_token: BTreeMap<u64, String> = BTreeMap::new();
    for (token, holder, _) in &grants {
        let first = by_token.entry(*token).or_insert_with(|| holder.clone());
        assert_eq!(first, holder, "token {token} granted to two holders");
    }
    // A held lock is refused to others, and a release by a stale token fails.
    let lease = members[0].acquire_lock("solo", "a", Duration::from_secs(30), T).await.expect("free");
    let refused = members[1].acquire_lock("solo", "b", Duration::from_secs(30), T).await;
    assert!(
        matches!(&refused, Err(foundation_cluster::consensus::coordination::LockError::Held(l)) if l.holder == "a" && l.token == lease.token),
        "{refused:?}"
    );
    assert!(!members[2].release_lock("solo", "a", lease.token - 1, T).await.expect("decided"));
    assert_eq!(members[2].lock_state("solo", T).await.expect("read").map(|l| l.holder), Some("a".into()));
    assert!(members[2].release_lock("solo", "a", lease.token, T).await.expect("decided"));
    let next = members[1].acquire_lock("solo", "b", Duration::from_secs(30), T).await.expect("free again");
    assert!(next.token > lease.token, "tokens only grow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_opens_when_all_have_arrived() {
    let (_nodes, members) = group(3, None).await;
    let first = {
        let m = members[0].clone();
        foundation::rt::spawn(async move { m.barrier("start", "p0", 3, T).await })
    };
    let second = {
        let m = members[1].clone();
        foundation::rt::spawn(async move { m.barrier("start", "p1", 3, T).await })
    };
    // Two of three: still closed.
    assert!(members[2].barrier("start", "p1", 3, Duration::from_millis(300)).await.is_err(), "p1 twice counts once");
    members[2].barrier("start", "p2", 3, T).await.expect("the third opens it");
    first.await.expect("joined").expect("opened");
    second.await.expect("joined").expect("opened");
}

/// A node with a small frame limit (so that a state several frames large
/// is cheap to build).
async fn start_small_frames(name: &str, frame_limit: usize) -> Cluster {
    let mut config = foundation_cluster::mesh::ClusterConfig::new(name, "127.0.0.1:0", common::secret());
    config.tick = Duration::from_millis(100);
    config.ticks_to_down = 30;
    config.frame_limit = frame_limit;
    Cluster::start(foundation::Node::new(name), config).await.expect("listens")
}

fn snapshotting(id: u64, dir: &TempDir, name: &str) -> ConsensusConfig {
    let mut config = ConsensusConfig::new(id).durable(dir.0.join(name));
    config.snapshot_every = 20;
    config.snapshot_log_bytes = 64 << 10;
    config.logs_kept = 5;
    config
}

/// A follower is down while a state five times the frame limit is
/// written, snapshotted and the log behind it purged: it comes back,
/// catches up through a snapshot sent in chunks, and the group then
/// survives the loss of another node with every key readable through it.
/// (With the snapshot in one frame, the follower never caught up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_through_a_snapshot_five_frames_large() {
    const FRAME: usize = 256 << 10;
    const VALUE: usize = 16 << 10;
    let dir = TempDir::new("snapshot");
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(start_small_frames(&format!("node{i}"), FRAME).await);
    }
    for c in &nodes[1..] {
        c.connect(nodes[0].addr()).await.expect("joins");
    }
    for c in &nodes {
        until("the mesh is complete", || c.peers().len() == 2).await;
    }
    let mut members = Vec::new();
    for (i, c) in nodes.iter().enumerate() {
        members.push(Consensus::start(c, snapshotting(i as u64 + 1, &dir, c.name())).await.expect("starts"));
    }
    let all: BTreeMap<u64, Member> = nodes.iter().enumerate().map(|(i, c)| (i as u64 + 1, member(c))).collect();
    members[0].initialize(all).await.expect("initialized");
    let (leader, _) = members[0].wait_for_leader(WAIT).await.expect("a leader");
    let f = members.iter().position(|m| m.id() != leader).expect("a follower");
    members[f].shutdown().await;
    nodes[f].shutdown();
    let keys = 5 * FRAME / VALUE;
    let via = members.iter().position(|m| m.id() == leader).expect("the leader");
    for k in 0..keys {
        let value = vec![b'a' + (k % 26) as u8; VALUE];
        members[via].reach_consensus(Command::Put { key: format!("big{k}"), value }, T).await.expect("committed");
    }
    // Back, on its data directory: far behind the leader's purged log.
    let name = format!("node{}", f + 1);
    let back = start_small_frames(&name, FRAME).await;
    back.connect(nodes[via].addr()).await.expect("joins");
    until("the mesh is complete again", || back.peers().len() == 2).await;
    members[f] = Consensus::start(&back, snapshotting(f as u64 + 1, &dir, &name)).await.expect("restarts");
    nodes[f] = back;
    // Converged, compared without printing megabytes of state.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (mine, leaders) = (members[f].local_state().await, members[via].local_state().await);
        if mine == leaders {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the returned follower has {} keys, the leader {} (applied {:?} and {:?})",
            mine.kv.len(),
            leaders.kv.len(),
            members[f].applied_index().await,
            members[via].applied_index().await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another node goes: the returned follower is now needed for a quorum.
    let other = (0..3).find(|i| *i != f && *i != via).expect("a third node");
    members[other].shutdown().await;
    nodes[other].shutdown();
    members[f].reach_consensus(put("after", "loss"), T).await.expect("commits with the returned follower");
    for k in 0..keys {
        let value = members[f].get(&format!("big{k}"), T).await.expect("read");
        assert_eq!(value.map(|v| v.len()), Some(VALUE), "big{k}");
    }
}

/// Starts member `id` of cluster "foundation" on `dir` (one node) and
/// returns the refusal, if any.
async fn start_on(dir: &std::path::Path, id: u64, existing: bool) -> Result<Consensus, ConsensusError> {
    let node = start(&format!("solo{id}")).await;
    let mut config = ConsensusConfig::new(id).durable(dir);
    config.existing = existing;
    Consensus::start(&node, config).await
}

/// A corrupt, truncated, foreign or lost Raft database (the log's or the
/// state's) is refused with one line that names it and says what to do;
/// the file is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_truncated_foreign_and_lost_databases_are_refused() {
    let dir = TempDir::new("refusals");
    let raft = dir.0.join("raft");
    let file = raft.join("raft.log");
    // A database written by member 1, readable by its owner only.
    let m = start_on(&raft, 1, false).await.expect("a fresh database");
    m.shutdown().await;
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!((mode(&raft), mode(&file)), (0o700, 0o600));
    let good = std::fs::read(&file).expect("written");
    let refusal = |r: Result<Consensus, ConsensusError>| match r {
        Err(ConsensusError::Storage(why)) => why,
        Err(other) => panic!("not a storage refusal: {other:?}"),
        Ok(_) => panic!("started"),
    };
    // Another member's database.
    let why = refusal(start_on(&raft, 2, true).await);
    assert!(why.contains("belongs to member 1"), "{why}");
    // Random bytes over all but the file's first 16 (its magic number).
    let mut bad = good.clone();
    for (i, b) in bad[16..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    std::fs::write(&file, &bad).expect("corrupted");
    let why = refusal(start_on(&raft, 1, true).await);
    assert!(why.contains("raft.log") && why.contains("corrupt"), "{why}");
    assert_eq!(std::fs::read(&file).expect("still there"), bad, "the file is left as it was");
    // Cut inside its last record (past it the file holds zeros it grew by,
    // which a cut may take without losing anything).
    let used = good.iter().rposition(|&b| b != 0).expect("records");
    std::fs::write(&file, &good[..used - 1]).expect("truncated");
    let why = refusal(start_on(&raft, 1, true).await);
    assert!(why.contains("raft.log") && why.contains("cut short"), "{why}");
    // The state database: corrupt, then another member's.
    std::fs::write(&file, &good).expect("restored");
    let state = raft.join("state.redb");
    let good_state = std::fs::read(&state).expect("written");
    assert_eq!(mode(&state), 0o600);
    let mut bad = good_state.clone();
    for (i, b) in bad[64..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    std::fs::write(&state, &bad).expect("corrupted");
    let why = refusal(start_on(&raft, 1, true).await);
    assert!(why.contains("state.redb") && why.contains("corrupt"), "{why}");
    assert_eq!(std::fs::read(&state).expect("still there"), bad, "the file is left as it was");
    let other = dir.0.join("other");
    start_on(&other, 2, false).await.expect("another member's database").shutdown().await;
    std::fs::copy(other.join("state.redb"), &state).expect("copied");
    let why = refusal(start_on(&raft, 1, true).await);
    assert!(why.contains("state.redb belongs to member 2"), "{why}");
    std::fs::write(&state, &good_state).expect("restored");
    start_on(&raft, 1, true).await.expect("its own databases again").shutdown().await;
    // Gone, under a member that has run before.
    std::fs::remove_file(&file).expect("removed");
    let why = refusal(start_on(&raft, 1, true).await);
    assert!(why.contains("gone or empty") && why.contains("new --id"), "{why}");
}

/// A timeout a peer sends is bounded: `Duration::MAX` (which would
/// overflow the deadline) gets an answer, not a panic of the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_unbounded_timeout_is_clamped() {
    let (nodes, members) = group(3, None).await;
    let client = start("timeout-client").await;
    client.connect(nodes[0].addr()).await.expect("joins");
    // It learns the other members from the first; it asks one of them too.
    until("the client sees the members", || nodes.iter().all(|n| client.peers().contains(&n.name().to_owned()))).await;
    let cmd = put("clamped", "yes");
    let answer: Result<Decision, ConsensusError> = client
        .rpc(nodes[0].name(), foundation_cluster::consensus::CLIENT_SUBMIT, (cmd, Duration::MAX), T)
        .await
        .expect("an answer, not a dropped call");
    assert!(answer.is_ok(), "{answer:?}");
    let read: Result<foundation_cluster::consensus::Answer, ConsensusError> = client
        .rpc(
            nodes[1].name(),
            foundation_cluster::consensus::CLIENT_QUERY,
            (foundation_cluster::consensus::Query::Get("clamped".into()), Duration::MAX),
            T,
        )
        .await
        .expect("an answer, not a dropped call");
    assert!(read.is_ok(), "{read:?}");
    drop(members);
}
