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
    let old_call = tokio::spawn(async move { old.rpc::<u32, u32>("b", "hold", 1, Duration::from_secs(30)).await });
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
    let new_call = tokio::spawn(async move { new.rpc::<u32, u32>("b", "hold", u32::MAX, Duration::from_secs(2)).await });
    until("b runs the new call", || started.load(std::sync::atomic::Ordering::SeqCst) == 2).await;
    // The old call's handler answers now; its reply must not complete the new call.
    release.send_replace(1);
    let new_result = new_call.await.expect("the new call ends");
    assert!(matches!(new_result, Err(RpcError::Timeout { .. })), "the new call got {new_result:?}, not its own reply");
    // Calls of the new incarnation work.
    assert_eq!(a2.rpc::<u32, u32>("b", "hold", 0, Duration::from_secs(5)).await, Ok(0));
    release.send_replace(u32::MAX);
}
