//! The report directory: `report.html`, `timeline.svg` (throughput and p99
//! latency per second, fault intervals shaded, as Jepsen plots them) and
//! `history.json` (the KV history, for `foundation check`).

use std::fmt::Write as _;
use std::path::Path;

use foundation_testkit::chaos::Nemesis;
use foundation_testkit::scenario::ChaosOutcome;

use super::{Report, timeline};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 70.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn colour(n: Nemesis) -> &'static str {
    match n {
        Nemesis::KillProcess => "#e6194b",
        Nemesis::Partition => "#4363d8",
        Nemesis::MemoryPressure => "#f58231",
        Nemesis::CpuSpike => "#911eb4",
        Nemesis::MessageFlood => "#42d4f4",
        Nemesis::CrashRestart => "#f032e6",
        Nemesis::MajoritiesRing => "#3cb44b",
        Nemesis::Bridge => "#9a6324",
        Nemesis::SwizzleClog => "#808000",
        Nemesis::OnewayPartition => "#000075",
        Nemesis::LinkFaults => "#469990",
        Nemesis::ClockSkew => "#ffe119",
        Nemesis::BigState => "#800000",
        Nemesis::SlowConsumer => "#aaffc3",
        Nemesis::RestartStorm => "#dcbeff",
    }
}

/// The timeline as an SVG document.
pub fn svg(report: &Report, o: &ChaosOutcome) -> String {
    let points = timeline(o);
    let span_s = (report.duration_s as f64).max(points.last().map_or(1.0, |p| p.0 as f64 + 1.0));
    let max_ops = points.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64;
    let max_lat = points.iter().map(|p| p.2).fold(1.0f64, f64::max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |sec: f64| LEFT + sec / span_s * plot_w;
    let y_ops = |v: f64| TOP + plot_h - v / max_ops * plot_h;
    let y_lat = |v: f64| TOP + plot_h - v / max_lat * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(s, r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    // Fault intervals, shaded, one colour per nemesis.
    for inj in &o.chaos.injections {
        let start = inj.at_us.saturating_sub(o.workload_start_us) as f64 / 1e6;
        let held = (inj.held_us as f64 / 1e6).max(0.05);
        let (x0, x1) = (x(start.min(span_s)), x((start + held).min(span_s)));
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="{}" fill-opacity="0.18"><title>{}: {}</title></rect>"#,
            (x1 - x0).max(1.0),
            colour(inj.nemesis),
            inj.nemesis,
            escape(&inj.detail)
        );
    }
    // Axes.
    let _ = write!(s, r#"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, TOP + plot_h, LEFT + plot_w, TOP + plot_h);
    let _ = write!(s, r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>"#, TOP + plot_h);
    let _ = write!(s, r#"<line x1="{0}" y1="{TOP}" x2="{0}" y2="{1}" stroke="black"/>"#, LEFT + plot_w, TOP + plot_h);
    let step = (span_s / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= span_s {
        let _ = write!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle">{t}</text>"#, x(t), TOP + plot_h + 14.0);
        t += step;
    }
    let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">time (s)</text>"#, LEFT + plot_w / 2.0, TOP + plot_h + 30.0);
    let _ = write!(s, r##"<text x="{LEFT}" y="{}" fill="#1f77b4">ok ops/s (max {max_ops:.0})</text>"##, TOP - 10.0);
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" fill="#d62728" text-anchor="end">p99 latency ms (max {max_lat:.1})</text>"##,
        LEFT + plot_w,
        TOP - 10.0
    );
    // Throughput and latency lines.
    let line = |pts: Vec<(f64, f64)>, colour: &str| {
        let d: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        format!(r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#, d.join(" "))
    };
    s.push_str(&line(points.iter().map(|p| (x(p.0 as f64 + 0.5), y_ops(p.1 as f64))).collect(), "#1f77b4"));
    s.push_str(&line(points.iter().map(|p| (x(p.0 as f64 + 0.5), y_lat(p.2))).collect(), "#d62728"));
    // Legend of the nemeses that ran.
    let mut lx = LEFT;
    for (kind, _) in o.chaos.by_kind() {
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{}" width="10" height="10" fill="{}" fill-opacity="0.5"/><text x="{:.1}" y="{}">{kind}</text>"#,
            HEIGHT - 22.0,
            colour(kind),
            lx + 14.0,
            HEIGHT - 13.0
        );
        lx += 14.0 + 7.0 * kind.name().len() as f64 + 16.0;
    }
    s.push_str("</svg>\n");
    s
}

/// The HTML page.
pub fn html(r: &Report, o: &ChaosOutcome) -> String {
    let row = |k: &str, v: String| format!("<tr><th>{}</th><td>{}</td></tr>\n", escape(k), escape(&v));
    let mut rows = String::new();
    rows += &row("verdict", if r.passed { "PASS".into() } else { "FAIL".into() });
    rows += &row("seed", r.seed.to_string());
    rows += &row("backend", r.backend.clone());
    rows += &row("nodes", r.nodes.to_string());
    rows += &row("duration", format!("{} s", r.duration_s));
    rows += &row(
        "operations",
        format!(
            "{} ok / {} failed / {} unknown ({} total)",
            r.operations.ok, r.operations.failed, r.operations.unknown, r.operations.total
        ),
    );
    rows += &row("success rate", format!("{:.3} KV, {:.3} messages (check: > 0.8)", r.success_rate, r.message_success_rate));
    rows += &row(
        "faults injected",
        format!(
            "{} ({})",
            r.faults_injected.values().sum::<usize>(),
            r.faults_injected.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        ),
    );
    rows += &row("latency", format!("p50 {:.2} ms, p99 {:.2} ms", r.latency_ms.p50, r.latency_ms.p99));
    rows += &row("linearizable", r.violation.clone().map_or("yes".into(), |v| format!("NO: {v}")));
    rows += &row(
        "convergence",
        r.convergence_ms.map_or_else(|| r.convergence_error.clone().unwrap_or_default(), |c| format!("{c:.1} ms after the heal")),
    );
    rows += &row("replay", r.replay.clone());
    let mut faults = String::new();
    for inj in &o.chaos.injections {
        let at = inj.at_us.saturating_sub(o.workload_start_us) as f64 / 1e6;
        let _ = writeln!(
            faults,
            "<tr><td>{at:.3}</td><td>{:.3}</td><td>{}</td><td>{}</td></tr>",
            inj.held_us as f64 / 1e6,
            inj.nemesis,
            escape(&inj.detail)
        );
    }
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>foundation chaos, seed {seed}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style>
</head><body>
<h1>foundation chaos: {verdict}</h1>
<table>
{rows}</table>
<h2>Timeline</h2>
<p>Successful operations per second (blue) and their p99 latency (red); shaded: fault intervals.</p>
<img src="timeline.svg" alt="timeline">
<h2>Faults</h2>
<table><tr><th>at (s)</th><th>held (s)</th><th>nemesis</th><th>detail</th></tr>
{faults}</table>
<p>The KV history is <code>history.json</code>: <code>foundation check history.json</code> checks it again.</p>
</body></html>
"#,
        seed = r.seed,
        verdict = if r.passed { "PASS" } else { "FAIL" },
    )
}

/// Writes the three files.
pub fn write(dir: &Path, r: &Report, o: &ChaosOutcome) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("timeline.svg"), svg(r, o))?;
    std::fs::write(dir.join("history.json"), o.workload.history.to_jsonl())?;
    std::fs::write(dir.join("report.html"), html(r, o))
}
