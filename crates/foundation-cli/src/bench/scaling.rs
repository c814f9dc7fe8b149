//! `foundation bench --scaling DIR`: how cost grows. Four curves, each
//! point the median of `--runs` runs on a fresh node or group, printed as a
//! table and written to `DIR` as SVG plots (and `scaling.json`):
//!
//! - `spawn.svg`: time per spawn of an idle process from one root process,
//!   against how many it spawns (10³ to 10⁶; `--quick`: to 10⁵);
//! - `messages.svg`: messages a second, all pairs together, against the
//!   number of sender → receiver pairs (1 to 256), a fixed total of messages
//!   split between them; each pair spawned by the root, where the node
//!   places it;
//! - `commits_by_clients.svg`: durable commits a second on a 3-node group
//!   against closed-loop clients (1, 16, 64, 256): `consensus.commits` is
//!   the 64-client point;
//! - `commits_by_nodes.svg`: the same with 64 clients on 3, 5 and 7 nodes.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use foundation::Ctx;
use foundation_cluster::consensus::ConsensusConfig;
use serde::Serialize;

use super::consensus::{group_of, load_by};
use super::process::{sink, spawn_many};
use super::{Harness, Sizes, in_root, median};

/// One curve: what varies, what is measured, and the points.
#[derive(Serialize)]
struct Curve {
    file: &'static str,
    title: &'static str,
    x: &'static str,
    y: &'static str,
    points: Vec<(u64, f64)>,
}

/// Measures the four curves; prints them and writes their plots to `dir`.
pub fn run(sizes: &Sizes, runs: u32, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let spawn_counts: &[u64] = if sizes.quick { &[1_000, 10_000, 100_000] } else { &[1_000, 10_000, 100_000, 1_000_000] };
    let curves = [
        curve(sizes, runs, "spawn.svg", "Spawn cost against processes", "processes spawned", "ns per spawn", spawn_counts, spawn_point)?,
        curve(
            sizes,
            runs,
            "messages.svg",
            "Message throughput against pairs",
            "sender → receiver pairs",
            "messages/s",
            &[1, 2, 4, 16, 64, 256],
            pairs_point,
        )?,
        curve(
            sizes,
            runs,
            "commits_by_clients.svg",
            "Durable commits against clients (3 nodes)",
            "closed-loop clients",
            "commits/s",
            &[1, 16, 64, 256],
            clients_point,
        )?,
        curve(
            sizes,
            runs,
            "commits_by_nodes.svg",
            "Durable commits against group size (64 clients)",
            "nodes",
            "commits/s",
            &[3, 5, 7],
            nodes_point,
        )?,
    ];
    for c in &curves {
        std::fs::write(dir.join(c.file), plot(c)).with_context(|| format!("writing {}", c.file))?;
    }
    std::fs::write(dir.join("scaling.json"), serde_json::to_string_pretty(&curves)?).context("writing scaling.json")?;
    eprintln!("plots written to {}", dir.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn curve(
    sizes: &Sizes,
    runs: u32,
    file: &'static str,
    title: &'static str,
    x: &'static str,
    y: &'static str,
    xs: &[u64],
    point: fn(&Sizes, &Harness, u64) -> anyhow::Result<f64>,
) -> anyhow::Result<Curve> {
    let mut points = Vec::new();
    for &at in xs {
        let harness = Harness::new(sizes)?;
        let mut values = Vec::new();
        for _ in 0..runs {
            values.push(point(sizes, &harness, at).with_context(|| format!("{file} at {at}"))?);
        }
        let value = median(&mut values);
        println!("{:<28} {:>10} {:>14} {y}", file.trim_end_matches(".svg"), at, super::format_value(value));
        points.push((at, value));
    }
    Ok(Curve { file, title, x, y, points })
}

fn spawn_point(_sizes: &Sizes, h: &Harness, n: u64) -> anyhow::Result<f64> {
    let n = n as usize;
    h.driver.block_on(async {
        let node = h.node();
        let elapsed = spawn_many(&node, n).await?;
        ensure!(node.live_processes() == n, "expected {n} live processes, found {}", node.live_processes());
        let left = node.shutdown(Duration::from_secs(60)).await;
        ensure!(left == 0, "{left} processes outlived shutdown");
        Ok(super::ns_per(elapsed, n))
    })
}

/// `pairs` senders each send their share of a fixed total to their own
/// receiver; all pairs' messages over the time from the first send to the
/// last receive.
fn pairs_point(sizes: &Sizes, h: &Harness, pairs: u64) -> anyhow::Result<f64> {
    let total = sizes.pick(4_000_000, 400_000) as u64;
    let each = total / pairs;
    h.driver.block_on(async {
        let node = h.node();
        let elapsed = in_root(&node, move |ctx: Ctx<()>| async move {
            let mut done = Vec::new();
            let mut receivers = Vec::new();
            for _ in 0..pairs {
                let (receiver, rx) = sink(ctx.node(), each);
                receivers.push(receiver);
                done.push(rx);
            }
            let start = Instant::now();
            for receiver in receivers {
                ctx.node().spawn(move |_ctx: Ctx<()>| async move {
                    for i in 0..each {
                        if receiver.send(i).await.is_err() {
                            return;
                        }
                    }
                });
            }
            let mut end = start;
            for rx in done {
                end = end.max(rx.await.ok()?);
            }
            Some(end - start)
        })
        .await?
        .context("a sender or receiver ended early")?;
        node.shutdown(Duration::from_secs(10)).await;
        Ok((each * pairs) as f64 / elapsed.as_secs_f64())
    })
}

fn commits(sizes: &Sizes, h: &Harness, nodes: u64, clients: usize) -> anyhow::Result<f64> {
    // Enough writes for a few seconds at any client count.
    let ops = sizes.pick(4_000.max(clients * 250), 400.max(clients * 25));
    h.driver.block_on(async {
        let g = group_of(h, nodes, ConsensusConfig::new).await?;
        let (elapsed, latencies) = load_by(h, &g, ops, clients).await?;
        g.stop().await;
        Ok(latencies.len() as f64 / elapsed.as_secs_f64())
    })
}

fn clients_point(sizes: &Sizes, h: &Harness, clients: u64) -> anyhow::Result<f64> {
    commits(sizes, h, 3, clients as usize)
}

fn nodes_point(sizes: &Sizes, h: &Harness, nodes: u64) -> anyhow::Result<f64> {
    commits(sizes, h, nodes, 64)
}

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// A line plot of a curve: its points evenly spaced along x (the x values
/// grow by factors, so this reads as a log scale), y from 0 with round
/// ticks, each point labelled with its value.
fn plot(c: &Curve) -> String {
    let ticks = crate::chaos::timeline::ticks(c.points.iter().map(|p| p.1).fold(0.0, f64::max), 5.0);
    let top = ticks.last().copied().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let n = c.points.len().max(2) - 1;
    let x = |i: usize| LEFT + pw * (i as f64 / n as f64);
    let y = |v: f64| TOP + ph - v / top * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11"><rect width="{W}" height="{H}" fill="white"/>"#
    );
    let _ = write!(s, r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#, W / 2.0, c.title);
    for t in &ticks {
        let label = if *t == 0.0 { "0".to_owned() } else { super::format_value(*t) };
        let (right, at, label_x, label_y) = (W - RIGHT, y(*t), LEFT - 6.0, y(*t) + 4.0);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{right:.1}" y1="{at:.1}" y2="{at:.1}" stroke="#dddddd"/><text x="{label_x:.1}" y="{label_y:.1}" text-anchor="end">{label}</text>"##
        );
    }
    let _ = write!(s, r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#);
    let line: Vec<String> = c.points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.1))).collect();
    let _ = write!(s, r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##, line.join(" "));
    for (i, (at, v)) in c.points.iter().enumerate() {
        let (cx, cy, value_y, value, at_y) = (x(i), y(*v), y(*v) - 8.0, super::format_value(*v), TOP + ph + 16.0);
        let _ = write!(
            s,
            r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="3.5" fill="#1f77b4"/><text x="{cx:.1}" y="{value_y:.1}" text-anchor="middle">{value}</text><text x="{cx:.1}" y="{at_y:.1}" text-anchor="middle">{at}</text>"##
        );
    }
    let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, LEFT + pw / 2.0, H - 18.0, c.x);
    let _ = write!(
        s,
        r#"<text x="18" y="{0:.1}" text-anchor="middle" transform="rotate(-90 18 {0:.1})">{1}</text></svg>"#,
        TOP + ph / 2.0,
        c.y
    );
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_is_an_svg_with_every_point() {
        let c = Curve { file: "x.svg", title: "T", x: "n", y: "v", points: vec![(1, 10.0), (16, 30.0), (256, 25.5)] };
        let svg = plot(&c);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 3);
        for label in [">1<", ">16<", ">256<", ">30.0<", ">25.5<"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
    }
}
