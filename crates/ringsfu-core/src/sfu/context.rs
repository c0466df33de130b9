//! What the shard lends a router with each call: the settings, the transports and their demux
//! table, the output queues, and the shard's randomness. A router owns its channel's sessions,
//! producers and consumers; what is shared by every channel of the shard is here.
//!
//! The transport-level work that needs no router is here too: draining an `Rtc` into the
//! queues, running its timers, learning and forgetting its addresses, closing it.

use super::allocator::PlanScratch;
use super::demux::Demux;
use super::outputs::{Outputs, Timer};
use super::settings::SfuSettings;
use super::transport::{HOUSEKEEPING_INTERVAL, MAX_ADDRS, MAX_RELEASES_PER_POKE, Transport, TransportKey};
use crate::protocol::messages::{Direction, DtlsRole};
use crate::sfu::arena::Arena;
use rand::rngs::StdRng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use str0m::Input;

pub struct Context {
    pub(crate) index: usize,
    pub(crate) settings: Arc<SfuSettings>,
    /// The address announced in candidates (`PUBLIC_IP:port`); str0m wants it as destination.
    pub(crate) local_addr: SocketAddr,
    pub(crate) transports: Arena<Transport>,
    pub(crate) demux: Demux<TransportKey>,
    pub(crate) out: Outputs,
    pub(crate) last_now: Instant,
    /// Where a subscriber's SRTCP is opened (one datagram at a time, reused).
    pub(crate) rtcp_scratch: Vec<u8>,
    /// Where subscribers' bandwidth plans are made (reused).
    pub(crate) plan: PlanScratch,
    pub(crate) rng: StdRng,
    next_token: u64,
    /// Sessions a router removed since the shard last looked: it forgets which router they
    /// were on.
    pub(crate) departed: Vec<crate::sfu::ids::SessionRef>,
    /// Parts away from their channel's home left without a session of their own: the shard
    /// closes them.
    pub(crate) closing: Vec<crate::sfu::router::RouterKey>,
}

impl Context {
    pub(crate) fn new(
        index: usize,
        settings: Arc<SfuSettings>,
        local_addr: SocketAddr,
        out: Outputs,
        now: Instant,
        rng: StdRng,
    ) -> Context {
        Context {
            index,
            settings,
            local_addr,
            transports: Arena::default(),
            demux: Demux::default(),
            out,
            last_now: now,
            rtcp_scratch: Vec::with_capacity(1500),
            plan: PlanScratch::default(),
            rng,
            next_token: 0,
            departed: Vec::new(),
            closing: Vec::new(),
        }
    }

    pub(crate) fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// A version-4 UUID from the shard's randomness.
    pub(crate) fn random_uuid(&mut self) -> uuid::Uuid {
        uuid::Builder::from_random_bytes(rand::Rng::random(&mut self.rng)).into_uuid()
    }

    pub(crate) fn learn_address(&mut self, key: TransportKey, source: SocketAddr) {
        if let Some(previous) = self.demux.learn(source, key)
            && let Some(p) = self.transports.get_mut(previous)
        {
            p.addrs.retain(|a| *a != source);
        }
        let t = &mut self.transports[key];
        if t.addrs.len() == MAX_ADDRS {
            let oldest = t.addrs.remove(0);
            self.demux.forget_addr(&oldest, key);
        }
        t.addrs.push(source);
    }

    /// Applies `CONNECT_*_TRANSPORT` parameters once both they and the `Rtc` exist.
    pub(crate) fn apply_dtls(&mut self, key: TransportKey) {
        let t = &mut self.transports[key];
        let (Some(rtc), Some(dtls)) = (t.rtc.as_mut(), t.dtls.as_ref()) else { return };
        if t.dtls_started {
            return;
        }
        // str0m verifies sha-256 (or sha-1) fingerprints; the caller already checked one exists.
        let Some(fp) = dtls
            .fingerprints
            .iter()
            .find(|(alg, _)| alg == "sha-256")
            .or_else(|| dtls.fingerprints.iter().find(|(alg, _)| alg == "sha-1"))
            .and_then(|(alg, value)| format!("{alg} {value}").parse().ok())
        else {
            return;
        };
        // The browser says "client" (mediasoup-client always does with role "auto"): we serve.
        let active = dtls.role == DtlsRole::Server;
        let mut api = rtc.direct_api();
        api.set_remote_fingerprint(fp);
        if api.start_dtls(active).is_ok() {
            t.dtls_started = true;
        }
        self.drain(key);
    }

    /// Drains an `Rtc` into the shard's queues (after every mutation, as str0m requires).
    pub(crate) fn drain(&mut self, key: TransportKey) {
        if let Some(t) = self.transports.get_mut(key) {
            self.out.drain(key, t);
        }
    }

    /// A deadline of the timer table for an `Rtc` came due.
    pub(crate) fn transport_timeout(&mut self, now: Instant, key: TransportKey, at: Instant) {
        let Some(t) = self.transports.get_mut(key) else { return };
        if t.armed != Some(at) {
            return; // superseded
        }
        t.armed = None;
        // A connected sending transport whose streams are all ringsfu's own asks str0m only for
        // housekeeping (its pacer alone wants a look every 40 ms): at most every
        // `HOUSEKEEPING_INTERVAL`. Inputs (STUN, RTCP) are still handled when they arrive.
        let earliest = match t.last_timer_poke {
            Some(last) if t.direction == Direction::Stc && t.connected && t.str0m_streams == 0 => {
                last + HOUSEKEEPING_INTERVAL
            }
            _ => now,
        };
        match t.timeout.map(|at| at.max(earliest)) {
            // The `Rtc` moved its deadline later since this one was armed.
            Some(later) if later > now => {
                t.armed = Some(later);
                self.out.timers.schedule(later, Timer::Rtc(key));
            }
            _ => {
                t.last_timer_poke = Some(now);
                self.poke(now, key);
            }
        }
    }

    /// Feeds the current time to an `Rtc`: releases queued RTP and runs its timers.
    ///
    /// With bandwidth estimation on, str0m's pacer releases one packet per timeout: while it keeps
    /// releasing and asks for the same instant again, it is fed that instant again, so everything
    /// queued leaves in this wake-up instead of one packet per trip through the timer table.
    pub(crate) fn poke(&mut self, now: Instant, key: TransportKey) {
        let Context { transports, out, .. } = self;
        let Some(t) = transports.get_mut(key) else { return };
        t.needs_poke = false;
        for _ in 0..MAX_RELEASES_PER_POKE {
            let Some(rtc) = t.rtc.as_mut() else { return };
            if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(transport = %t.id, error = %e, "timeout handling failed");
            }
            let queued = out.transmits.len();
            out.drain(key, t);
            if out.transmits.len() == queued || t.timeout.is_none_or(|at| at > now) {
                break;
            }
        }
    }

    /// Marks an `Rtc` as needing `poke` before the shard goes idle.
    pub(crate) fn needs_poke(&mut self, key: TransportKey) {
        if let Some(t) = self.transports.get_mut(key) {
            self.out.needs_poke(key, t);
        }
    }

    /// Forgets a transport: its demux entries, its `Rtc`.
    pub(crate) fn close_transport(&mut self, key: TransportKey) {
        let Some(t) = self.transports.remove(key) else { return };
        self.out.timers.cancel(Timer::Rtc(key));
        self.out.timers.cancel(Timer::ConsentLost(key));
        self.out.timers.cancel(Timer::Congestion(key));
        self.out.timers.cancel(Timer::Ingress(key));
        self.demux.unregister_ufrag(&t.ice.ufrag);
        for addr in &t.addrs {
            self.demux.forget_addr(addr, key);
        }
        // Dropping the Rtc is immediate and safe: it owns no threads or sockets.
        drop(t);
    }

    /// Sends an RTCP packet to the publisher of receiving transport `key` (after an empty
    /// receiver report): a keyframe request, a REMB. Returns false where ringsfu's own ingress
    /// does not serve that transport.
    pub(crate) fn send_to_publisher(&mut self, key: TransportKey, write: impl FnOnce(&mut Vec<u8>, u32)) -> bool {
        let Some(t) = self.transports.get_mut(key) else { return false };
        let (Some(ingress), Some(dest)) = (t.ingress.as_mut(), t.media_dest) else {
            return t.ingress.is_some();
        };
        self.out.transmit_with(dest, |buf| {
            ingress.seal(buf, &[], |buf, ssrc| {
                write(buf, ssrc);
                true
            })
        });
        true
    }
}
