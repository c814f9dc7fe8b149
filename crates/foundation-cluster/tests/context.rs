//! Seed 3.3, for real across three nodes: a context set on node1 reaches a
//! handler on node2, and survives node1 → node2 → node3 → node1 with its hop
//! counter reaching 4. Also: a remote message carries its sender's context.

use foundation::context::{self, Context, with_global_context};
use foundation_cluster::Cluster;

mod common;
use common::{WAIT, mesh_of, mesh_of_three};

/// `current()` as W3C headers, or `None` (the seed's `{:error, :no_context}`).
fn extract_context_on_remote_node() -> Option<Vec<(String, String)>> {
    context::current().map(|c| c.to_headers().to_vec())
}

/// The seed's `context_hop`: bump the hop counter, then call the next node
/// on the route, or return the context when the route is done. (The seed's
/// own code returns at node3 with hop 3; its comment and assertion — back to
/// node1, hop 4 — are what is built here: node1 is the last hop.)
fn install_context_hop(cluster: &Cluster) {
    let me = cluster.downgrade();
    cluster.register_rpc("context_hop", move |route: Vec<String>| {
        let me = me.upgrade().expect("the cluster serving this call exists");
        async move {
            let current = context::current().expect("a context arrived with the call");
            let hop: u32 = current.get("hop").and_then(|h| h.parse().ok()).expect("a hop counter");
            let updated = current.with("hop", (hop + 1).to_string()).expect("valid");
            with_global_context(updated, async move {
                match route.split_first() {
                    None => extract_context_on_remote_node(),
                    Some((next, rest)) => {
                        me.rpc::<_, Option<Vec<(String, String)>>>(next, "context_hop", rest.to_vec(), WAIT).await.expect("next hop")
                    }
                }
            })
            .await
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_propagates_across_node_boundaries() {
    let (node1, node2, _node3) = mesh_of(["node1", "node2", "node3"]).await;
    node2.register_rpc("extract_context_on_remote_node", |(): ()| async { extract_context_on_remote_node() });
    let trace = Context::generate(node1.node().rt());
    let ctx = trace.with_user_id("test_user_123").unwrap();
    let result = with_global_context(
        ctx.clone(),
        node1.rpc::<(), Option<Vec<(String, String)>>>("node2", "extract_context_on_remote_node", (), WAIT),
    )
    .await
    .expect("rpc");
    let remote = Context::from_headers(&result.expect("{:ok, remote_context}")).expect("valid headers");
    assert_eq!(remote.trace_id(), ctx.trace_id());
    assert_eq!(remote.user_id(), Some("test_user_123"));
    // Without a context, the remote side sees none.
    let none = node1.rpc::<(), Option<Vec<(String, String)>>>("node2", "extract_context_on_remote_node", (), WAIT).await.expect("rpc");
    assert_eq!(none, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_survives_multiple_hops() {
    let (node1, node2, node3) = mesh_of(["node1", "node2", "node3"]).await;
    for n in [&node1, &node2, &node3] {
        install_context_hop(n);
    }
    let ctx = Context::generate(node1.node().rt()).with("hop", "1").unwrap();
    // node1 -> node2 -> node3 -> back to node1
    let call = node1.rpc::<_, Option<Vec<(String, String)>>>("node2", "context_hop", vec!["node3".to_string(), "node1".to_string()], WAIT);
    let result = with_global_context(ctx.clone(), call).await.expect("rpc");
    let final_context = Context::from_headers(&result.expect("a context at the last hop")).expect("valid");
    assert_eq!(final_context.trace_id(), ctx.trace_id());
    assert_eq!(final_context.get("hop"), Some("4"), "incremented through the hops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_message_carries_the_senders_context() {
    let (a, b, _c) = mesh_of_three().await;
    b.register_message::<u64>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = b.node().spawn(move |mut ctx: foundation::Ctx<u64>| async move {
        loop {
            let n = ctx.recv().await;
            let _ = tx.send((n, context::current().map(|c| (c.trace_id(), c.user_id().map(str::to_owned)))));
        }
    });
    let trace = Context::new(0xabc).with_user_id("u1").unwrap();
    with_global_context(trace.clone(), a.send_wait(sink.pid(), 1u64)).await.expect("sent");
    a.send_wait(sink.pid(), 2u64).await.expect("sent");
    let first = tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("open");
    assert_eq!(first, (1, Some((trace.trace_id(), Some("u1".to_string())))));
    let second = tokio::time::timeout(WAIT, rx.recv()).await.expect("in time").expect("open");
    assert_eq!(second, (2, None), "the next message, sent without a context, has none");
}
