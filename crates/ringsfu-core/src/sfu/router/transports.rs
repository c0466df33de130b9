//! A transport's datagrams and its `Rtc`'s events, as far as they concern the channel: ICE
//! and DTLS go to str0m, RTCP and RTP to the router's own paths, and unknown SSRCs are bound to
//! the producer layer they carry.

use super::Router;
use crate::protocol::messages::Direction;
use crate::sfu::context::Context;
use crate::sfu::counters::DropReason;
use crate::sfu::demux::{self};
use crate::sfu::ingress::Ingress;
use crate::sfu::ortc::producer_params::ProducerParams;
use crate::sfu::outputs::Timer;
use crate::sfu::producer::ProducerKey;
use crate::sfu::srtp::{SrtcpReceiver, SrtpSender};
use crate::sfu::transport::{MAX_EARLY_STUN, SsrcBinding, SsrcRoute, TransportKey, build_receiving_rtc};
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::time::Instant;
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState};
use str0m::{IceCreds, Input};

impl Router {
    pub(crate) fn feed_transport(
        &mut self,
        cx: &mut Context,
        now: Instant,
        key: TransportKey,
        proto: Protocol,
        source: SocketAddr,
        data: &[u8],
    ) {
        let local = cx.local_addr;
        let Some(t) = cx.transports.get_mut(key) else { return };
        let is_stun = demux::is_stun(data);
        let Some(rtc) = t.rtc.as_mut() else {
            // Receiving transport without its first producer yet: keep a few binding requests.
            if is_stun && t.early_stun.len() < MAX_EARLY_STUN {
                t.early_stun.push((proto, source, data.to_vec()));
            } else {
                cx.out.counters.drop(DropReason::Rejected);
            }
            return;
        };
        // Parsed once: the integrity checks below and str0m's handling share it.
        let Ok(receive) = Receive::new(proto, source, local, data) else {
            cx.out.counters.drop(DropReason::Rejected);
            return;
        };
        let input = Input::Receive(now, receive);
        let known_source = t.addrs.contains(&source);
        if is_stun && !known_source {
            // Only an authenticated binding request (our ufrag, our password) binds an address.
            if !rtc.accepts(&input) {
                cx.out.counters.drop(DropReason::Rejected);
                return;
            }
            if t.remote_ufrag.is_none() {
                // mediasoup-client never sends its ICE credentials; an ICE-lite agent only needs
                // the browser's ufrag, from USERNAME `<ours>:<theirs>`.
                if let Ok(msg) = str0m::ice::StunMessage::parse(data)
                    && let Some((_, remote)) = msg.split_username()
                {
                    let remote = remote.to_string();
                    rtc.direct_api()
                        .set_remote_ice_credentials(IceCreds { ufrag: remote.clone(), pass: String::new() });
                    t.remote_ufrag = Some(remote);
                    cx.drain(key);
                }
            }
            cx.learn_address(key, source);
        } else if !known_source && !is_stun {
            // Media from an address that never passed ICE.
            cx.out.counters.drop(DropReason::UnknownSource);
            return;
        }
        if is_stun && demux::stun_nominates(data) {
            // The browser's choice of path, once its integrity is checked (a new source was
            // checked above): media follows it.
            let t = &mut cx.transports[key];
            let authentic = !known_source || t.rtc.as_ref().is_some_and(|rtc| rtc.accepts(&input));
            if authentic {
                t.media_dest = Some(source);
            }
        }
        // The subscriber's RTCP about ringsfu's own streams is read here, not by str0m.
        if super::feedback::is_rtcp(data)
            && cx.transports[key].rtcp_in.is_some()
            && !self.receive_rtcp(cx, now, key, source, data)
        {
            return;
        }
        // A publisher's RTP, where ringsfu opens it itself: str0m never sees it.
        if cx.transports[key].ingress.is_some() && demux::is_rtp(data) {
            self.receive_media(cx, now, key, data);
            return;
        }
        if let SsrcBinding::Unknown = self.bind_unknown_ssrc(cx, key, data) {
            cx.out.counters.drop(DropReason::UnknownStream);
        }
        let t = &mut cx.transports[key];
        let rtc = t.rtc.as_mut().expect("checked above");
        match rtc.handle_input(input) {
            Ok(()) => {}
            Err(e) => {
                tracing::trace!(transport = %t.id, error = %e, "datagram refused");
                cx.out.counters.drop(DropReason::Rejected);
            }
        }
        cx.drain(key);
    }

    /// Receiving transports: bind an SSRC seen for the first time to its producer layer, from
    /// the mid/rid/rrid header extensions (simulcast browsers announce no SSRCs).
    pub(crate) fn bind_unknown_ssrc(&mut self, cx: &mut Context, key: TransportKey, data: &[u8]) -> SsrcBinding {
        let t = &cx.transports[key];
        if t.direction != Direction::Cts {
            return SsrcBinding::NotRtp;
        }
        let Some(ssrc) = demux::rtp_ssrc(data) else {
            return SsrcBinding::NotRtp;
        };
        if t.ssrcs.contains_key(&ssrc) {
            return SsrcBinding::Known;
        }
        let Some(peek) = demux::peek_rtp(data, t.peek) else {
            return SsrcBinding::NotRtp;
        };
        let Some(route) = self.resolve_ssrc(cx, key, &peek) else { return SsrcBinding::Unknown };
        self.bind_ssrc(cx, key, route.producer, route.layer, peek.ssrc, route.rtx);
        SsrcBinding::Known
    }

    /// Which producer layer an unknown SSRC of receiving transport `key` belongs to, from the
    /// mid/rid/rrid header extensions of its packet (nothing is bound: the packet may not be
    /// authentic yet).
    pub(crate) fn resolve_ssrc(&self, cx: &Context, key: TransportKey, peek: &demux::RtpPeek) -> Option<SsrcRoute> {
        let s = self.sessions.get(&cx.transports.get(key)?.session)?;
        // Which producer: by mid; without a mid extension, the one producer that has this rid.
        let producers: SmallVec<[ProducerKey; 3]> = s.producers.iter().flatten().copied().collect();
        let by_mid = peek.mid.and_then(|m| {
            producers.iter().copied().find(|pk| self.producers[*pk].params.mid.as_deref().map(str::as_bytes) == Some(m))
        });
        let producer = by_mid.or_else(|| {
            let rid = peek.rid.or(peek.rrid)?;
            let mut with_rid = producers.iter().copied().filter(|pk| self.producers[*pk].layer_of_rid(rid).is_some());
            let first = with_rid.next()?;
            with_rid.next().is_none().then_some(first)
        })?;
        let p = &self.producers[producer];
        let (layer, rtx) = if let Some(rrid) = peek.rrid {
            (p.layer_of_rid(rrid)?, true)
        } else if let Some(rid) = peek.rid {
            (p.layer_of_rid(rid)?, false)
        } else if p.params.encodings.len() == 1 {
            // A single encoding announced without SSRC: main or RTX by payload type.
            (0, p.params.codecs.iter().any(|c| c.rtx_payload_type == Some(peek.payload_type)))
        } else {
            return None;
        };
        Some(SsrcRoute { producer, layer, rtx })
    }

    /// Announces an SSRC of a producer layer to the receiving `Rtc`.
    pub(crate) fn bind_ssrc(
        &mut self,
        cx: &mut Context,
        key: TransportKey,
        producer: ProducerKey,
        layer: u8,
        ssrc: u32,
        rtx: bool,
    ) {
        let p = &mut self.producers[producer];
        let mid = p.mid;
        let is_video = p.params.kind == str0m::media::MediaKind::Video;
        let l = &mut p.layers[layer as usize];
        let replaced = if rtx { l.rtx_ssrc.replace(ssrc) } else { l.ssrc.replace(ssrc) };
        let (main, rtx_ssrc, rid) = (l.ssrc, l.rtx_ssrc, l.rid);
        let t = &mut cx.transports[key];
        // A layer has one SSRC (and one RTX SSRC) at a time: the route of the one it replaces
        // goes, so a publisher cycling SSRCs cannot grow the table.
        if let Some(old) = replaced.filter(|old| *old != ssrc) {
            t.ssrcs.remove(&old);
        }
        t.ssrcs.insert(ssrc, SsrcRoute { producer, layer, rtx });
        let Some(main) = main else {
            // RTX before its main stream: the route is kept, str0m learns it with the main SSRC.
            return;
        };
        if t.ingress.is_some() {
            // ringsfu opens this publisher's packets: str0m never sees them, and a stream it
            // expected would only make it send the publisher receiver reports of its own.
            return;
        }
        let rtc = t.rtc.as_mut().expect("receiving transports with producers have an Rtc");
        let mut api = rtc.direct_api();
        let rx = api.expect_stream_rx(main.into(), rtx_ssrc.map(Into::into), mid, rid);
        rx.suppress_nack(!is_video);
        cx.drain(key);
    }

    /// Builds the receiving `Rtc` for its first producer and replays early STUN.
    pub(crate) fn ensure_receiving_rtc(
        &mut self,
        cx: &mut Context,
        now: Instant,
        key: TransportKey,
        first: &ProducerParams,
    ) {
        let candidate = cx.local_addr;
        let t = &mut cx.transports[key];
        if t.rtc.is_some() {
            return;
        }
        let (rtc, pts, exts, slot) = build_receiving_rtc(&cx.settings, &t.ice, now, candidate, first);
        t.rtc = Some(Box::new(rtc));
        t.built_payload_types = pts;
        t.built_extensions = exts;
        t.peek = t.peek_ids();
        t.keys = slot;
        if first.extensions.twcc.is_some() {
            t.rtc.as_mut().expect("just built").direct_api().enable_twcc_feedback();
        }
        cx.drain(key);
        cx.apply_dtls(key);
        let early = std::mem::take(&mut cx.transports[key].early_stun);
        for (proto, source, data) in early {
            self.feed_transport(cx, now, key, proto, source, &data);
        }
    }

    pub(crate) fn handle_rtc_event(&mut self, cx: &mut Context, now: Instant, key: TransportKey, event: Event) {
        match event {
            Event::RtpPacket(packet) => self.forward_rtp(cx, now, key, packet),
            Event::KeyframeRequest(request) => {
                if let Some(&ck) = cx.transports.get(key).and_then(|t| t.consumers_by_mid.get(&request.mid)) {
                    self.subscriber_lost_picture(cx, now, ck);
                }
            }
            Event::Connected => {
                let rtcp_ssrc: u32 = rand::Rng::random(&mut cx.rng);
                let own_ingress = cx.settings.own_ingress;
                let Some(t) = cx.transports.get_mut(key) else { return };
                t.connected = true;
                if let Some(joined) = self.sessions.get_mut(&t.session).and_then(|s| s.joined_at.take()) {
                    cx.out.counters.joins.record(now.saturating_duration_since(joined).as_millis() as u64, 1);
                }
                let keys = t.keys.take().and_then(|slot| slot.take());
                if t.direction == Direction::Cts {
                    // The publisher's side: ringsfu's own ingress where it can open the packets;
                    // str0m's receive path otherwise (and its RTCP then goes to str0m too).
                    t.ingress = keys
                        .as_ref()
                        .filter(|_| own_ingress)
                        .and_then(|k| Ingress::new(k, rtcp_ssrc, now))
                        .map(Box::new);
                    if t.ingress.is_some() {
                        t.rtcp_in = keys.as_ref().and_then(SrtcpReceiver::new);
                        // The streams str0m was told to expect before DTLS are ringsfu's now.
                        if let Some(rtc) = t.rtc.as_mut() {
                            let mut api = rtc.direct_api();
                            for (ssrc, route) in t.ssrcs.iter() {
                                if !route.rtx {
                                    api.remove_stream_rx((*ssrc).into());
                                }
                            }
                        }
                        cx.out.drain(key, t);
                    }
                } else {
                    t.srtp = keys.as_ref().and_then(SrtpSender::new);
                    t.rtcp_in = keys.as_ref().and_then(SrtcpReceiver::new);
                }
                tracing::debug!(transport = %t.id, direction = ?t.direction, own_srtp = t.srtp.is_some(), "transport connected");
                // Consumers that were waiting for DTLS need a keyframe to start.
                let consumers: Vec<_> = t.consumers_by_mid.values().copied().collect();
                for ck in consumers {
                    self.decide_egress(cx, ck);
                    self.consumer_state_changed(cx, now, ck);
                }
            }
            Event::IceConnectionStateChange(state) => {
                let Some(t) = cx.transports.get_mut(key) else { return };
                tracing::debug!(transport = %t.id, ?state, "ICE state");
                if state == IceConnectionState::Disconnected {
                    tracing::info!(transport = %t.id, "transport lost ICE consent (no binding request for 15 s)");
                    t.consent_lost = Some(now);
                    if let Some(grace) = cx.settings.consent_timeout {
                        cx.out.timers.schedule(now + grace, Timer::ConsentLost(key));
                    }
                } else {
                    t.consent_lost = None;
                }
            }
            // ringsfu's own estimator, where there is one, is the transport's estimate.
            Event::EgressBitrateEstimate(_) if cx.transports.get(key).is_some_and(|t| t.estimator.is_some()) => {}
            Event::EgressBitrateEstimate(estimate) => {
                let bps = match estimate {
                    str0m::bwe::BweKind::Twcc { estimate, .. } => estimate.as_u64(),
                    str0m::bwe::BweKind::Remb { estimate, .. } => estimate.as_u64(),
                    _ => return,
                };
                if let Some(t) = cx.transports.get_mut(key) {
                    t.estimate = Some(bps);
                }
                self.allocate(cx, now, key);
            }
            _ => {}
        }
    }
}
