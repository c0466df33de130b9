//! Each subscriber's downlink: its estimate (ringsfu's own estimator from the subscriber's
//! transport-wide feedback when ringsfu sends the video itself, else str0m's, or REMB), capped by `MAX_BITRATE_OUT`, is split over its consumers by the
//! allocator, and each video consumer's selector turns its share into a target layer. Also keeps
//! publishers under `MAX_BITRATE_IN` with REMB.

use super::Router;
use crate::protocol::messages::MediaType;
use crate::sfu::allocator::INITIAL_ESTIMATE;
use crate::sfu::allocator::{Claim, allocate};
use crate::sfu::context::Context;
use crate::sfu::forward::LAYER_SILENCE;
use crate::sfu::forward::layer::{LayerInfo, SelectorConfig};
use crate::sfu::ingress::rtcp_out;
use crate::sfu::producer::ProducerKey;
use crate::sfu::transport::TransportKey;
use smallvec::SmallVec;
use std::time::{Duration, Instant};
use str0m::bwe::Bitrate;
use str0m::media::MediaKind;

/// How often every subscriber's allocation is re-planned (estimates also trigger it).
pub const ALLOCATION_INTERVAL: Duration = Duration::from_millis(200);

impl Router {
    /// Re-plans one subscriber: budgets per consumer, target layers, the probing target.
    pub(crate) fn allocate(&mut self, cx: &mut Context, now: Instant, stc: TransportKey) {
        let Some(t) = cx.transports.get(stc) else { return };
        let available = t.estimate.unwrap_or(INITIAL_ESTIMATE).min(cx.settings.max_bitrate_out);
        // Reused across plans (taken out while `self` is borrowed): nothing is allocated once
        // they have grown to the largest subscriber's consumer count.
        let mut plan = std::mem::take(&mut cx.plan);
        plan.keys.clear();
        plan.claims.clear();
        for &ck in t.consumers_by_mid.values() {
            let Some(c) = self.consumers.get(ck) else { continue };
            let Some(p) = self.producers.get(c.producer) else { continue };
            if !c.is_active(p.paused) {
                continue;
            }
            let rates: SmallVec<[u64; 4]> =
                p.layers.iter().filter(|l| is_arriving(l, now)).map(|l| l.meter.rate(now)).collect();
            // Headroom above the top layer, so a budget can show the selector that the layer fits
            // with its margin (and the estimator has something to probe towards).
            let (minimum, maximum) = match (rates.first(), rates.last()) {
                (Some(lo), Some(hi)) => (*lo, hi + hi / 5),
                _ => (0, 0),
            };
            plan.keys.push(ck);
            plan.claims.push(Claim { media: c.media, minimum, maximum });
        }
        allocate(available, &plan.claims, &mut plan.budgets, &mut plan.order);
        let config = SelectorConfig::default();
        let mut wanted: u64 = 0;
        for (i, ck) in plan.keys.iter().enumerate() {
            wanted += plan.claims[i].maximum;
            let c = &mut self.consumers[*ck];
            c.budget = plan.budgets[i];
            if c.kind != MediaKind::Video {
                continue;
            }
            let p = &self.producers[c.producer];
            let layers: SmallVec<[LayerInfo; 4]> = p
                .layers
                .iter()
                .map(|l| LayerInfo { bitrate: l.meter.measured_rate(now), active: is_arriving(l, now) })
                .collect();
            let before = c.selector.switches;
            let target = c.selector.update(&config, now, plan.budgets[i], &layers);
            cx.out.counters.layer_switches += c.selector.switches - before;
            if target != c.target {
                c.target = target;
                if let Some(layer) = target.filter(|l| c.current != Some(*l)) {
                    let producer = c.producer;
                    self.request_keyframe(cx, now, producer, layer);
                }
            }
        }
        cx.plan = plan;
        // Ask str0m to probe up to what the consumers could use.
        let desired = wanted.min(cx.settings.max_bitrate_out).max(INITIAL_ESTIMATE);
        let Some(t) = cx.transports.get_mut(stc) else { return };
        if let Some(estimator) = t.estimator.as_mut() {
            estimator.set_desired(desired, now);
            super::feedback::arm_estimator(&mut cx.out.timers, stc, estimator, now);
        } else if let Some(rtc) = t.rtc.as_mut() {
            rtc.bwe().set_bitrate(Bitrate::ZERO, Bitrate::bps(desired));
            cx.drain(stc);
        }
    }

    /// The periodic planning tick of every subscriber; with `remind`, `MAX_BITRATE_IN` reminders
    /// to the publishers.
    pub(crate) fn bandwidth_tick(&mut self, cx: &mut Context, now: Instant, remind: bool) {
        let sending: SmallVec<[TransportKey; 32]> = self
            .sessions_in_order()
            .iter()
            .filter_map(|r| self.sessions.get(r)?.stc)
            .filter(|k| cx.transports.get(*k).is_some_and(|t| !t.consumers_by_mid.is_empty()))
            .collect();
        for key in sending {
            self.allocate(cx, now, key);
        }
        if remind {
            self.remind_publishers(cx);
        }
    }

    /// REMB with `MAX_BITRATE_IN` on every incoming video stream (mediasoup's
    /// `setMaxIncomingBitrate`): browsers cap their sending at it.
    fn remind_publishers(&mut self, cx: &mut Context) {
        let limit = Bitrate::bps(cx.settings.max_bitrate_in);
        let mut touched: SmallVec<[TransportKey; 32]> = SmallVec::new();
        let video: SmallVec<[ProducerKey; 32]> = self
            .producers
            .iter()
            .filter(|(_, p)| p.kind() == MediaKind::Video && p.media != MediaType::Audio)
            .map(|(k, _)| k)
            .collect();
        for pk in video {
            let p = &self.producers[pk];
            // A mirror's publisher is reminded by its own part.
            let Some(transport) = p.transport else { continue };
            let ssrcs: SmallVec<[u32; 3]> = p.layers.iter().filter_map(|l| l.ssrc).collect();
            let sent = cx.send_to_publisher(transport, |buf, sender| {
                rtcp_out::remb(buf, sender, limit.as_u64(), &ssrcs);
            });
            if sent {
                continue;
            }
            let p = &self.producers[pk];
            let Some(rtc) = cx.transports.get_mut(transport).and_then(|t| t.rtc.as_mut()) else { continue };
            let mut api = rtc.direct_api();
            for ssrc in p.layers.iter().filter_map(|l| l.ssrc) {
                if let Some(rx) = api.stream_rx(&ssrc.into()) {
                    rx.request_remb(limit);
                }
            }
            if !touched.contains(&transport) {
                touched.push(transport);
            }
        }
        for key in touched {
            cx.drain(key);
            cx.needs_poke(key);
        }
    }
}

fn is_arriving(layer: &crate::sfu::producer::Layer, now: Instant) -> bool {
    layer.meter.last_packet().is_some_and(|t| now.saturating_duration_since(t) < LAYER_SILENCE)
}
