//! Distribution benches: two nodes in this process, connected over
//! loopback TCP through the cluster's real transport (handshake, frames,
//! per-peer queues), and the cost of carrying a context on a local send.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use foundation::context::{Context, with_global_context};
use foundation::{Ctx, SpawnOpts};
use foundation_cluster::secret::ClusterSecret;
use foundation_cluster::{Cluster, ClusterConfig};
use tokio::sync::oneshot;

use super::{Bench, Harness, Sizes, in_root, ns_per};

const B_SCHED: usize = 1;

pub fn benches() -> Vec<Bench> {
    vec![
        Bench { name: "remote.one_way", unit: "msg/s", target: ">= 2M (OTP 25: 154k)", run: one_way, warmup: true },
        Bench { name: "remote.rpc_rtt_p50", unit: "µs", target: "<= 30 (OTP 25: 96)", run: rpc_rtt_p50, warmup: true },
        Bench { name: "remote.echo_1mib", unit: "MB/s", target: ">= 2000 (OTP 25: 871)", run: echo_1mib, warmup: true },
        Bench { name: "remote.tcp_echo_1mib", unit: "MB/s", target: "- (the kernel alone)", run: tcp_echo_1mib, warmup: true },
        Bench { name: "remote.mac_1mib", unit: "MB/s", target: "- (one core)", run: mac_1mib, warmup: true },
        Bench { name: "context.hop_overhead", unit: "ns", target: "<= 50", run: hop_overhead, warmup: true },
    ]
}

/// Two connected nodes, `a` and `b`, each started on its own scheduler
/// (its listener, connections and processes stay there), so the sending
/// and the receiving side run on different cores.
async fn pair(h: &Harness) -> anyhow::Result<(Cluster, Cluster)> {
    let secret = ClusterSecret::new("foundation-bench-secret-0123456789", "bench").context("bench secret")?;
    let (node_a, node_b) = (h.named_node("a"), h.named_node("b"));
    let s = secret.clone();
    let b = h
        .on_scheduler(B_SCHED, async move { Cluster::start(node_b, ClusterConfig::new("b", "127.0.0.1:0", s)).await })
        .await?
        .context("starting node b")?;
    let b_addr = b.addr().to_owned();
    let a = h
        .on_scheduler(0, async move {
            let a = Cluster::start(node_a, ClusterConfig::new("a", "127.0.0.1:0", secret)).await?;
            a.connect(&b_addr).await?;
            Ok::<_, foundation_cluster::ClusterError>(a)
        })
        .await?
        .context("starting node a and connecting it to b")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.peers().is_empty() {
        if Instant::now() > deadline {
            bail!("b never saw a connect");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((a, b))
}

async fn stop(a: Cluster, b: Cluster) {
    for c in [a, b] {
        c.shutdown();
        c.node().shutdown(Duration::from_secs(10)).await;
    }
}

/// Spawns `body` on `at`, on scheduler `index`.
fn spawn_at<M: foundation::Message, F, Fut>(h: &Harness, at: &Cluster, index: usize, body: F) -> anyhow::Result<foundation::Addr<M>>
where
    F: FnOnce(Ctx<M>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    at.node().spawn_with(SpawnOpts { scheduler: h.placement(index), ..SpawnOpts::default() }, body).context("spawning a bench process")
}

/// Messages per second: `n` u64 messages from a process on `a` to one on `b`.
fn one_way(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let n = sizes.pick(1_000_000, 100_000);
    h.driver.block_on(async {
        let (a, b) = pair(h).await?;
        b.register_message::<u64>();
        let (done_tx, done_rx) = oneshot::channel::<(Instant, u64)>();
        let receiver = spawn_at(h, &b, B_SCHED, move |mut ctx: Ctx<u64>| async move {
            let mut sum = 0u64;
            for _ in 0..n {
                sum = sum.wrapping_add(ctx.recv().await);
            }
            let _ = done_tx.send((Instant::now(), sum));
        })?;
        let to = receiver.pid();
        let sender = a.clone();
        let (start_tx, start_rx) = oneshot::channel::<Option<Instant>>();
        spawn_at(h, &a, 0, move |_ctx: Ctx<()>| async move {
            let start = Instant::now();
            for i in 0..n as u64 {
                if sender.send_wait(to, i).await.is_err() {
                    let _ = start_tx.send(None);
                    return;
                }
            }
            let _ = start_tx.send(Some(start));
        })?;
        let start = start_rx.await.ok().flatten().context("a remote send failed")?;
        let (end, sum) = done_rx.await.context("the receiver ended early")?;
        if sum != (n as u64) * (n as u64 - 1) / 2 {
            bail!("messages lost or corrupted: sum {sum}");
        }
        stop(a, b).await;
        Ok(n as f64 / (end - start).as_secs_f64())
    })
}

/// Runs `calls` on a process of `a` (scheduler 0) and returns its result.
async fn caller<T: Send + 'static, Fut>(h: &Harness, a: &Cluster, calls: impl FnOnce(Cluster) -> Fut) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = Option<T>> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let work = calls(a.clone());
    spawn_at(h, a, 0, move |_ctx: Ctx<()>| async move {
        let _ = tx.send(work.await);
    })?;
    rx.await.ok().flatten().context("a call failed")
}

/// Median microseconds of a sequential RPC round trip (a u64 echoed).
fn rpc_rtt_p50(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let n = sizes.pick(20_000, 2_000);
    h.driver.block_on(async {
        let (a, b) = pair(h).await?;
        b.register_rpc("echo", |x: u64| async move { x });
        let mut rtts = caller(h, &a, move |a| async move {
            let mut rtts = Vec::with_capacity(n);
            for i in 0..n as u64 {
                let t = Instant::now();
                let back = a.rpc::<u64, u64>("b", "echo", i, Duration::from_secs(5)).await.ok()?;
                rtts.push(t.elapsed());
                if back != i {
                    return None;
                }
            }
            Some(rtts)
        })
        .await?;
        stop(a, b).await;
        rtts.sort_unstable();
        Ok(rtts[rtts.len() / 2].as_secs_f64() * 1e6)
    })
}

/// MB/s each way: 1 MiB requests echoed back, one call after another.
fn echo_1mib(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let n = sizes.pick(400, 40);
    h.driver.block_on(async {
        let (a, b) = pair(h).await?;
        b.register_rpc("echo", |x: Bytes| async move { x });
        let payload = Bytes::from(vec![7u8; 1 << 20]);
        let elapsed = caller(h, &a, move |a| async move {
            let start = Instant::now();
            for _ in 0..n {
                let back = a.rpc::<Bytes, Bytes>("b", "echo", payload.clone(), Duration::from_secs(10)).await.ok()?;
                if back.len() != payload.len() || back[back.len() - 1] != 7 {
                    return None;
                }
            }
            Some(start.elapsed())
        })
        .await?;
        stop(a, b).await;
        Ok((n * (1 << 20)) as f64 / elapsed.as_secs_f64() / 1e6)
    })
}

/// `echo_1mib` without Foundation: the same sequential 1 MiB echo over
/// loopback TCP between two threads with blocking std sockets (no-delay,
/// the kernel's default buffers), no frames, no MAC, no runtime. What the
/// kernel's copies through loopback allow on this machine, for reading
/// `echo_1mib` beside.
fn tcp_echo_1mib(sizes: &Sizes, _h: &Harness) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    const MIB: usize = 1 << 20;
    let n = sizes.pick(400, 40);
    // Plain sockets and a thread: this row measures the bare kernel, outside any node or simulation.
    #[allow(clippy::disallowed_methods)]
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let addr = listener.local_addr()?;
    #[allow(clippy::disallowed_methods)]
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; MIB];
        for _ in 0..n {
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
        }
        Ok(())
    });
    #[allow(clippy::disallowed_methods)]
    let mut c = std::net::TcpStream::connect(addr).context("connecting over loopback")?;
    c.set_nodelay(true)?;
    let payload = vec![7u8; MIB];
    let mut back = vec![0u8; MIB];
    let start = Instant::now();
    for _ in 0..n {
        c.write_all(&payload)?;
        c.read_exact(&mut back)?;
    }
    let elapsed = start.elapsed();
    echo.join().map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    if back != payload {
        bail!("the echo came back different");
    }
    Ok((n * MIB) as f64 / elapsed.as_secs_f64() / 1e6)
}

/// The record MAC over 1 MiB records, on one core, with the engine this
/// CPU picks (named in the bench's first line, on stderr): each byte of
/// an echo is hashed four times (written and read, each way).
fn mac_1mib(sizes: &Sizes, _h: &Harness) -> anyhow::Result<f64> {
    let n = sizes.pick(2_000, 200);
    let key = foundation_cluster::mac::MacKey::new(&[5; 32]);
    let record = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut fold = 0u8;
    for seq in 0..n as u64 {
        let mut mac = key.start();
        mac.update(std::hint::black_box(&record));
        fold ^= mac.finish(seq)[0];
    }
    let elapsed = start.elapsed();
    std::hint::black_box(fold);
    Ok((n * (1 << 20)) as f64 / elapsed.as_secs_f64() / 1e6)
}

/// Nanoseconds a context adds to a local send (and its receive): a process
/// sends to itself and receives, `n` times without a context and `n` times
/// inside one; best of three rounds each.
fn hop_overhead(sizes: &Sizes, h: &Harness) -> anyhow::Result<f64> {
    let n = sizes.pick(2_000_000, 200_000);
    h.driver.block_on(async {
        let node = h.node();
        let context = Context::generate(node.rt()).with_user_id("bench").context("context")?;
        let (plain, carried) = in_root(&node, move |root: Ctx<()>| async move {
            let (tx, rx) = oneshot::channel();
            root.node().spawn(move |mut ctx: Ctx<u64>| async move {
                let me = ctx.addr();
                let round = |ctx: &mut Ctx<u64>| {
                    let start = Instant::now();
                    let mut sum = 0u64;
                    for i in 0..n as u64 {
                        if me.try_send(i).is_err() {
                            return None;
                        }
                        sum = sum.wrapping_add(ctx.try_recv()?);
                    }
                    std::hint::black_box(sum);
                    Some(start.elapsed())
                };
                let mut best = (Duration::MAX, Duration::MAX);
                for _ in 0..3 {
                    let Some(plain) = round(&mut ctx) else { return };
                    best.0 = best.0.min(plain);
                    let Some(carried) = with_global_context(context.clone(), async { round(&mut ctx) }).await else { return };
                    best.1 = best.1.min(carried);
                    // Out of the context again for the next plain round.
                    let _ = me.try_send(0);
                    let _ = ctx.try_recv();
                }
                let _ = tx.send(best);
            });
            rx.await.ok()
        })
        .await?
        .context("the sender ended early")?;
        node.shutdown(Duration::from_secs(10)).await;
        // A cost cannot be negative: a difference below zero is the noise
        // of two nearly equal figures, reported as 0.
        Ok((ns_per(carried, n) - ns_per(plain, n)).max(0.0))
    })
}
