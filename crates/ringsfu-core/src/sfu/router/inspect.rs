//! A JSON picture of one channel for operators: who is connected, what they publish, which
//! simulcast layer each subscriber gets and why (its budget, its downlink estimate).

use super::Router;
use crate::protocol::messages::Direction;
use crate::sfu::consumer::Egress;
use crate::sfu::context::Context;
use serde_json::{Value, json};
use std::time::Instant;

impl Router {
    pub(crate) fn inspect(&self, cx: &Context, now: Instant) -> Value {
        let mut sessions = Vec::new();
        for r in self.members.values() {
            let Some(s) = self.sessions.get(r) else { continue };
            let transport = |key: Option<crate::sfu::transport::TransportKey>| {
                key.and_then(|k| cx.transports.get(k)).map(|t| {
                    json!({
                        "id": t.id.to_string(),
                        "direction": if t.direction == Direction::Cts { "cts" } else { "stc" },
                        "connected": t.connected,
                        "addresses": t.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        "estimateBps": t.estimate,
                    })
                })
            };
            let producers: Vec<Value> = s
                .producers
                .iter()
                .flatten()
                .filter_map(|pk| self.producers.get(*pk))
                .map(|p| {
                    json!({
                        "id": p.id.to_string(),
                        "type": p.media.as_str(),
                        "paused": p.paused,
                        "bitrate": p.meter.rate(now),
                        "consumers": p.consumers.len(),
                        "layers": p.layers.iter().map(|l| json!({
                            "rid": l.rid.as_deref(),
                            "ssrc": l.ssrc,
                            "bitrate": l.meter.rate(now),
                            "active": l.meter.last_packet().is_some_and(|t| now.saturating_duration_since(t) < crate::sfu::forward::LAYER_SILENCE),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let consumers: Vec<Value> = s
                .consumers
                .values()
                .filter_map(|ck| self.consumers.get(*ck))
                .map(|c| {
                    let from = self
                        .producers
                        .get(c.producer)
                        .and_then(|p| self.sessions.get(&p.session))
                        .map(|p| p.id.to_value());
                    json!({
                        "id": c.id.to_string(),
                        "from": from,
                        "type": c.media.as_str(),
                        "acknowledged": c.acked,
                        "pausedBySubscriber": c.paused_by_subscriber,
                        "currentLayer": c.current,
                        "targetLayer": c.target,
                        "budgetBps": c.budget,
                        "switches": c.selector.switches,
                        "egress": match c.egress {
                            Egress::Direct(_) => "own",
                            Egress::Str0m => "str0m",
                            Egress::Undecided => "undecided",
                        },
                    })
                })
                .collect();
            sessions.push(json!({
                "sessionId": s.id.to_value(),
                "shard": s.remote.unwrap_or(cx.index),
                "connected": s.connected,
                "errors": s.errors,
                "info": s.info.to_value(),
                "transports": {"cts": transport(s.cts), "stc": transport(s.stc)},
                "producers": producers,
                "consumers": consumers,
            }));
        }
        json!({"uuid": self.id.to_string(), "webRtc": self.webrtc, "shard": cx.index, "sessions": sessions})
    }
}
