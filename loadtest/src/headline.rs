//! The headline figures of a run report, read back from its JSON (the HTML summary and `compare`
//! both start here), and the summary sentence at the top of the report.

use crate::expectations::Verdict;
use crate::machine::Machine;
use serde_json::Value;

/// What one report says, in the units a reader wants. Figures a report does not hold (older
/// reports have no ceiling, machine details or verdicts; an audio room has no video) are `None`.
#[derive(Debug, Clone)]
pub struct Headline {
    /// `audio-room`, `meeting`, ...
    pub scenario: String,
    /// The scenario as run: its parameters, clients and rooms.
    pub plan: Value,
    pub machine: Option<Machine>,
    pub planned: u64,
    pub joined: u64,
    pub forwarded_per_second: f64,
    pub forwarded_per_shard_cpu_second: f64,
    pub sendmmsg_ceiling: Option<f64>,
    /// `sendmmsg` to many sockets that are read (see `ceiling::Ceiling`), when measured.
    pub fanout_ceiling: Option<f64>,
    /// Shard CPU summed over the shards, as a share of one core.
    pub shard_cpu: f64,
    pub audio_p50_ms: Option<f64>,
    pub audio_p99_ms: Option<f64>,
    pub video_p50_ms: Option<f64>,
    pub video_p99_ms: Option<f64>,
    pub join_p50_ms: Option<f64>,
    pub join_p99_ms: Option<f64>,
    pub loss_ratio: f64,
    pub rss_per_session_bytes: f64,
    pub verdicts: Option<Vec<Verdict>>,
}

impl Headline {
    /// Reads a report written by `ringsfu-loadtest run`; an error names what makes it not one.
    pub fn read(report: &Value) -> Result<Headline, String> {
        let number = |pointer: &str| report.pointer(pointer).and_then(Value::as_f64);
        let required = |pointer: &str| number(pointer).ok_or_else(|| format!("no number at {pointer}"));
        let scenario = report
            .pointer("/scenario/scenario")
            .and_then(Value::as_str)
            .ok_or("no scenario name at /scenario/scenario")?
            .to_string();
        let verdicts = match report.get("expectations") {
            None | Some(Value::Null) => None,
            Some(v) => {
                Some(serde_json::from_value::<Vec<Verdict>>(v.clone()).map_err(|e| format!("expectations: {e}"))?)
            }
        };
        Ok(Headline {
            scenario,
            plan: report["scenario"].clone(),
            machine: report.get("machine").and_then(|m| serde_json::from_value(m.clone()).ok()),
            planned: required("/clients/planned")? as u64,
            joined: required("/clients/joined")? as u64,
            forwarded_per_second: required("/forwardedPacketsPerSecond")?,
            forwarded_per_shard_cpu_second: required("/forwardedPacketsPerShardCpuSecond")?,
            sendmmsg_ceiling: number("/ceiling/sendmmsg_per_cpu_second").filter(|c| *c > 0.0),
            fanout_ceiling: number("/ceiling/sendmmsg_fanout_per_cpu_second").filter(|c| *c > 0.0),
            shard_cpu: report["shardCpuUtilization"]
                .as_array()
                .ok_or("no shardCpuUtilization")?
                .iter()
                .filter_map(Value::as_f64)
                .sum(),
            audio_p50_ms: number("/latencyMs/audio/p50"),
            audio_p99_ms: number("/latencyMs/audio/p99"),
            video_p50_ms: number("/latencyMs/video/p50"),
            video_p99_ms: number("/latencyMs/video/p99"),
            join_p50_ms: number("/joinMs/p50"),
            join_p99_ms: number("/joinMs/p99"),
            loss_ratio: required("/lossRatio")?,
            rss_per_session_bytes: required("/rssBytesPerSession")?,
            verdicts,
        })
    }

    /// Forwarded packets per shard-CPU-second as a share of this run's `sendmmsg` ceiling.
    pub fn ceiling_ratio(&self) -> Option<f64> {
        self.sendmmsg_ceiling.map(|c| self.forwarded_per_shard_cpu_second / c)
    }

    /// (met, of) when the report was judged.
    pub fn expectations_met(&self) -> Option<(usize, usize)> {
        self.verdicts.as_ref().map(|v| (v.iter().filter(|v| v.pass).count(), v.len()))
    }

    pub fn passed(&self) -> Option<bool> {
        self.expectations_met().map(|(met, of)| met == of)
    }

    /// Who took part, in the scenario's words ("3 talkers and 300 listeners").
    fn who(&self) -> String {
        let p = &self.plan["params"];
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        let rooms = self.plan["rooms"].as_u64().unwrap_or(1);
        let per_room = if rooms > 1 { format!(" in each of {rooms} rooms") } else { String::new() };
        match self.scenario.as_str() {
            "audio-room" => format!("{} talkers and {} listeners{per_room}", n("talkers"), n("listeners")),
            "broadcast" => format!("1 publisher and {} listeners{per_room}", n("listeners")),
            "churn" => format!("participants joining at {}/s for {} s each", p["rate"], n("stay")),
            _ => format!("{} participants{per_room}", n("size")),
        }
    }

    /// The sentence at the top of the report: the verdict, then the figures in words and units.
    pub fn summary(&self) -> String {
        let verdict = match (self.passed(), &self.verdicts) {
            (Some(true), _) => "PASS".to_string(),
            (Some(false), Some(v)) => {
                let failed: Vec<&str> = v.iter().filter(|v| !v.pass).map(|v| v.expectation.as_str()).collect();
                format!("FAIL ({} of {} expectations not met: {})", failed.len(), v.len(), failed.join("; "))
            }
            _ => "NOT JUDGED (the report holds no expectations)".to_string(),
        };
        let mut parts = vec![format!(
            "{} of {} clients ({}) joined{}",
            self.joined,
            self.planned,
            self.who(),
            self.join_p99_ms.map_or(String::new(), |j| format!(" in p99 {} ms", thousands(j)))
        )];
        let per_cpu = format!(
            "{} forwarded packets per second, {} per shard-CPU-second at {:.0}% shard CPU",
            thousands(self.forwarded_per_second),
            thousands(self.forwarded_per_shard_cpu_second),
            self.shard_cpu * 100.0
        );
        parts.push(match (self.ceiling_ratio(), self.sendmmsg_ceiling) {
            (Some(ratio), Some(c)) => {
                let fanout = self.fanout_ceiling.map_or(String::new(), |d| {
                    format!(
                        " and {} of its fan-out ceiling ({:.2} M/CPU-s, delivered to read sockets)",
                        significant(self.forwarded_per_shard_cpu_second / d),
                        d / 1e6
                    )
                });
                format!(
                    "{per_cpu} = {} of this machine's sendmmsg ceiling ({:.2} M/CPU-s){fanout}",
                    significant(ratio),
                    c / 1e6
                )
            }
            _ => format!("{per_cpu} (no ceiling measured)"),
        });
        let latency = |kind: &str, p50: Option<f64>, p99: Option<f64>| {
            p50.zip(p99).map(|(a, b)| format!("{kind} latency p50 {} ms, p99 {} ms", significant(a), significant(b)))
        };
        parts.extend(latency("audio", self.audio_p50_ms, self.audio_p99_ms));
        parts.extend(latency("video", self.video_p50_ms, self.video_p99_ms));
        parts.push(format!(
            "loss {:.2}%; RSS {:.2} MB per session",
            self.loss_ratio * 100.0,
            self.rss_per_session_bytes / 1e6
        ));
        if let Some(m) = &self.machine {
            let load = match (m.load_average_start, m.load_average_end) {
                (Some(a), Some(b)) => format!(", load average {:.2} → {:.2}", a[0], b[0]),
                _ => String::new(),
            };
            parts.push(format!("on {}{load}", m.describe()));
        }
        format!("{verdict} — {}.", parts.join("; "))
    }
}

/// 64200.4 → "64,200"; small values keep two decimals.
pub fn thousands(v: f64) -> String {
    if v.abs() < 10.0 {
        return format!("{v:.2}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// Two significant digits for ratios and small latencies (0.052, 5.9, 210).
pub fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (1 - v.abs().log10().floor() as i32).max(0) as usize;
    if decimals == 0 { thousands(v) } else { format!("{v:.decimals$}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_written() {
        let cases = [
            (thousands(64200.4), "64,200"),
            (thousands(1_310_000.0), "1,310,000"),
            (thousands(999.0), "999"),
            (thousands(5.0), "5.00"),
            (significant(0.0512), "0.051"),
            (significant(5.93), "5.9"),
            (significant(210.4), "210"),
            (significant(1357.0), "1,357"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    /// An older report (no ceiling, machine details or verdicts) still reads; a file that is
    /// not a report is refused with what it lacks.
    #[test]
    fn reads_old_reports_and_refuses_others() {
        let old = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/bench/audio-room.json"))
            .expect("the committed report");
        let h = Headline::read(&serde_json::from_str(&old).unwrap()).unwrap();
        assert_eq!((h.scenario.as_str(), h.joined, h.passed()), ("audio-room", 303, None));
        assert!(h.summary().starts_with("NOT JUDGED"), "{}", h.summary());
        assert!(h.summary().contains("3 talkers and 300 listeners"), "{}", h.summary());
        let err = Headline::read(&serde_json::json!({"sendmmsg_per_cpu_second": 1.0})).unwrap_err();
        assert!(err.contains("/scenario/scenario"), "{err}");
    }
}
