//! A channel (mediasoup's router): the sessions of one call, and its lone-session timer.

use super::command::{ChannelStats, ShardEvent};
use super::ids::{ChannelId, SessionRef};
use super::shard::{Shard, Timer};
use crate::protocol::messages::MediaType;
use crate::protocol::{CloseCode, SessionId};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A channel with at most one session closes after this long (upstream's channel timeout).
pub const LONE_CHANNEL_TIMEOUT: Duration = Duration::from_secs(3600);

pub struct Channel {
    pub id: ChannelId,
    pub webrtc: bool,
    pub sessions: HashMap<SessionId, SessionRef>,
    /// When the channel closes unless a second session joins.
    pub close_at: Option<Instant>,
}

impl Shard {
    pub(crate) fn create_channel(&mut self, now: Instant, id: ChannelId, webrtc: bool) {
        if self.channels.contains_key(&id) {
            return;
        }
        self.channels.insert(id, Channel { id, webrtc, sessions: HashMap::new(), close_at: None });
        // Armed at creation, as upstream: a channel nobody joins goes away too.
        self.update_channel_timer(now, id);
        tracing::info!(channel = %id, webrtc, shard = self.index, "channel created");
    }

    /// Arms the lone-channel timer at one session or fewer (if not armed yet); disarms it above.
    pub(crate) fn update_channel_timer(&mut self, now: Instant, id: ChannelId) {
        let Some(ch) = self.channels.get_mut(&id) else { return };
        if ch.sessions.len() > 1 {
            ch.close_at = None;
        } else if ch.close_at.is_none() {
            let at = now + LONE_CHANNEL_TIMEOUT;
            ch.close_at = Some(at);
            self.out.timers.schedule(at, Timer::ChannelClose(id));
        }
    }

    pub(crate) fn channel_timeout(&mut self, now: Instant, id: ChannelId, at: Instant) {
        if self.channels.get(&id).and_then(|c| c.close_at) != Some(at) {
            return;
        }
        tracing::info!(channel = %id, "channel closed after an hour with at most one session");
        self.close_channel(now, id);
    }

    /// Closes every session of a channel (4108, no `SESSION_LEAVE`) and forgets the channel.
    pub(crate) fn close_channel(&mut self, now: Instant, id: ChannelId) {
        for r in self.channel_sessions(id) {
            self.close_session(now, r, CloseCode::Kicked, "channel closed", false);
        }
        self.channels.remove(&id);
        self.out.events.push_back(ShardEvent::ChannelClosed(id));
    }

    /// The channel's sessions in the order they connected to the bus: whatever is done for each
    /// of them (consumers created, their mids and SSRCs drawn) happens in the same order every
    /// time, not in the hash map's order.
    pub(crate) fn channel_sessions(&self, id: ChannelId) -> SmallVec<[SessionRef; 16]> {
        let mut sessions: SmallVec<[SessionRef; 16]> =
            self.channels.get(&id).map(|c| c.sessions.values().copied().collect()).unwrap_or_default();
        sessions.sort_unstable();
        sessions
    }

    pub(crate) fn stats(&self, now: Instant) -> Vec<ChannelStats> {
        self.channels
            .values()
            .map(|ch| {
                let mut st = ChannelStats {
                    channel: ch.id,
                    sessions: ch.sessions.len(),
                    camera_count: 0,
                    screen_count: 0,
                    audio_bitrate: 0,
                    camera_bitrate: 0,
                    screen_bitrate: 0,
                };
                for r in ch.sessions.values() {
                    let Some(s) = self.sessions.get(r) else { continue };
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
            })
            .collect()
    }
}
