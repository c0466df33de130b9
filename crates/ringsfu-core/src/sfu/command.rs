//! What the control plane asks of a shard, and what a shard tells the control plane.

use super::ids::{ChannelId, SessionRef};
use crate::protocol::{ClientMessage, CloseCode, RequestId, SessionId};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;

/// A request to a shard. Each gets a synchronous [`Reply`]; effects on sessions come out as
/// [`ShardEvent`]s.
#[derive(Debug)]
pub enum Command {
    CreateChannel {
        channel: ChannelId,
        webrtc: bool,
    },
    /// A WebSocket authenticated for `channel` as `session_id`.
    Join {
        channel: ChannelId,
        session: SessionRef,
        session_id: SessionId,
    },
    /// The WebSocket of `session` is gone.
    Leave {
        session: SessionRef,
    },
    /// A client message, or request when `request` is set.
    FromClient {
        session: SessionRef,
        request: Option<RequestId>,
        message: ClientMessage,
    },
    /// The client answered (or failed to answer) one of our requests.
    ClientReply {
        session: SessionRef,
        token: u64,
        result: Result<Value, RequestFailed>,
    },
    /// `/v1/disconnect`: close these sessions of `channel` (4108).
    Kick {
        channel: ChannelId,
        session_ids: Vec<SessionId>,
    },
    Stats,
    /// A JSON description of one channel's sessions, producers and consumers (debug view).
    Inspect {
        channel: ChannelId,
    },
    /// Close every session and channel (end of the drain grace period).
    CloseAll,
    /// Liveness probe for `/health/ready`.
    Ping,
    /// The channel's parts on other shards (docs/cross-shard.md), its home first: this shard's
    /// part (made if missing, unless this is the home, whose part is the channel) joins them,
    /// and they tell it what they hold.
    Meet {
        channel: ChannelId,
        webrtc: bool,
        shards: Vec<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFailed {
    /// No reply within the bus request timeout.
    TimedOut,
    /// The connection closed before the reply.
    Closed,
}

#[derive(Debug)]
pub enum Reply {
    Done,
    Joined,
    JoinRefused(JoinRefused),
    Stats(Vec<ChannelStats>),
    Inspect(Option<Value>),
    Pong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    UnknownChannel,
    ChannelFull,
}

/// The per-channel figures of `/v1/stats` that live on the shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub channel: ChannelId,
    pub sessions: usize,
    pub camera_count: usize,
    pub screen_count: usize,
    /// Incoming bit/s by producer type.
    pub audio_bitrate: u64,
    pub camera_bitrate: u64,
    pub screen_bitrate: u64,
}

impl ChannelStats {
    /// Adds another part's figures of the same channel (a channel spread over shards).
    pub fn add(&mut self, part: &ChannelStats) {
        self.sessions += part.sessions;
        self.camera_count += part.camera_count;
        self.screen_count += part.screen_count;
        self.audio_bitrate += part.audio_bitrate;
        self.camera_bitrate += part.camera_bitrate;
        self.screen_bitrate += part.screen_bitrate;
    }
}

/// Output of a shard for the control plane.
#[derive(Debug)]
pub enum ShardEvent {
    ToSession(SessionRef, SessionEvent),
    /// The channel closed by itself (lone-session timer); forget it.
    ChannelClosed(ChannelId),
}

/// What a session's WebSocket should do.
#[derive(Debug)]
pub enum SessionEvent {
    /// A one-way message.
    Send { name: &'static str, payload: Value, batch: bool },
    /// A `BROADCAST` (batched): its payload `{"senderId", "message"}`, serialized once and shared
    /// by every receiver, so a broadcast costs its size once, not once per session.
    Broadcast { payload: Arc<str> },
    /// A request; the reply comes back as [`Command::ClientReply`] with `token`.
    Request { token: u64, name: &'static str, payload: Value, batch: bool },
    /// The reply to a client request.
    Reply { id: RequestId, result: Result<Option<Value>, String> },
    /// Close the WebSocket; the shard has already forgotten the session.
    Close { code: CloseCode, reason: Cow<'static, str> },
}

impl SessionEvent {
    /// About what this event adds to its session's queue, in bytes: the size of its JSON, which is
    /// what bounds a lagging WebSocket's queue (a shared broadcast counts for every receiver, since
    /// each one that lags holds it).
    pub fn queued_bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + match self {
                SessionEvent::Send { name, payload, .. } | SessionEvent::Request { name, payload, .. } => {
                    name.len() + json_len(payload)
                }
                SessionEvent::Broadcast { payload } => payload.len(),
                SessionEvent::Reply { result: Ok(Some(v)), .. } => json_len(v),
                SessionEvent::Reply { result: Err(e), .. } => e.len(),
                SessionEvent::Reply { result: Ok(None), .. } => 0,
                SessionEvent::Close { reason, .. } => reason.len(),
            }
    }
}

/// The length of `value`'s JSON text, near enough (escapes not counted), without writing it.
fn json_len(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_len(v) + 1).sum::<usize>(),
        Value::Object(map) => 2 + map.iter().map(|(k, v)| k.len() + 4 + json_len(v)).sum::<usize>(),
    }
}
