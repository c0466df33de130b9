//! `ringsfu-loadtest compare OLD.json NEW.json`: the headline figures of two run reports side by
//! side with the change as a ratio, in Markdown on stdout (and HTML with `--html`), warning when
//! the runs are not comparable (other machine, other scenario).

use crate::headline::{Headline, significant, thousands};
use crate::report::{escape, page};
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The report before (a `<scenario>.json` written by `ringsfu-loadtest run`).
    pub old: PathBuf,
    /// The report after.
    pub new: PathBuf,
    /// Also write the comparison as an HTML page here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// One line of the table: the figure, its value in each run, and new ÷ old.
pub struct Row {
    pub figure: &'static str,
    pub old: String,
    pub new: String,
    pub change: String,
}

pub fn compare(args: &CompareArgs) -> Result<(), String> {
    let old = load(&args.old)?;
    let new = load(&args.new)?;
    let rows = rows(&old, &new);
    let warnings = warnings(&old, &new);
    println!("{}", markdown(&args.old, &old, &args.new, &new, &warnings, &rows));
    if let Some(path) = &args.html {
        std::fs::write(path, html(&args.old, &old, &args.new, &new, &warnings, &rows))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn load(path: &Path) -> Result<Headline, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        format!("{}: not a ringsfu-loadtest report (not JSON: {e}); give the .json that `run` wrote", path.display())
    })?;
    Headline::read(&value).map_err(|e| format!("{}: not a ringsfu-loadtest report ({e})", path.display()))
}

/// new ÷ old as "×1.23"; a dash where either is missing or the old one is zero.
fn change(old: Option<f64>, new: Option<f64>) -> String {
    match (old, new) {
        (Some(o), Some(n)) if o != 0.0 => format!("×{:.2}", n / o),
        _ => "—".into(),
    }
}

pub fn rows(old: &Headline, new: &Headline) -> Vec<Row> {
    let figure = |figure, get: &dyn Fn(&Headline) -> Option<f64>, show: &dyn Fn(f64) -> String| {
        let text = |h: &Headline| get(h).map_or("—".into(), show);
        Row { figure, old: text(old), new: text(new), change: change(get(old), get(new)) }
    };
    let ms = |v: f64| significant(v);
    let mut rows = vec![
        figure("forwarded packets per second", &|h| Some(h.forwarded_per_second), &thousands),
        figure("forwarded packets per shard-CPU-second", &|h| Some(h.forwarded_per_shard_cpu_second), &thousands),
        figure("sendmmsg ceiling (datagrams per CPU-second)", &|h| h.sendmmsg_ceiling, &thousands),
        figure("ratio to the run's own sendmmsg ceiling", &|h| h.ceiling_ratio(), &significant),
        figure("shard CPU (% of one core)", &|h| Some(h.shard_cpu * 100.0), &|v| format!("{v:.1}%")),
        figure("audio latency p50 (ms)", &|h| h.audio_p50_ms, &ms),
        figure("audio latency p99 (ms)", &|h| h.audio_p99_ms, &ms),
        figure("video latency p50 (ms)", &|h| h.video_p50_ms, &ms),
        figure("video latency p99 (ms)", &|h| h.video_p99_ms, &ms),
        figure("join p50 (ms)", &|h| h.join_p50_ms, &ms),
        figure("join p99 (ms)", &|h| h.join_p99_ms, &ms),
        figure("media loss (%)", &|h| Some(h.loss_ratio * 100.0), &|v| format!("{v:.3}%")),
        figure("RSS per session (MB)", &|h| Some(h.rss_per_session_bytes / 1e6), &|v| format!("{v:.2}")),
    ];
    let met = |h: &Headline| h.expectations_met().map_or("not judged".into(), |(m, of)| format!("{m}/{of}"));
    rows.push(Row { figure: "expectations met", old: met(old), new: met(new), change: "—".into() });
    rows
}

pub fn warnings(old: &Headline, new: &Headline) -> Vec<String> {
    let mut out = Vec::new();
    match (&old.machine, &new.machine) {
        (Some(a), Some(b)) if !a.same_as(b) => out.push(format!(
            "the runs came from different machines (old: {}; new: {}): compare each run's ratio to its own ceiling, not the raw figures",
            a.describe(),
            b.describe()
        )),
        (Some(a), Some(b)) if a.kernel != b.kernel => {
            out.push(format!("the kernels differ (old: {}; new: {})", a.kernel, b.kernel))
        }
        (Some(_), Some(_)) => {}
        _ => out.push("one of the reports does not say which machine it ran on".into()),
    }
    if old.scenario != new.scenario {
        out.push(format!("the scenarios differ (old: {}; new: {})", old.scenario, new.scenario));
    } else {
        let differing = differing_params(&old.plan["params"], &new.plan["params"]);
        if !differing.is_empty() {
            out.push(format!("the {} scenarios ran with different parameters: {}", old.scenario, differing.join(", ")));
        }
    }
    if old.sendmmsg_ceiling.is_none() || new.sendmmsg_ceiling.is_none() {
        out.push("a report without a ceiling has no ratio to it".into());
    }
    out
}

/// "listeners 300 → 3" for each parameter whose value changed.
fn differing_params(old: &Value, new: &Value) -> Vec<String> {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else { return Vec::new() };
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("none".into(), Value::to_string);
            format!("{k} {} → {}", show(old.get(k)), show(new.get(k)))
        })
        .collect()
}

/// "audio-room, 5 clients, PASS (9/9), on host (…)".
fn describe(h: &Headline) -> String {
    let verdict = match h.expectations_met() {
        Some((m, of)) if m == of => format!("PASS ({m}/{of})"),
        Some((m, of)) => format!("FAIL ({m}/{of})"),
        None => "not judged".into(),
    };
    let machine = h.machine.as_ref().map_or("an unrecorded machine".into(), |m| m.describe());
    format!("{}, {} clients, {verdict}, on {machine}", h.scenario, h.planned)
}

pub fn markdown(
    old_path: &Path,
    old: &Headline,
    new_path: &Path,
    new: &Headline,
    warnings: &[String],
    rows: &[Row],
) -> String {
    let mut out = format!("## ringsfu load test: {} → {}\n\n", old_path.display(), new_path.display());
    let _ = writeln!(out, "- old: `{}` — {}", old_path.display(), describe(old));
    let _ = writeln!(out, "- new: `{}` — {}\n", new_path.display(), describe(new));
    for w in warnings {
        let _ = writeln!(out, "> **Warning:** {w}\n");
    }
    out.push_str("| figure | old | new | new ÷ old |\n|---|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(out, "| {} | {} | {} | {} |", r.figure, r.old, r.new, r.change);
    }
    out
}

pub fn html(
    old_path: &Path,
    old: &Headline,
    new_path: &Path,
    new: &Headline,
    warnings: &[String],
    rows: &[Row],
) -> String {
    let mut body = format!(
        "<ul><li>old: <code>{}</code> — {}</li><li>new: <code>{}</code> — {}</li></ul>",
        escape(&old_path.display().to_string()),
        escape(&describe(old)),
        escape(&new_path.display().to_string()),
        escape(&describe(new))
    );
    for w in warnings {
        let _ = write!(body, r#"<p class="warning"><b>Warning:</b> {}</p>"#, escape(w));
    }
    body.push_str(r#"<table id="comparison"><tr><th>figure</th><th>old</th><th>new</th><th>new ÷ old</th></tr>"#);
    for r in rows {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(r.figure),
            escape(&r.old),
            escape(&r.new),
            escape(&r.change)
        );
    }
    body.push_str("</table>");
    page("ringsfu load test: before and after", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_is_new_over_old() {
        let cases = [
            (Some(100.0), Some(150.0), "×1.50"),
            (Some(0.0), Some(1.0), "—"),
            (None, Some(1.0), "—"),
            (Some(2.0), None, "—"),
        ];
        for (old, new, want) in cases {
            assert_eq!(change(old, new), want, "{old:?} → {new:?}");
        }
    }

    #[test]
    fn changed_parameters_are_named() {
        let old = serde_json::json!({"listeners": 300, "talkers": 3});
        let new = serde_json::json!({"listeners": 3, "talkers": 3, "rooms": 2});
        assert_eq!(differing_params(&old, &new), ["listeners 300 → 3", "rooms none → 2"]);
    }
}
