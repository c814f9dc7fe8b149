//! TLS between nodes: certificates from files, mutual authentication on top
//! of the cluster secret. Peers without TLS, or with a certificate from
//! another CA, are refused; the cluster keeps serving.

use std::path::PathBuf;
use std::time::Duration;

use foundation::Node;
use foundation_cluster::{Cluster, ClusterConfig, ClusterError, TlsConfig, TlsError};

mod common;
use common::{WAIT, eventually_peers, secret, until};

fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls").join(name)
}

fn tls(cert: &str, key: &str) -> TlsConfig {
    TlsConfig::from_files(&file(cert), &file(key), &file("ca.pem")).expect("test certificates load")
}

async fn start(name: &str, tls: Option<TlsConfig>) -> Cluster {
    let mut config = ClusterConfig::new(name, "127.0.0.1:0", secret());
    config.tick = Duration::from_millis(100);
    config.tls = tls;
    Cluster::start(Node::new(name), config).await.expect("listens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_certificates_from_the_cluster_ca_connect_and_talk() {
    let a = start("a", Some(tls("node.pem", "node.key"))).await;
    let b = start("b", Some(tls("node.pem", "node.key"))).await;
    assert_eq!(b.connect(a.addr()).await.expect("TLS, then the secret"), "a");
    eventually_peers(&a, &["b"]).await;
    a.register_rpc("twice", |n: u32| async move { n * 2 });
    assert_eq!(b.rpc::<u32, u32>("a", "twice", 21, WAIT).await, Ok(42));
    // A large payload goes through TLS intact.
    a.register_rpc("len", |v: bytes::Bytes| async move { v.len() as u64 });
    assert_eq!(b.rpc::<bytes::Bytes, u64>("a", "len", bytes::Bytes::from(vec![1u8; 3 << 20]), WAIT).await, Ok(3 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_tls_or_with_a_foreign_certificate_are_refused() {
    let a = start("a", Some(tls("node.pem", "node.key"))).await;
    let plain = start("plain", None).await;
    let err = plain.connect(a.addr()).await.expect_err("no TLS: refused");
    assert!(matches!(err, ClusterError::Handshake { .. } | ClusterError::Connect { .. }), "{err}");
    let rogue_tls = TlsConfig::from_files(&file("rogue.pem"), &file("rogue.key"), &file("rogue-ca.pem")).expect("loads");
    let rogue = start("rogue", Some(rogue_tls)).await;
    let err = rogue.connect(a.addr()).await.expect_err("foreign CA: refused");
    assert!(matches!(err, ClusterError::Tls { .. }), "{err}");
    // A TLS node dialing a plain one fails too.
    let tls_node = start("c", Some(tls("node.pem", "node.key"))).await;
    assert!(tls_node.connect(plain.addr()).await.is_err());
    // None of them joined, and a still serves a good peer.
    assert!(a.peers().is_empty());
    let good = start("good", Some(tls("node.pem", "node.key"))).await;
    good.connect(a.addr()).await.expect("a keeps serving");
    until("a sees the good peer", || a.peers() == ["good"]).await;
}

#[test]
fn missing_or_bad_files_are_clear_errors() {
    let err = TlsConfig::from_files(&file("nope.pem"), &file("node.key"), &file("ca.pem")).expect_err("missing");
    assert!(matches!(&err, TlsError::File { path, .. } if path.ends_with("nope.pem")), "{err}");
    let err = TlsConfig::from_files(&file("node.key"), &file("node.key"), &file("ca.pem")).expect_err("a key is not a certificate");
    assert!(matches!(&err, TlsError::File { path, .. } if path.ends_with("node.key")), "{err}");
    assert!(err.to_string().contains("node.key"), "{err}");
}
