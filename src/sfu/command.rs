//! What the control plane asks of a shard, and what a shard tells the control plane.

use super::ids::{ChannelId, SessionRef};
use crate::protocol::{ClientMessage, CloseCode, RequestId, SessionId};
use serde_json::Value;
use std::borrow::Cow;

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
    /// A request; the reply comes back as [`Command::ClientReply`] with `token`.
    Request { token: u64, name: &'static str, payload: Value, batch: bool },
    /// The reply to a client request.
    Reply { id: RequestId, result: Result<Option<Value>, String> },
    /// Close the WebSocket; the shard has already forgotten the session.
    Close { code: CloseCode, reason: Cow<'static, str> },
}
