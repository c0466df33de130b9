//! A channel's router (mediasoup's name): the sessions of one call, what they publish
//! (producers) and receive (consumers), and the lone-session timer that closes it.
//!
//! The shard owns the routers and the transports; a router reaches its sessions' transports
//! through the [`Context`] the shard lends it with each call. Its methods are grouped by concern:
//!
//! - `sessions`: join, the bus messages, leave;
//! - `producers` and `consumers`: their lifecycle;
//! - `transports`: a transport's datagrams and `Rtc` events, SSRC binding;
//! - `forward`: the packet path, a producer's packet to each of its consumers;
//! - `ingress`: publishers' RTP opened by ringsfu, and what it answers them;
//! - `feedback`: subscribers' RTCP about the streams ringsfu sends;
//! - `bandwidth`: each subscriber's downlink split over its consumers;
//! - `inspect`: the operator's JSON picture of the channel.

mod bandwidth;
mod consumers;
mod feedback;
mod forward;
mod ingress;
mod inspect;
mod producers;
mod relay;
mod sessions;
mod transports;

pub use bandwidth::ALLOCATION_INTERVAL;
pub use feedback::is_rtcp;

use super::arena::{Arena, Key};
use super::command::ChannelStats;
use super::context::Context;
use super::ids::{ChannelId, SessionRef};
use super::outputs::Timer;
use crate::protocol::messages::MediaType;
use crate::protocol::{CloseCode, SessionId};
use crate::sfu::consumer::{Consumer, ConsumerKey, Egress};
use crate::sfu::producer::{Producer, ProducerKey};
use crate::sfu::session::Session;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A channel with at most one session closes after this long (upstream's channel timeout).
pub const LONE_CHANNEL_TIMEOUT: Duration = Duration::from_secs(3600);

pub type RouterKey = Key<Router>;

pub struct Router {
    key: RouterKey,
    id: ChannelId,
    webrtc: bool,
    /// The sessions, by their bus connection.
    sessions: HashMap<SessionRef, Session>,
    /// The bus connection of each Odoo session id (a rejoin replaces the old one).
    members: HashMap<SessionId, SessionRef>,
    producers: Arena<Producer>,
    consumers: Arena<Consumer>,
    /// When the channel closes unless a second session joins.
    close_at: Option<Instant>,
    /// The shards holding the other parts of this channel (docs/cross-shard.md).
    peers: SmallVec<[usize; 4]>,
    /// The mirrors of other parts' producers, by producer id.
    mirrors: HashMap<Uuid, ProducerKey>,
    /// The part the channel was created on; another part closes when its last session leaves.
    home: bool,
}

impl Router {
    pub(crate) fn new(key: RouterKey, id: ChannelId, webrtc: bool) -> Router {
        Router {
            key,
            id,
            webrtc,
            sessions: HashMap::new(),
            members: HashMap::new(),
            producers: Arena::default(),
            consumers: Arena::default(),
            close_at: None,
            peers: SmallVec::new(),
            mirrors: HashMap::new(),
            home: true,
        }
    }

    /// A part made for sessions placed on this shard, away from the channel's home.
    pub(crate) fn away_from_home(mut self) -> Router {
        self.home = false;
        self
    }

    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// When the lone-channel timer closes the channel, if armed.
    pub(crate) fn close_at(&self) -> Option<Instant> {
        self.close_at
    }

    /// This part's own sessions (not the mirrors of other parts').
    pub(crate) fn session_count(&self) -> usize {
        self.sessions.values().filter(|s| s.remote.is_none()).count()
    }

    pub fn producers(&self) -> impl Iterator<Item = (ProducerKey, &Producer)> {
        self.producers.iter()
    }

    pub fn consumers(&self) -> impl Iterator<Item = (ConsumerKey, &Consumer)> {
        self.consumers.iter()
    }

    pub(crate) fn consumers_mut(&mut self) -> impl Iterator<Item = (ConsumerKey, &mut Consumer)> {
        self.consumers.iter_mut()
    }

    /// Closes every session of this part (each gets `code`; nobody is told of the others
    /// leaving) and forgets the mirrors of the other parts' sessions.
    pub(crate) fn close_all(&mut self, cx: &mut Context, now: Instant, code: CloseCode, reason: &'static str) {
        for r in self.sessions_in_order() {
            if self.sessions.get(&r).is_some_and(|s| s.remote.is_some()) {
                self.remove_session(cx, now, r, false);
            } else {
                self.close_session(cx, now, r, code, reason, false);
            }
        }
    }

    /// Due sender reports of the streams ringsfu sends itself.
    pub(crate) fn sender_reports(&mut self, cx: &mut Context, now: Instant, wallclock: std::time::SystemTime) {
        let Context { transports, out, .. } = cx;
        for (_, c) in self.consumers.iter_mut() {
            let Egress::Direct(stream) = &mut c.egress else { continue };
            let Some(t) = transports.get_mut(c.transport) else { continue };
            let (Some(srtp), Some(dest)) = (t.srtp.as_mut(), t.media_dest) else { continue };
            out.transmit_with(dest, |buf| stream.sender_report(srtp, buf, now, wallclock));
        }
    }

    /// Arms the lone-channel timer at one session or fewer (if not armed yet); disarms it above.
    /// Only the channel's home part keeps the timer: its members are the whole channel's, and
    /// when it fires every part closes (`RelayMessage::Close`).
    pub(crate) fn update_close_timer(&mut self, cx: &mut Context, now: Instant) {
        if !self.home {
            return;
        }
        if self.members.len() > 1 {
            self.close_at = None;
        } else if self.close_at.is_none() {
            let at = now + LONE_CHANNEL_TIMEOUT;
            self.close_at = Some(at);
            cx.out.timers.schedule(at, Timer::ChannelClose(self.id));
        }
    }

    /// The channel's sessions in the order they connected to the bus: whatever is done for each
    /// of them (consumers created, their mids and SSRCs drawn) happens in the same order every
    /// time, not in the hash map's order.
    pub(crate) fn sessions_in_order(&self) -> SmallVec<[SessionRef; 16]> {
        let mut sessions: SmallVec<[SessionRef; 16]> = self.members.values().copied().collect();
        sessions.sort_unstable();
        sessions
    }

    pub(crate) fn stats(&self, now: Instant) -> ChannelStats {
        // This part's own sessions: the control plane sums the parts of a channel.
        let mut st = ChannelStats {
            channel: self.id,
            sessions: self.session_count(),
            camera_count: 0,
            screen_count: 0,
            audio_bitrate: 0,
            camera_bitrate: 0,
            screen_bitrate: 0,
        };
        for r in self.members.values() {
            let Some(s) = self.sessions.get(r).filter(|s| s.remote.is_none()) else { continue };
            // Upstream counts from the self-reported info, not from producers.
            st.camera_count += usize::from(s.info.is_camera_on == Some(true));
            st.screen_count += usize::from(s.info.is_screen_sharing_on == Some(true));
            for media in MediaType::ALL {
                let Some(p) = s.producers[media.index()].and_then(|pk| self.producers.get(pk)) else {
                    continue;
                };
                let rate = p.meter.rate(now);
                match media {
                    MediaType::Audio => st.audio_bitrate += rate,
                    MediaType::Camera => st.camera_bitrate += rate,
                    MediaType::Screen => st.screen_bitrate += rate,
                }
            }
        }
        st
    }
}
