//! The report directory: `report.html` (the figures, the timeline inline,
//! the fault table), `timeline.svg` (the same plot on its own, see
//! [`super::timeline`]) and `history.jsonl` (the KV history in JSON Lines,
//! for `foundation check`).

use std::fmt::Write as _;
use std::path::Path;

use foundation_testkit::scenario::ChaosOutcome;

use super::{Report, counts, progress, timeline};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
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
    rows += &row("operations", counts::line(&r.operations));
    rows += &row("checked", format!("{} operations that may have taken effect (ok and unknown, services' included)", r.operations.checked));
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
    rows += &row("replay", format!("{}  ({})", r.replay, progress::replay_note(r.backend == "sim")));
    let mut faults = String::new();
    for inj in &o.chaos.injections {
        let at = inj.at_us.saturating_sub(o.workload_start_us) as f64 / 1e6;
        let _ = writeln!(
            faults,
            r#"<tr><td>{at:.3}</td><td>{:.3}</td><td><span style="color:{}">&#9632;</span> {}</td><td>{}</td><td>{}</td></tr>"#,
            inj.held_us as f64 / 1e6,
            timeline::colour(inj.nemesis),
            inj.nemesis,
            escape(&inj.detail),
            if inj.effective { "yes" } else { "none (not counted)" }
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
<p>Successful operations per second (blue, left axis) and their p99 latency (red, right axis), for each whole second of the workload;
shaded: fault intervals, one row per nemesis below the time axis.</p>
{svg}<h2>Faults</h2>
<p>Times in seconds since the workload started.</p>
<table><tr><th>at (s)</th><th>held (s)</th><th>nemesis</th><th>detail</th><th>effect</th></tr>
{faults}</table>
<p>The KV history is <code>history.jsonl</code>: <code>foundation check history.jsonl</code> checks it again.</p>
</body></html>
"#,
        seed = r.seed,
        svg = timeline::svg(r.duration_s, o),
        verdict = if r.passed { "PASS" } else { "FAIL" },
    )
}

/// Writes the three files.
pub fn write(dir: &Path, r: &Report, o: &ChaosOutcome) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("timeline.svg"), timeline::svg(r.duration_s, o))?;
    std::fs::write(dir.join("history.jsonl"), o.workload.history.to_jsonl())?;
    std::fs::write(dir.join("report.html"), html(r, o))
}
