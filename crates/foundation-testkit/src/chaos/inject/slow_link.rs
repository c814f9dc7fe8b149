//! `slow_link`: a node's links capped at a few MiB/s while only a bare
//! majority is up, so every commit crosses them; values of a sixteenth of
//! a frame must still commit.

use super::*;

/// Bytes a second, each way, on the throttled links.
pub(super) const RATE: u64 = 4 << 20;
/// Keys `slow_link` writes (and deletes again).
const SLOW_PREFIX: &str = "chaos/slow/";
/// A value gets this many times what the link needs to carry it.
const MARGIN: f64 = 20.0;

/// Throttles `target`'s links to the nodes left up (others are killed down
/// to a bare majority), writes values for the hold, and checks that each
/// commits within [`MARGIN`] times its time on the link.
pub(super) async fn slow_link(cluster: &TestCluster, target: usize, hold: Duration) -> Result<Injected, String> {
    let name = cluster.names()[target].clone();
    let majority = cluster.size() / 2 + 1;
    let mut up = live_except(cluster, target);
    if up.len() + 1 < majority {
        return Ok(Injected { detail: format!("{name}: no majority up to throttle"), effective: false, finding: None });
    }
    let down = up.split_off(majority - 1);
    for &d in &down {
        cluster.kill(d).await.map_err(fe)?;
    }
    for &o in &up {
        cluster.throttle(target, o, RATE).await.map_err(fe)?;
    }
    let chunk = (cluster.spec().frame_limit() / 16).clamp(1, PROPOSAL_BYTES_DEFAULT - 1024);
    let within = Duration::from_secs_f64(MARGIN * chunk as f64 / RATE as f64).max(Duration::from_secs(2));
    let via: Vec<usize> = up.iter().copied().chain([target]).collect();
    let start = tokio::time::Instant::now();
    let (mut written, mut failed, mut why) = (0usize, 0usize, String::new());
    while written == 0 || start.elapsed() < hold {
        cluster.set_step("monkey", format!("slow_link: writing value {written} of {chunk} bytes across {name}'s links"));
        let put = Command::Put { key: format!("{SLOW_PREFIX}{written}"), value: vec![written as u8; chunk] };
        if let Err(e) = submit_any(cluster, &via, put, within).await {
            failed += 1;
            why = e;
        }
        written += 1;
    }
    for &o in &up {
        cluster.throttle(target, o, 0).await.map_err(fe)?;
    }
    for &d in &down {
        cluster.restart(d).await.map_err(fe)?;
    }
    cluster.set_step("monkey", "slow_link: deleting the values");
    let all = live_except(cluster, usize::MAX);
    for i in 0..written {
        // Best effort: a value left over only makes the state larger.
        let _ = submit_any(cluster, &all, Command::Delete { key: format!("{SLOW_PREFIX}{i}") }, Duration::from_secs(2)).await;
    }
    let rate = mib(RATE as usize);
    let names: Vec<&str> = down.iter().map(|d| cluster.names()[*d].as_str()).collect();
    let finding = (failed > 0).then(|| {
        format!(
            "{failed} of {written} values of {} did not commit within {:.1} s with {name}'s links at {rate}/s and {names:?} down \
             (the link carries one in {:.2} s): {why}",
            mib(chunk),
            within.as_secs_f64(),
            chunk as f64 / RATE as f64
        )
    });
    Ok(Injected {
        detail: format!("{name}'s links at {rate}/s, {names:?} down, {written} values of {}", mib(chunk)),
        effective: true,
        finding,
    })
}
