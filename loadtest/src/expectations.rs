//! What a run of each scenario is expected to show, each with the reason for its bound, and the
//! verdict of a report against them. Bounds are properties of a good call (everyone joins, media
//! arrives, in time), not performance targets: no ceiling ratio is expected here.

use crate::scenario::{Kind, Params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Audio's one-way latency budget before fan-out: speech feels live under 150 ms mouth to ear,
/// and the SFU's share of it is a third.
const AUDIO_P99_MS: f64 = 50.0;
/// Each receiver of a packet adds one copy to the burst the last receiver waits behind.
const AUDIO_P99_MS_PER_RECEIVER: f64 = 0.1;
/// Video may lag audio a little before lips visibly drift; a keyframe (~20 packets) is sent to
/// every receiver, so the tail grows by about 20 copies per receiver.
const VIDEO_P99_MS: f64 = 100.0;
const VIDEO_P99_MS_PER_RECEIVER: f64 = 0.5;
/// What a user waits for "connecting" before thinking the call broke.
const JOIN_P99_MS: f64 = 2000.0;
/// DTLS handshakes of clients joining in the same second queue on the shard.
const JOIN_P99_MS_PER_CONCURRENT_JOIN: f64 = 5.0;
const LOSS_PERCENT: f64 = 1.0;
const LOAD_GENERATOR_PERCENT: f64 = 90.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Comparison {
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = ">=")]
    AtLeast,
}

/// One expectation of a scenario: a figure read from the report, and its bound.
pub struct Expectation {
    pub id: &'static str,
    pub what: String,
    pub reason: String,
    pub unit: &'static str,
    pub comparison: Comparison,
    pub bound: f64,
    measure: fn(&Value) -> Option<f64>,
}

/// An expectation evaluated against one report; stored in the report's JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub id: String,
    pub expectation: String,
    pub reason: String,
    pub unit: String,
    pub comparison: Comparison,
    pub bound: f64,
    /// `None` when the report lacks the figure (nothing of the kind received): a failure.
    pub measured: Option<f64>,
    pub pass: bool,
}

impl Expectation {
    pub fn evaluate(&self, report: &Value) -> Verdict {
        let measured = (self.measure)(report);
        let pass = measured.is_some_and(|m| match self.comparison {
            Comparison::AtMost => m <= self.bound,
            Comparison::AtLeast => m >= self.bound,
        });
        Verdict {
            id: self.id.to_string(),
            expectation: self.what.clone(),
            reason: self.reason.clone(),
            unit: self.unit.to_string(),
            comparison: self.comparison,
            bound: self.bound,
            measured,
            pass,
        }
    }
}

impl Verdict {
    /// "≤ 50 ms".
    pub fn bound_text(&self) -> String {
        let op = match self.comparison {
            Comparison::AtMost => "≤",
            Comparison::AtLeast => "≥",
        };
        format!("{op} {}", with_unit(self.bound, &self.unit))
    }

    pub fn measured_text(&self) -> String {
        self.measured.map_or("not measured".into(), |m| with_unit(m, &self.unit))
    }
}

fn with_unit(v: f64, unit: &str) -> String {
    let number = if v.fract() == 0.0 || v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") };
    if unit.is_empty() { number } else { format!("{number} {unit}") }
}

/// Receivers of each published packet, the fan-out that sets the latency tail.
fn fan_out(kind: Kind, p: &Params) -> usize {
    match kind {
        Kind::AudioRoom => (p.talkers + p.listeners).saturating_sub(1),
        Kind::Meeting | Kind::Spike | Kind::Ramp => p.size.saturating_sub(1),
        Kind::Broadcast => p.listeners,
        Kind::Churn => ((p.rate * p.stay as f64) / p.rooms.max(1) as f64).ceil().max(1.0) as usize - 1,
    }
}

/// Clients that join within the same second, all rooms together (they may share a shard).
fn concurrent_joins(kind: Kind, p: &Params, clients: usize) -> usize {
    match kind {
        // The plan spreads these over the first second; a spike joins at once.
        Kind::AudioRoom | Kind::Meeting | Kind::Broadcast | Kind::Spike => clients,
        Kind::Ramp => clients.div_ceil(p.ramp_seconds.max(1) as usize),
        Kind::Churn => p.rate.ceil() as usize,
    }
}

fn number(report: &Value, pointer: &str) -> Option<f64> {
    report.pointer(pointer).and_then(Value::as_f64)
}

/// The expectations of `kind` with parameters `p` and `clients` planned clients.
pub fn for_scenario(kind: Kind, p: &Params, clients: usize) -> Vec<Expectation> {
    let mut list = vec![
        Expectation {
            id: "all-joined",
            what: "clients that reached CONNECTED".into(),
            reason: "every planned client must join: one that does not is a failed call for its user".into(),
            unit: "clients",
            comparison: Comparison::AtLeast,
            bound: clients as f64,
            measure: |r| number(r, "/clients/joined"),
        },
        Expectation {
            id: "none-failed",
            what: "clients that failed".into(),
            reason: "no client may lose its bus connection or be closed by the server during the run".into(),
            unit: "clients",
            comparison: Comparison::AtMost,
            bound: 0.0,
            measure: |r| number(r, "/clients/failed"),
        },
    ];
    let joins = concurrent_joins(kind, p, clients);
    list.push(Expectation {
        id: "join-p99",
        what: "join time p99".into(),
        reason: format!(
            "a user waits about {JOIN_P99_MS:.0} ms for \"connecting\"; plus {JOIN_P99_MS_PER_CONCURRENT_JOIN} ms for each of the {joins} clients joining in the same second, whose DTLS handshakes queue on the shard"
        ),
        unit: "ms",
        comparison: Comparison::AtMost,
        bound: JOIN_P99_MS + JOIN_P99_MS_PER_CONCURRENT_JOIN * joins as f64,
        measure: |r| number(r, "/joinMs/p99"),
    });
    // Churn's clients are all sinks: nothing decrypts, so nothing measures loss or latency.
    let measured_media = p.full > 0 && kind != Kind::Churn;
    if measured_media {
        let receivers = fan_out(kind, p);
        list.push(Expectation {
            id: "loss",
            what: "media loss (full subscribers)".into(),
            reason: format!(
                "Opus and VP8 conceal isolated losses, past {LOSS_PERCENT}% users hear and see them; on loopback any loss is ringsfu's"
            ),
            unit: "%",
            comparison: Comparison::AtMost,
            bound: LOSS_PERCENT,
            measure: |r| number(r, "/lossRatio").map(|l| l * 100.0),
        });
        list.push(Expectation {
            id: "audio-latency-p99",
            what: "audio one-way latency p99".into(),
            reason: format!(
                "speech feels live under 150 ms mouth to ear and the SFU gets a third ({AUDIO_P99_MS:.0} ms), plus {AUDIO_P99_MS_PER_RECEIVER} ms per receiver of a packet ({receivers}) for the copies before the last"
            ),
            unit: "ms",
            comparison: Comparison::AtMost,
            bound: AUDIO_P99_MS + AUDIO_P99_MS_PER_RECEIVER * receivers as f64,
            measure: |r| number(r, "/latencyMs/audio/p99"),
        });
        if kind != Kind::AudioRoom {
            list.push(Expectation {
                id: "video-latency-p99",
                what: "video one-way latency p99".into(),
                reason: format!(
                    "video may trail audio by about {VIDEO_P99_MS:.0} ms before lips drift; a keyframe burst goes to every receiver ({receivers}), {VIDEO_P99_MS_PER_RECEIVER} ms more each"
                ),
                unit: "ms",
                comparison: Comparison::AtMost,
                bound: VIDEO_P99_MS + VIDEO_P99_MS_PER_RECEIVER * receivers as f64,
                measure: |r| number(r, "/latencyMs/video/p99"),
            });
        }
    }
    list.push(Expectation {
        id: "no-rejected",
        what: "datagrams the transports refused (drop reason rejected)".into(),
        reason: "a refused datagram failed an integrity, DTLS or SRTP check, which well-behaved clients never cause"
            .into(),
        unit: "",
        comparison: Comparison::AtMost,
        bound: 0.0,
        measure: |r| number(r, "/droppedPackets/rejected"),
    });
    list.push(Expectation {
        id: "no-send-failed",
        what: "datagrams the kernel refused to send (drop reason send_failed)".into(),
        reason: "a refused send is a packet lost inside the SFU (a full socket buffer)".into(),
        unit: "",
        comparison: Comparison::AtMost,
        bound: 0.0,
        measure: |r| number(r, "/droppedPackets/send_failed"),
    });
    list.push(Expectation {
        id: "load-generator-headroom",
        what: "load generator CPU, share of its cores".into(),
        reason: format!(
            "past {LOAD_GENERATOR_PERCENT:.0}% of its cores the load generator, not ringsfu, sets the pace and the figures say little about ringsfu"
        ),
        unit: "%",
        comparison: Comparison::AtMost,
        bound: LOAD_GENERATOR_PERCENT,
        measure: |r| {
            let cores = number(r, "/loadGeneratorCores").filter(|c| *c > 0.0)?;
            number(r, "/loadGeneratorCpuUtilization").map(|u| u / cores * 100.0)
        },
    });
    list
}

/// Every expectation of the scenario, evaluated against `report`.
pub fn evaluate(kind: Kind, p: &Params, clients: usize, report: &Value) -> Vec<Verdict> {
    for_scenario(kind, p, clients).iter().map(|e| e.evaluate(report)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(f: impl FnOnce(&mut Params)) -> Params {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            params: Params,
        }
        let mut p = <Defaults as clap::Parser>::parse_from(["defaults"]).params;
        f(&mut p);
        p
    }

    fn good_report() -> Value {
        json!({
            "clients": {"planned": 12, "joined": 12, "failed": 0},
            "joinMs": {"p50": 100.0, "p99": 300.0},
            "lossRatio": 0.0,
            "latencyMs": {"audio": {"p99": 5.0}, "video": {"p99": 40.0}},
            "droppedPackets": {"rejected": 0.0, "send_failed": 0.0, "unknown_source": 3.0},
            "loadGeneratorCpuUtilization": 0.5,
            "loadGeneratorCores": 1,
        })
    }

    /// Bounds that scale with the scenario: latency with fan-out, joins with concurrent joins.
    #[test]
    fn bounds_follow_the_scenario() {
        let cases: [(Kind, Params, usize, &str, f64); 6] = [
            (Kind::Meeting, params(|p| p.size = 10), 10, "video-latency-p99", 104.5),
            (Kind::Broadcast, params(|p| p.listeners = 300), 301, "video-latency-p99", 250.0),
            (Kind::AudioRoom, params(|p| p.listeners = 300), 303, "audio-latency-p99", 80.2),
            (Kind::AudioRoom, params(|p| p.listeners = 300), 303, "join-p99", 3515.0),
            (Kind::Ramp, params(|p| (p.size, p.ramp_seconds) = (20, 10)), 20, "join-p99", 2010.0),
            (Kind::AudioRoom, params(|_| {}), 103, "all-joined", 103.0),
        ];
        for (kind, p, clients, id, bound) in cases {
            let list = for_scenario(kind, &p, clients);
            let e = list.iter().find(|e| e.id == id).unwrap_or_else(|| panic!("{kind:?} has {id}"));
            assert!((e.bound - bound).abs() < 1e-9, "{kind:?} {id}: {} != {bound}", e.bound);
        }
    }

    /// Which expectations a scenario has: no video bound for an audio room, no media bounds when
    /// nothing decrypts (churn, or `--full 0`).
    #[test]
    fn media_expectations_only_where_media_is_measured() {
        let ids = |kind, p: &Params| for_scenario(kind, p, 10).iter().map(|e| e.id).collect::<Vec<_>>();
        assert!(!ids(Kind::AudioRoom, &params(|_| {})).contains(&"video-latency-p99"));
        assert!(ids(Kind::Meeting, &params(|_| {})).contains(&"video-latency-p99"));
        assert!(!ids(Kind::Churn, &params(|_| {})).contains(&"loss"));
        assert!(!ids(Kind::Broadcast, &params(|p| p.full = 0)).contains(&"audio-latency-p99"));
    }

    /// A good report passes everything; each breach (or a missing figure) fails exactly its own.
    #[test]
    fn each_breach_fails_its_expectation() {
        let p = params(|p| p.size = 12);
        let verdicts = evaluate(Kind::Meeting, &p, 12, &good_report());
        assert!(verdicts.iter().all(|v| v.pass), "{verdicts:?}");
        let breaches: [(&str, &str, Value); 8] = [
            ("/clients/joined", "all-joined", json!(11)),
            ("/clients/failed", "none-failed", json!(1)),
            ("/lossRatio", "loss", json!(0.02)),
            ("/latencyMs/audio/p99", "audio-latency-p99", json!(52.0)),
            ("/latencyMs/video", "video-latency-p99", Value::Null),
            ("/droppedPackets/send_failed", "no-send-failed", json!(1.0)),
            ("/loadGeneratorCpuUtilization", "load-generator-headroom", json!(0.95)),
            ("/joinMs/p99", "join-p99", json!(2061.0)),
        ];
        for (pointer, id, value) in breaches {
            let mut report = good_report();
            *report.pointer_mut(pointer).unwrap() = value;
            let failed: Vec<String> =
                evaluate(Kind::Meeting, &p, 12, &report).into_iter().filter(|v| !v.pass).map(|v| v.id).collect();
            assert_eq!(failed, [id], "{pointer}");
        }
    }

    #[test]
    fn verdict_texts_carry_units() {
        let p = params(|_| {});
        let v = &evaluate(Kind::AudioRoom, &p, 103, &good_report())[2];
        assert_eq!(v.id, "join-p99");
        assert_eq!((v.bound_text().as_str(), v.measured_text().as_str()), ("≤ 2515 ms", "300 ms"));
    }
}
