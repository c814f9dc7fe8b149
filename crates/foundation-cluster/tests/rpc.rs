//! RPC replies are bound to their call: a caller that restarts while a slow
//! call is in flight never takes the old reply for a new call.

use std::time::Duration;

use foundation_cluster::RpcError;

mod common;
use common::{eventually_peers, start, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_call_of_a_restarted_caller_never_completes_a_new_call() {
    let (a, b) = (start("a").await, start("b").await);
    assert_eq!(a.connect(b.addr()).await.expect("joins"), "b");
    eventually_peers(&a, &["b"]).await;
    // `hold(n)` answers n once the release has reached n.
    let (release, released) = tokio::sync::watch::channel(0u32);
    let started = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = started.clone();
    b.register_rpc("hold", move |n: u32| {
        let mut released = released.clone();
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let _ = released.wait_for(|r| *r >= n).await;
            n
        }
    });
    // The first incarnation of `a` starts a slow call, and goes.
    let old = a.clone();
    let old_call = foundation::rt::spawn(async move { old.rpc::<u32, u32>("b", "hold", 1, Duration::from_secs(30)).await });
    until("b runs the old call", || started.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
    a.shutdown();
    drop(a);
    let old_result = old_call.await.expect("the old call ends");
    assert!(matches!(old_result, Err(RpcError::Lost { .. } | RpcError::NoConnection { .. })), "{old_result:?}");
    eventually_peers(&b, &[]).await;
    // A new `a` calls something that is not released.
    let a2 = start("a").await;
    assert_eq!(a2.connect(b.addr()).await.expect("joins again"), "b");
    eventually_peers(&b, &["a"]).await;
    let new = a2.clone();
    let new_call = foundation::rt::spawn(async move { new.rpc::<u32, u32>("b", "hold", u32::MAX, Duration::from_secs(2)).await });
    until("b runs the new call", || started.load(std::sync::atomic::Ordering::SeqCst) == 2).await;
    // The old call's handler answers now; its reply must not complete the new call.
    release.send_replace(1);
    let new_result = new_call.await.expect("the new call ends");
    assert!(matches!(new_result, Err(RpcError::Timeout { .. })), "the new call got {new_result:?}, not its own reply");
    // Calls of the new incarnation work.
    assert_eq!(a2.rpc::<u32, u32>("b", "hold", 0, Duration::from_secs(5)).await, Ok(0));
    release.send_replace(u32::MAX);
}

/// A flood of calls past [`RPC_SERVING_MAX`]: the excess is refused `Busy`
/// at once (admitted or refused as its frame is read), and the node serves
/// again once its handlers finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_flood_past_the_serving_limit_is_refused_busy_and_the_node_keeps_serving() {
    use foundation_cluster::rpc::RPC_SERVING_MAX;
    let (a, b) = (start("a").await, start("b").await);
    assert_eq!(a.connect(b.addr()).await.expect("joins"), "b");
    eventually_peers(&a, &["b"]).await;
    let (release, released) = tokio::sync::watch::channel(false);
    let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = running.clone();
    b.register_rpc("block", move |(): ()| {
        let mut released = released.clone();
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let _ = released.wait_for(|r| *r).await;
        }
    });
    b.register_rpc("echo", |n: u64| async move { n });
    let extra = 100;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..RPC_SERVING_MAX + extra {
        let a = a.clone();
        calls.spawn(async move { a.rpc::<(), ()>("b", "block", (), Duration::from_secs(60)).await });
    }
    let mut busy = 0;
    while busy < extra {
        match tokio::time::timeout(Duration::from_secs(30), calls.join_next()).await {
            Ok(Some(Ok(Err(RpcError::Busy { node })))) if node == "b" => busy += 1,
            other => panic!("only the excess ends before the release, refused Busy: {other:?}"),
        }
    }
    // A refusal can come back before every admitted handler has started.
    until("the admitted handlers run", || running.load(std::sync::atomic::Ordering::SeqCst) >= RPC_SERVING_MAX).await;
    assert_eq!(running.load(std::sync::atomic::Ordering::SeqCst), RPC_SERVING_MAX, "the handlers admitted ran");
    release.send_replace(true);
    while let Some(r) = tokio::time::timeout(Duration::from_secs(60), calls.join_next()).await.expect("the calls end") {
        assert_eq!(r.expect("a call task"), Ok(()));
    }
    assert_eq!(a.rpc::<u64, u64>("b", "echo", 9, Duration::from_secs(5)).await, Ok(9), "serving again");
}

#[test]
fn a_peer_timeout_of_u64_max_ms_or_duration_max_is_clamped() {
    use foundation_cluster::rpc::{PEER_TIMEOUT_MAX, clamp_peer_timeout};
    assert_eq!(clamp_peer_timeout(Duration::from_millis(u64::MAX)), PEER_TIMEOUT_MAX);
    assert_eq!(clamp_peer_timeout(Duration::MAX), PEER_TIMEOUT_MAX);
    assert_eq!(clamp_peer_timeout(Duration::from_millis(250)), Duration::from_millis(250));
    // What an unclamped one (a peer may send any Duration) does where a
    // handler adds it to now; the clamped one does not.
    let sum = std::panic::catch_unwind(|| std::time::Instant::now() + Duration::MAX);
    assert!(sum.is_err(), "Instant + Duration::MAX overflows");
    let _ = std::time::Instant::now() + clamp_peer_timeout(Duration::MAX);
}
