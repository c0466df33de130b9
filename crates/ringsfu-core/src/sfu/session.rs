//! A session: one participant of a channel (one WebSocket), its transports, what it publishes
//! and receives, and its requests the client has not answered yet. What the bus does with it
//! (join, info, broadcast, leave) is its router's: `router::sessions`.

use super::consumer::ConsumerKey;
use super::ids::{ChannelId, SessionRef};
use super::ortc::DeviceCaps;
use super::producer::ProducerKey;
use super::transport::TransportKey;
use crate::protocol::{SessionId, SessionInfo};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A session must answer `INIT_TRANSPORTS` within this time (upstream's session timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Errors a session may cause before it is closed with 1011 (upstream closes on the 7th).
pub const MAX_ERRORS: u32 = 6;

/// A request of ours the client has not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    InitTransports,
    InitConsumer(ConsumerKey),
}

pub struct Session {
    /// The shard a mirrored session lives on (`None`: this part's own).
    pub(crate) remote: Option<usize>,
    pub(crate) id: SessionId,
    pub(crate) channel: ChannelId,
    /// `INIT_TRANSPORTS` answered (at once for channels without media).
    pub(crate) connected: bool,
    pub(crate) info: SessionInfo,
    pub(crate) errors: u32,
    pub(crate) connect_deadline: Option<Instant>,
    /// When it joined, until its first transport connects (then the join time is counted).
    pub(crate) joined_at: Option<Instant>,
    pub(crate) cts: Option<TransportKey>,
    pub(crate) stc: Option<TransportKey>,
    /// The device capabilities from the `INIT_TRANSPORTS` reply; `None` when invalid.
    pub(crate) device: Option<DeviceCaps>,
    pub(crate) producers: [Option<ProducerKey>; 3],
    /// What this session receives, by producer.
    pub(crate) consumers: HashMap<ProducerKey, ConsumerKey>,
    pub(crate) pending: HashMap<u64, Pending>,
    /// Publishing sessions with a consumer-creation retry scheduled (at most one each).
    pub(crate) retrying: HashSet<SessionRef>,
}

impl Session {
    /// A session joining this part: connected at once in a channel without media, otherwise
    /// once it answers `INIT_TRANSPORTS`.
    pub(crate) fn joining(id: SessionId, channel: ChannelId, webrtc: bool, now: Instant) -> Session {
        Session::new(None, id, channel, !webrtc, SessionInfo::default(), webrtc.then_some(now))
    }

    /// The mirror of a connected session of the channel's part on shard `remote`.
    pub(crate) fn mirror(remote: usize, id: SessionId, channel: ChannelId, info: SessionInfo) -> Session {
        Session::new(Some(remote), id, channel, true, info, None)
    }

    fn new(
        remote: Option<usize>,
        id: SessionId,
        channel: ChannelId,
        connected: bool,
        info: SessionInfo,
        joined_at: Option<Instant>,
    ) -> Session {
        Session {
            remote,
            id,
            channel,
            connected,
            info,
            errors: 0,
            connect_deadline: None,
            joined_at,
            cts: None,
            stc: None,
            device: None,
            producers: [None; 3],
            consumers: HashMap::new(),
            pending: HashMap::new(),
            retrying: HashSet::new(),
        }
    }
}
