//! The run report's HTML page: a summary in words at the top, the expectations and the machine,
//! then the plots as inline SVG and every figure of the JSON.

use crate::ceiling::RunCeiling;
use crate::expectations::Verdict;
use crate::headline::{Headline, thousands};
use crate::machine::Machine;
use serde_json::Value;
use std::fmt::Write;

/// A line chart: several series of (x, y) points.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Plot x on a log scale of (100 - x), for percentiles.
    pub percentile_x: bool,
}

const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

impl Chart<'_> {
    pub fn svg(&self) -> String {
        let (w, h, left, bottom, top, right) = (640.0, 300.0, 70.0, 40.0, 30.0, 20.0);
        let pw = w - left - right;
        let ph = h - top - bottom;
        let xs = |x: f64| if self.percentile_x { -(100.0 - x.min(99.999)).log10() } else { x };
        let points: Vec<(f64, f64)> =
            self.series.iter().flat_map(|(_, p)| p.iter().map(|(x, y)| (xs(*x), *y))).collect();
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
        );
        let _ =
            write!(out, r#"<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>"#, left, escape(self.title));
        if points.is_empty() {
            let _ = write!(out, r#"<text x="{}" y="{}">no data</text></svg>"#, left + 10.0, top + 20.0);
            return out;
        }
        let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
        let y1 = points.iter().fold(0.0f64, |m, (_, y)| m.max(*y)).max(1e-9) * 1.1;
        let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
        let px = |x: f64| left + (xs(x) - x0) / (x1 - x0) * pw;
        let py = |y: f64| top + ph - y / y1 * ph;
        let _ = write!(out, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##);
        for i in 0..=4 {
            let y = y1 * i as f64 / 4.0;
            let _ =
                write!(out, r##"<text x="{}" y="{}" text-anchor="end">{}</text>"##, left - 5.0, py(y) + 4.0, short(y));
            let _ =
                write!(out, r##"<line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="#eee"/>"##, left + pw, py(y), py(y));
        }
        let ticks: Vec<f64> = if self.percentile_x {
            vec![50.0, 90.0, 99.0, 99.9, 99.99].into_iter().filter(|p| xs(*p) >= x0 && xs(*p) <= x1).collect()
        } else {
            (0..=4).map(|i| x0 + (x1 - x0) * i as f64 / 4.0).collect()
        };
        for x in ticks {
            let label = if self.percentile_x { format!("p{x}") } else { short(x) };
            let pos =
                if self.percentile_x { left + (xs(x) - x0) / (x1 - x0) * pw } else { left + (x - x0) / (x1 - x0) * pw };
            let _ = write!(out, r##"<text x="{pos}" y="{}" text-anchor="middle">{label}</text>"##, top + ph + 15.0);
        }
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle">{}</text>"##,
            left + pw / 2.0,
            h - 5.0,
            escape(self.x_label)
        );
        let _ = write!(
            out,
            r##"<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"##,
            top + ph / 2.0,
            top + ph / 2.0,
            escape(self.y_label)
        );
        for (i, (name, series)) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = series
                .iter()
                .map(|(x, y)| {
                    let x = if self.percentile_x { left + (xs(*x) - x0) / (x1 - x0) * pw } else { px(*x) };
                    format!("{x:.1},{:.1}", py(*y))
                })
                .collect();
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                path.join(" ")
            );
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
                left + pw - 150.0,
                top + 14.0 + 13.0 * i as f64,
                escape(name)
            );
        }
        out.push_str("</svg>");
        out
    }
}

fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A self-contained page (no scripts, no fetches): the plots are inline SVG.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:70em}td,th{padding:2px 12px;text-align:left;vertical-align:top}\
tr:nth-child(odd){background:#f4f4f4}#summary{font-size:1.15em;padding:.6em 1em;border-left:6px solid #999}\
#summary.pass{border-color:#2ca02c}#summary.fail{border-color:#d62728}td.pass{color:#2ca02c;font-weight:bold}\
td.fail{color:#d62728;font-weight:bold}.warning{background:#fff3cd;padding:.4em 1em}";

/// Report fields shown in their own sections rather than in the table of all figures.
const SECTIONS: [&str; 4] = ["expectations", "machine", "ceiling", "summary"];

/// The report page: the summary sentence, the expectations with their verdicts, the machine and
/// its ceiling, the plots, then every other figure of the JSON.
pub fn html(title: &str, report: &Value, charts: &[Chart]) -> String {
    let mut body = String::new();
    match Headline::read(report) {
        Ok(h) => {
            let class = if h.passed() == Some(true) { "pass" } else { "fail" };
            let _ = write!(body, r#"<p id="summary" class="{class}">{}</p>"#, escape(&h.summary()));
            body.push_str(&expectations_table(h.verdicts.as_deref().unwrap_or_default()));
        }
        Err(e) => {
            let _ = write!(body, r#"<p id="summary" class="fail">NOT A COMPLETE REPORT — {}</p>"#, escape(&e));
        }
    }
    body.push_str(&machine_table(report));
    body.push_str("<h2>Plots</h2>");
    for c in charts {
        let _ = write!(body, "<div>{}</div>", c.svg());
    }
    body.push_str("<h2>All figures</h2><table>");
    if let Value::Object(map) = report {
        for (k, v) in map.iter().filter(|(k, _)| !SECTIONS.contains(&k.as_str())) {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(body, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(&v));
        }
    }
    body.push_str("</table>");
    page(title, &body)
}

fn expectations_table(verdicts: &[Verdict]) -> String {
    let mut out = String::from(
        r#"<h2>Expectations</h2><table id="expectations"><tr><th>verdict</th><th>expectation</th><th>measured</th><th>bound</th><th>why this bound</th></tr>"#,
    );
    for v in verdicts {
        let (class, word) = if v.pass { ("pass", "PASS") } else { ("fail", "FAIL") };
        let _ = write!(
            out,
            r#"<tr data-id="{}"><td class="{class}">{word}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            escape(&v.id),
            escape(&v.expectation),
            escape(&v.measured_text()),
            escape(&v.bound_text()),
            escape(&v.reason)
        );
    }
    out.push_str("</table>");
    out
}

fn machine_table(report: &Value) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Ok(m) = serde_json::from_value::<Machine>(report["machine"].clone()) {
        rows.push(("host".into(), m.hostname.clone().unwrap_or_else(|| "not recorded".into())));
        rows.push(("CPU".into(), format!("{} ({} cores online)", m.cpu, m.cores)));
        if let Some(mem) = m.memory_bytes {
            rows.push(("memory".into(), format!("{:.1} GiB", mem as f64 / (1u64 << 30) as f64)));
        }
        rows.push(("kernel".into(), m.kernel.clone()));
        let load =
            |l: Option<[f64; 3]>| l.map_or("not recorded".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]));
        rows.push(("load average (1, 5, 15 min) at start".into(), load(m.load_average_start)));
        rows.push(("load average at end".into(), load(m.load_average_end)));
    }
    if let Some(cores) = report["loadGeneratorCores"].as_u64() {
        rows.push(("cores the load generator ran on".into(), cores.to_string()));
    }
    match serde_json::from_value::<RunCeiling>(report["ceiling"].clone()) {
        Ok(c) => {
            let mut text = format!("sendmmsg {} datagrams per CPU-second", thousands(c.sendmmsg_per_cpu_second));
            if let Some(d) = c.sendmmsg_fanout_per_cpu_second {
                let _ = write!(text, "; sendmmsg fan-out to read sockets {}", thousands(d));
            }
            if let Some(f) = &c.full {
                let gso = f.gso_per_cpu_second.map_or("n/a".into(), thousands);
                let _ = write!(
                    text,
                    "; sendto {}; GSO {gso}; AES-128-GCM 1200 B {} seals",
                    thousands(f.sendto_per_cpu_second),
                    thousands(f.aes128gcm_1200b_per_cpu_second)
                );
            }
            let _ = write!(text, " ({})", c.source);
            rows.push(("ceiling".into(), text));
        }
        Err(_) => rows.push(("ceiling".into(), "not measured".into())),
    }
    let mut out = String::from(r#"<h2>Machine</h2><table id="machine">"#);
    for (k, v) in rows {
        let _ = write!(out, "<tr><td>{}</td><td>{}</td></tr>", escape(&k), escape(&v));
    }
    out.push_str("</table>");
    out
}
