//! Two nodes in one process: join, call, send. `cargo run -p foundation-cluster --example two_nodes`
use std::time::Duration;

use foundation::{Ctx, Node};
use foundation_cluster::secret::SecretSource;
use foundation_cluster::{Cluster, ClusterConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The node config, else $FOUNDATION_SECRET, else ~/.foundation.secret (created 0600).
    let source = SecretSource { configured: Some("an example secret, 32 bytes or longer".into()), file: SecretSource::default_file() };
    let secret = source.resolve()?;
    let a = Cluster::start(Node::new("a"), ClusterConfig::new("a", "127.0.0.1:0", secret.clone())).await?;
    let b = Cluster::start(Node::new("b"), ClusterConfig::new("b", "127.0.0.1:0", secret)).await?;
    b.connect(a.addr()).await?; // joins a, and through it the whole mesh

    a.register_rpc("double", |n: u64| async move { n * 2 });
    assert_eq!(b.rpc::<u64, u64>("a", "double", 21, Duration::from_secs(1)).await?, 42);

    a.register_message::<String>();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let printer = a.node().spawn(|mut ctx: Ctx<String>| async move {
        let _ = tx.send(ctx.recv().await);
    });
    b.send_wait(printer.pid(), "hello from b".to_string()).await?;
    println!("{}", rx.await?);
    Ok(())
}
