//! The timeline plot (`timeline.svg`, and inline in `report.html`), as
//! Jepsen draws one: successful KV operations per second (blue, left axis)
//! and their p99 latency (red, right axis), both with ticks, gridlines from
//! the left axis, the fault intervals shaded in each nemesis's colour, and
//! below the time axis one row per nemesis with its injections.
//!
//! Only whole seconds of the workload are plotted (`0..duration`): the
//! final reads after the heal are not part of it, and a second with no
//! successful operation is a 0, not a gap.

use std::fmt::Write as _;

use foundation_testkit::chaos::Nemesis;
use foundation_testkit::scenario::ChaosOutcome;
use foundation_testkit::workload::Outcome;

const WIDTH: f64 = 900.0;
const LEFT: f64 = 120.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 30.0;
const PLOT_H: f64 = 260.0;
/// Below the plot: the time axis's labels and title.
const AXIS_H: f64 = 40.0;
/// One row per nemesis that ran.
const LANE_H: f64 = 16.0;
/// Opacity of a fault interval's shading over the plot.
const SHADE_OPACITY: f64 = 0.3;
/// Ticks on a y-axis, about.
const TICKS: f64 = 5.0;
/// Ticks on the time axis, about.
const TIME_TICKS: f64 = 10.0;
const OPS_COLOUR: &str = "#1f77b4";
const LATENCY_COLOUR: &str = "#d62728";

/// Each nemesis's colour. All twenty-one are far apart: CIEDE2000 ≥ 15 as
/// drawn in their rows, ≥ 7.5 as shaded over the plot, and ≥ 12 from the
/// two lines' colours (the tests below hold all three). The twelve of
/// today's default mix were picked first, to be furthest apart (≥ 21 and
/// ≥ 9); the five storage nemeses' last, greedily, each furthest from the
/// rest; `slow_link` last of all, the same way.
pub fn colour(n: Nemesis) -> &'static str {
    match n {
        Nemesis::KillProcess => "#800000",
        Nemesis::Partition => "#000075",
        Nemesis::MemoryPressure => "#ff7f0e",
        Nemesis::CpuSpike => "#911eb4",
        Nemesis::MessageFlood => "#42d4f4",
        Nemesis::CrashRestart => "#2b3d26",
        Nemesis::MajoritiesRing => "#008856",
        Nemesis::Bridge => "#dcd300",
        Nemesis::SwizzleClog => "#ff9da7",
        Nemesis::OnewayPartition => "#dcbeff",
        Nemesis::LinkFaults => "#c7c7c7",
        Nemesis::RestartStorm => "#98df8a",
        Nemesis::ClockSkew => "#808000",
        Nemesis::BigState => "#8c564b",
        Nemesis::SlowConsumer => "#f6a600",
        Nemesis::DiskFull => "#ff0055",
        Nemesis::DiskError => "#115599",
        Nemesis::SlowDisk => "#5577ff",
        Nemesis::LostDisk => "#220022",
        Nemesis::LostTail => "#00ffdd",
        Nemesis::SlowLink => "#ff11ff",
    }
}

/// One whole second of the workload: successful operations and their p99
/// latency in ms (`None` when there were none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Second {
    /// Seconds since the workload started.
    pub at: u64,
    /// Successful KV operations invoked in it.
    pub ok: usize,
    /// Their p99 latency (ms).
    pub p99_ms: Option<f64>,
}

/// The seconds `0..duration_s`, every one of them, from `(invoke µs,
/// latency µs)` of the successful operations.
pub fn seconds(ok_samples: impl Iterator<Item = (u64, u64)>, duration_s: u64) -> Vec<Second> {
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); duration_s as usize];
    for (at_us, latency_us) in ok_samples {
        if let Some(bucket) = latencies.get_mut((at_us / 1_000_000) as usize) {
            bucket.push(latency_us);
        }
    }
    latencies
        .into_iter()
        .enumerate()
        .map(|(at, mut l)| {
            l.sort_unstable();
            let p99_ms = (!l.is_empty()).then(|| l[((l.len() - 1) as f64 * 0.99).round() as usize] as f64 / 1e3);
            Second { at: at as u64, ok: l.len(), p99_ms }
        })
        .collect()
}

/// Ticks from 0 to at least `max`, about `about` of them, at 1, 2 or 5
/// times a power of ten.
pub fn ticks(max: f64, about: f64) -> Vec<f64> {
    let raw = max.max(1e-6) / about;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let n = (max / step).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// Both axes' ticks with as many intervals, the shorter one extended by
/// its own step, so that every gridline meets a tick on each axis.
pub fn aligned(mut left: Vec<f64>, mut right: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
    let n = left.len().max(right.len());
    for axis in [&mut left, &mut right] {
        let step = axis.get(1).copied().unwrap_or(1.0);
        while axis.len() < n {
            let next = axis.last().copied().unwrap_or(0.0) + step;
            axis.push(next);
        }
    }
    (left, right)
}

fn label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    format!("{v:.decimals$}")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A fault interval: when (s since the workload started), for how long,
/// which nemesis, what it hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    /// Start, seconds since the workload started.
    pub start_s: f64,
    /// How long it was held (s).
    pub held_s: f64,
    /// Which nemesis.
    pub nemesis: Nemesis,
    /// What it hit.
    pub detail: String,
}

impl Band {
    /// An injection's band; `workload_start_us` is the workload's start in
    /// cluster time (the injection's clock).
    pub fn of(i: &foundation_testkit::chaos::Injection, workload_start_us: u64) -> Self {
        Self {
            start_s: i.at_us.saturating_sub(workload_start_us) as f64 / 1e6,
            held_s: i.held_us as f64 / 1e6,
            nemesis: i.nemesis,
            detail: i.detail.clone(),
        }
    }
}

/// The timeline of a finished run as an SVG document.
pub fn svg(duration_s: u64, o: &ChaosOutcome) -> String {
    let ok = o.workload.samples.iter().filter(|s| s.outcome == Outcome::Ok).map(|s| (s.at_us, s.latency_us));
    let bands: Vec<Band> = o.chaos.injections.iter().filter(|i| i.effective).map(|i| Band::of(i, o.workload_start_us)).collect();
    draw(duration_s, &seconds(ok, duration_s), &bands)
}

/// The plot of `points` with the fault `bands`, over `0..duration_s`.
pub fn draw(duration_s: u64, points: &[Second], bands: &[Band]) -> String {
    let mut kinds: Vec<Nemesis> = bands.iter().map(|b| b.nemesis).collect();
    kinds.sort();
    kinds.dedup();
    let height = TOP + PLOT_H + AXIS_H + LANE_H * kinds.len() as f64 + 10.0;
    let span_s = duration_s.max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |sec: f64| LEFT + sec.clamp(0.0, span_s) / span_s * plot_w;
    let (ops_ticks, lat_ticks) = aligned(
        ticks(points.iter().map(|p| p.ok).max().unwrap_or(0) as f64, TICKS),
        ticks(points.iter().filter_map(|p| p.p99_ms).fold(0.0, f64::max), TICKS),
    );
    let (ops_top, lat_top) = (*ops_ticks.last().expect("ticks"), *lat_ticks.last().expect("ticks"));
    let y = |v: f64, top: f64| TOP + PLOT_H - v / top * PLOT_H;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(s, r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#);
    // Fault intervals over the plot.
    for inj in bands {
        let (x0, x1) = (x(inj.start_s), x(inj.start_s + inj.held_s.max(0.05)));
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{PLOT_H}" fill="{}" fill-opacity="{SHADE_OPACITY}"><title>{}: {}</title></rect>"#,
            (x1 - x0).max(1.0),
            colour(inj.nemesis),
            inj.nemesis,
            escape(&inj.detail)
        );
    }
    axes(&mut s, span_s, &ops_ticks, &lat_ticks, &x);
    // The two lines: every second for throughput, seconds with successes
    // for latency.
    let line = |class: &str, colour: &str, pts: Vec<(f64, f64)>| {
        let d: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        format!(r#"<polyline class="{class}" fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#, d.join(" "))
    };
    s.push_str(&line("ops", OPS_COLOUR, points.iter().map(|p| (x(p.at as f64 + 0.5), y(p.ok as f64, ops_top))).collect()));
    let latency = points.iter().filter_map(|p| p.p99_ms.map(|l| (x(p.at as f64 + 0.5), y(l, lat_top)))).collect();
    s.push_str(&line("latency", LATENCY_COLOUR, latency));
    // One row per nemesis: its name, then its injections.
    let lanes_top = TOP + PLOT_H + AXIS_H;
    for (row, kind) in kinds.iter().enumerate() {
        let top = lanes_top + row as f64 * LANE_H;
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{kind}</text>"#, LEFT - 6.0, top + LANE_H - 5.0);
        for inj in bands.iter().filter(|i| i.nemesis == *kind) {
            let start = inj.start_s;
            let (x0, x1) = (x(start), x(start + inj.held_s.max(0.05)));
            let _ = write!(
                s,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{kind} at {start:.1} s: {}</title></rect>"#,
                top + 2.0,
                (x1 - x0).max(2.0),
                LANE_H - 4.0,
                colour(*kind),
                escape(&inj.detail)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The frame, the gridlines, the ticks of both y-axes and of the time axis,
/// and the axis titles.
fn axes(s: &mut String, span_s: f64, ops_ticks: &[f64], lat_ticks: &[f64], x: &dyn Fn(f64) -> f64) {
    let (right, bottom) = (LEFT + (WIDTH - LEFT - RIGHT), TOP + PLOT_H);
    let at = |i: usize, n: usize| bottom - i as f64 / (n - 1) as f64 * PLOT_H;
    s.push_str(r##"<g class="grid" stroke="#dddddd">"##);
    for i in 0..ops_ticks.len() {
        let _ = write!(s, r#"<line x1="{LEFT}" y1="{0:.1}" x2="{right}" y2="{0:.1}"/>"#, at(i, ops_ticks.len()));
    }
    s.push_str("</g>");
    let _ = write!(s, r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{PLOT_H}" fill="none" stroke="black"/>"#, right - LEFT);
    let ops_step = ops_ticks.get(1).copied().unwrap_or(1.0);
    let _ = write!(s, r#"<g class="ticks-ops" fill="{OPS_COLOUR}" stroke="{OPS_COLOUR}" text-anchor="end">"#);
    for (i, v) in ops_ticks.iter().enumerate() {
        let y = at(i, ops_ticks.len());
        let _ = write!(s, r#"<line x1="{:.1}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}"/>"#, LEFT - 4.0);
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" stroke="none">{}</text>"#, LEFT - 6.0, y + 4.0, label(*v, ops_step));
    }
    s.push_str("</g>");
    let lat_step = lat_ticks.get(1).copied().unwrap_or(1.0);
    let _ = write!(s, r#"<g class="ticks-latency" fill="{LATENCY_COLOUR}" stroke="{LATENCY_COLOUR}" text-anchor="start">"#);
    for (i, v) in lat_ticks.iter().enumerate() {
        let y = at(i, lat_ticks.len());
        let _ = write!(s, r#"<line x1="{right}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#, right + 4.0);
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" stroke="none">{}</text>"#, right + 6.0, y + 4.0, label(*v, lat_step));
    }
    s.push_str("</g>");
    let step = ticks(span_s, TIME_TICKS).get(1).copied().unwrap_or(1.0).max(1.0);
    s.push_str(r#"<g class="ticks-time" text-anchor="middle">"#);
    let mut t = 0.0;
    while t <= span_s {
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}">{t}</text>"#, x(t), bottom + 14.0);
        t += step;
    }
    s.push_str("</g>");
    let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text>"#, LEFT + (right - LEFT) / 2.0, bottom + 30.0);
    let _ = write!(s, r#"<text x="{LEFT}" y="{:.1}" fill="{OPS_COLOUR}">successful operations per second</text>"#, TOP - 10.0);
    let _ = write!(s, r#"<text x="{right}" y="{:.1}" fill="{LATENCY_COLOUR}" text-anchor="end">p99 latency (ms)</text>"#, TOP - 10.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_whole_second_is_a_point_and_nothing_after_the_run() {
        // Two in second 0, none in second 1, one in 2, and a final read
        // after the 3 s run.
        let samples = [(100, 2_000), (900_000, 4_000), (2_500_000, 1_000), (3_200_000, 9_000)];
        let s = seconds(samples.into_iter(), 3);
        assert_eq!(s.iter().map(|p| (p.at, p.ok)).collect::<Vec<_>>(), [(0, 2), (1, 0), (2, 1)]);
        assert_eq!(s[0].p99_ms, Some(4.0));
        assert_eq!(s[1].p99_ms, None, "an empty second has no latency");
    }

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(237.0, 5.0), [0.0, 50.0, 100.0, 150.0, 200.0, 250.0]);
        assert_eq!(ticks(3.4, 5.0), [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(ticks(30.0, 10.0).get(1), Some(&5.0), "a 30 s run has a time tick every 5 s");
        assert_eq!(ticks(0.0, 5.0).len(), 2, "an empty axis still has a scale");
        let small = ticks(0.7, 5.0);
        assert!(small.last().is_some_and(|t| *t >= 0.7) && small.len() <= 9, "{small:?}");
        assert_eq!(label(0.2, 0.1), "0.2");
        let (ops, latency) = aligned(ticks(237.0, 5.0), ticks(3.4, 5.0));
        assert_eq!(latency, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "extended to the other axis's intervals");
        assert_eq!(ops.len(), latency.len());
        assert_eq!(label(150.0, 50.0), "150");
    }

    /// sRGB hex over white at `alpha`, in CIELAB (D65).
    fn lab(hex: &str, alpha: f64) -> [f64; 3] {
        let c = |i: usize| {
            let v = u8::from_str_radix(&hex[i..i + 2], 16).expect("hex") as f64 / 255.0;
            let v = alpha * v + (1.0 - alpha);
            if v <= 0.04045 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
        };
        let (r, g, b) = (c(1), c(3), c(5));
        let xyz = [
            (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047,
            0.2126 * r + 0.7152 * g + 0.0722 * b,
            (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883,
        ];
        let f = |t: f64| if t > 216.0 / 24389.0 { t.cbrt() } else { (24389.0 / 27.0 * t + 16.0) / 116.0 };
        let [fx, fy, fz] = xyz.map(f);
        [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
    }

    /// CIEDE2000 colour difference.
    fn de2000(p: [f64; 3], q: [f64; 3]) -> f64 {
        let ([l1, a1, b1], [l2, a2, b2]) = (p, q);
        let cb = (a1.hypot(b1) + a2.hypot(b2)) / 2.0;
        let g = 0.5 * (1.0 - (cb.powi(7) / (cb.powi(7) + 25f64.powi(7))).sqrt());
        let (a1, a2) = ((1.0 + g) * a1, (1.0 + g) * a2);
        let (c1, c2) = (a1.hypot(b1), a2.hypot(b2));
        let hue = |b: f64, a: f64| b.atan2(a).to_degrees().rem_euclid(360.0);
        let (h1, h2) = (hue(b1, a1), hue(b2, a2));
        let mut dh = h2 - h1;
        if dh > 180.0 {
            dh -= 360.0;
        } else if dh < -180.0 {
            dh += 360.0;
        }
        let dhh = 2.0 * (c1 * c2).sqrt() * (dh.to_radians() / 2.0).sin();
        let (lb, cbp) = ((l1 + l2) / 2.0, (c1 + c2) / 2.0);
        let hb = if c1 * c2 == 0.0 {
            h1 + h2
        } else if (h1 - h2).abs() <= 180.0 {
            (h1 + h2) / 2.0
        } else if h1 + h2 < 360.0 {
            (h1 + h2 + 360.0) / 2.0
        } else {
            (h1 + h2 - 360.0) / 2.0
        };
        let cos = |d: f64| d.to_radians().cos();
        let t = 1.0 - 0.17 * cos(hb - 30.0) + 0.24 * cos(2.0 * hb) + 0.32 * cos(3.0 * hb + 6.0) - 0.20 * cos(4.0 * hb - 63.0);
        let dtheta = 30.0 * (-((hb - 275.0) / 25.0).powi(2)).exp();
        let rc = 2.0 * (cbp.powi(7) / (cbp.powi(7) + 25f64.powi(7))).sqrt();
        let sl = 1.0 + 0.015 * (lb - 50.0).powi(2) / (20.0 + (lb - 50.0).powi(2)).sqrt();
        let (sc, sh) = (1.0 + 0.045 * cbp, 1.0 + 0.015 * cbp * t);
        let rt = -(2.0 * dtheta).to_radians().sin() * rc;
        let (dl, dc) = ((l2 - l1) / sl, (c2 - c1) / sc);
        let dhh = dhh / sh;
        (dl * dl + dc * dc + dhh * dhh + rt * dc * dhh).sqrt()
    }

    fn closest(kinds: &[Nemesis], alpha: f64) -> (f64, Nemesis, Nemesis) {
        let mut worst = (f64::MAX, kinds[0], kinds[0]);
        for (i, a) in kinds.iter().enumerate() {
            for b in &kinds[i + 1..] {
                let d = de2000(lab(colour(*a), alpha), lab(colour(*b), alpha));
                if d < worst.0 {
                    worst = (d, *a, *b);
                }
            }
        }
        worst
    }

    #[test]
    fn the_colour_difference_is_cie_de2000() {
        // Sharma, Wu and Dalal's test data, pair 1: 2.0425.
        assert!((de2000([50.0, 2.6772, -79.7751], [50.0, 0.0, -82.7485]) - 2.0425).abs() < 1e-3);
    }

    #[test]
    fn the_nemeses_have_distinct_colours() {
        let (d, a, b) = closest(&Nemesis::ALL, 1.0);
        assert!(d >= 15.0, "{a} and {b} are {d:.1} apart in their rows");
        let (d, a, b) = closest(&Nemesis::ALL, SHADE_OPACITY);
        assert!(d >= 7.5, "{a} and {b} are {d:.1} apart as shaded");
        for n in Nemesis::ALL {
            for line in [OPS_COLOUR, LATENCY_COLOUR] {
                let d = de2000(lab(colour(n), 1.0), lab(line, 1.0));
                assert!(d >= 12.0, "{n} is {d:.1} from a line's colour");
            }
        }
    }
}
