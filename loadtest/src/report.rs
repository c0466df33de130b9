//! The run report: one JSON file with every figure, one HTML page with the plots as inline SVG.

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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The HTML page: a summary table of `summary` and the charts.
pub fn html(title: &str, summary: &Value, charts: &[Chart]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 12px}}tr:nth-child(odd){{background:#f4f4f4}}</style></head><body><h1>{t}</h1><table>",
        t = escape(title)
    );
    if let Value::Object(map) = summary {
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(out, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(&v));
        }
    }
    out.push_str("</table>");
    for c in charts {
        let _ = write!(out, "<div>{}</div>", c.svg());
    }
    out.push_str("</body></html>");
    out
}
