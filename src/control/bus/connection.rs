//! One WebSocket of the bus: authenticate, join, then relay between the client and its shard —
//! client frames become shard commands, shard events become (batched) frames — and keep the
//! connection honest with timeouts and PINGs.

use super::batcher::Batcher;
use super::budget::SendBudget;
use super::credentials::{self, AuthError};
use crate::control::directory::ChannelEntry;
use crate::control::state::AppState;
use crate::runtime::outbox::{self, Inbox, SESSION_QUEUE_BYTES, SESSION_QUEUE_EVENTS};
use crate::runtime::shard::{ShardHandle, ShardMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use ringsfu_core::protocol::CloseCode;
use ringsfu_core::protocol::envelope::{self, Envelope};
use ringsfu_core::protocol::messages::{ClientMessage, name};
use ringsfu_core::sfu::{Command, JoinRefused, Reply, RequestFailed, SessionEvent, SessionRef};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::{Instant, sleep_until, timeout};

/// Time allowed for the first frame.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client has to answer one of our requests (upstream's bus default).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// A send that does not complete in this time means the peer stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// After our close frame, how long we read (and drop) what the client still sends while it
/// answers with its own: closing with unread data would reset the connection, and the client
/// would see 1006 instead of our code.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

enum Outstanding {
    Shard(u64),
    Ping,
}

struct Connection {
    state: AppState,
    socket: WebSocket,
    session: SessionRef,
    shard: ShardHandle,
    batcher: Batcher,
    pending: HashMap<String, (Outstanding, Instant)>,
    next_request: u64,
    next_ping: Instant,
    budget: SendBudget,
}

/// Why the connection ends.
enum End {
    /// The client left or the socket broke: tell the shard.
    ClientGone,
    /// We close with this code; tell the shard unless it asked for the close.
    Close { code: CloseCode, reason: Cow<'static, str>, tell_shard: bool },
}

pub async fn run(state: AppState, socket: WebSocket, remote: String) {
    state.metrics.ws_connections.inc();
    authenticate_and_serve(&state, socket, &remote).await;
    state.metrics.ws_connections.dec();
}

/// A session's place in its channel's spread, given back when the connection ends.
struct PlacedSession<'a> {
    channel: &'a ChannelEntry,
    shard: usize,
}

impl Drop for PlacedSession<'_> {
    fn drop(&mut self) {
        self.channel.session_ended(self.shard);
    }
}

async fn authenticate_and_serve(state: &AppState, mut socket: WebSocket, remote: &str) -> Option<()> {
    let first = match timeout(AUTH_TIMEOUT, first_frame(&mut socket)).await {
        Ok(Ok(frame)) => frame,
        Ok(Err(None)) => return None,
        Ok(Err(Some(e))) => {
            if let End::Close { code, reason, .. } = receive_error(&e) {
                close(state, &mut socket, code, reason).await;
            }
            return None;
        }
        Err(_) => {
            close(state, &mut socket, CloseCode::Timeout, "authentication timeout".into()).await;
            return None;
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let auth = match credentials::authenticate(&first, &state.directory, &state.config.auth_key, now) {
        Ok(a) => a,
        Err(e) => {
            state.auth_failures.record(remote, &e);
            let reason = match e {
                AuthError::Token(_) => "authentication failed".into(),
                other => other.to_string().into(),
            };
            close(state, &mut socket, CloseCode::AuthenticationFailed, reason).await;
            return None;
        }
    };
    let session = SessionRef(state.next_connection());
    // Its channel's home shard, or another when the channel outgrows it (docs/cross-shard.md).
    let cpu: Vec<f64> = state.load.latest().shards.iter().map(|s| s.cpu_usage).collect();
    let Some((placed, parts)) =
        auth.channel.place_session(&cpu, state.config.channel_shard_budget, state.config.channel_size)
    else {
        // Full over its parts: refused as a shard refuses, after the acknowledgement.
        if socket.send(Message::Text("".into())).await.is_ok() {
            close(state, &mut socket, CloseCode::ChannelFull, "channel is full".into()).await;
        }
        return None;
    };
    let _placed = PlacedSession { channel: &auth.channel, shard: placed };
    let shard = state.shards[placed].clone();
    if parts.len() > 1 {
        // The channel's part there (made if missing) meets the others before the join. At home
        // too: a part that lost touch with another (docs/cross-shard.md) meets it again so.
        let meet = Command::Meet { channel: auth.channel.id, webrtc: auth.channel.webrtc, shards: parts };
        shard.request(meet).await?;
    }
    let (outbox, mut events) = outbox::outbox(SESSION_QUEUE_EVENTS, SESSION_QUEUE_BYTES);
    shard.post(ShardMessage::Register { session, outbox }).then_some(())?;
    let join = Command::Join { channel: auth.channel.id, session, session_id: auth.session_id.clone() };
    let joined = shard.submit(join).await?;
    // The acknowledgement goes out before the join's outcome is known (upstream too: a full
    // channel closes with 4109 after it), but only once the join is queued: a disconnect sent
    // after the client saw the acknowledgement reaches the shard behind the join and finds the
    // session. One empty text frame, alone (clients take any first frame as it); shard events
    // wait in `events` until `serve` runs.
    if socket.send(Message::Text("".into())).await.is_err() {
        shard.tell(Command::Leave { session });
        return None;
    }
    match joined.await.ok() {
        Some(Reply::Joined) => {}
        Some(Reply::JoinRefused(JoinRefused::ChannelFull)) => {
            close(state, &mut socket, CloseCode::ChannelFull, "channel is full".into()).await;
            return None;
        }
        _ => {
            close(state, &mut socket, CloseCode::AuthenticationFailed, "channel does not exist".into()).await;
            return None;
        }
    }
    let mut conn = Connection {
        state: state.clone(),
        socket,
        session,
        shard,
        batcher: Batcher::default(),
        pending: HashMap::new(),
        next_request: 0,
        next_ping: Instant::now() + state.config.ping_interval,
        budget: SendBudget::new(),
    };
    let end = conn.serve(&mut events).await;
    match end {
        End::ClientGone => conn.shard.tell(Command::Leave { session }),
        End::Close { code, reason, tell_shard } => {
            if tell_shard {
                conn.shard.tell(Command::Leave { session });
            }
            close(state, &mut conn.socket, code, reason).await;
        }
    }
    Some(())
}

/// The first data frame (text, or binary holding UTF-8, as upstream accepts both); `Err(None)`
/// when the client left, `Err(Some(_))` when its frame broke a rule (too large).
async fn first_frame(socket: &mut WebSocket) -> Result<String, Option<axum::Error>> {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Binary(b))) => return Ok(String::from_utf8_lossy(&b).into_owned()),
            Some(Ok(Message::Close(_))) | None => return Err(None),
            Some(Err(e)) => return Err(Some(e)),
            Some(Ok(_)) => continue,
        }
    }
}

async fn close(state: &AppState, socket: &mut WebSocket, code: CloseCode, reason: Cow<'static, str>) {
    state.metrics.ws_closed.get_or_create(&crate::control::metrics::CloseLabels { code: code.code() }).inc();
    let frame = CloseFrame { code: code.code(), reason: reason.as_ref().into() };
    if timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await.is_err() {
        return;
    }
    // The closing handshake: drop what is still in flight until the client's close frame.
    let _ = timeout(CLOSE_LINGER, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

impl Connection {
    async fn serve(&mut self, events: &mut Inbox) -> End {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                frame = self.socket.recv() => {
                    let end = match frame {
                        None => Some(End::ClientGone),
                        Some(Err(e)) => Some(receive_error(&e)),
                        Some(Ok(Message::Text(text))) => self.on_frame(&text).await,
                        Some(Ok(Message::Binary(_))) => Some(End::Close {
                            code: CloseCode::UnsupportedData,
                            reason: "binary frames are not part of the protocol".into(),
                            tell_shard: true,
                        }),
                        Some(Ok(Message::Close(_))) => Some(End::ClientGone),
                        Some(Ok(_)) => None,
                    };
                    if let Some(end) = end {
                        return end;
                    }
                }
                event = events.recv() => {
                    let Some(event) = event else {
                        // The shard dropped us: this client did not read fast enough.
                        return End::Close { code: CloseCode::Error, reason: "connection too slow".into(), tell_shard: true };
                    };
                    if let Some(end) = self.on_event(event).await {
                        return end;
                    }
                }
                _ = sleep_until(deadline) => {
                    if let Some(end) = self.on_deadlines().await {
                        return end;
                    }
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut next = self.next_ping;
        if let Some(batch) = self.batcher.deadline() {
            next = next.min(Instant::from_std(batch));
        }
        for (_, at) in self.pending.values() {
            next = next.min(*at);
        }
        next
    }

    async fn on_frame(&mut self, text: &str) -> Option<End> {
        let envelopes = match envelope::decode_frame(text) {
            Ok(e) => e,
            Err(e) => {
                self.state.metrics.ws_rejected_frames.inc();
                return Some(End::Close {
                    code: CloseCode::InvalidPayload,
                    reason: e.to_string().into(),
                    tell_shard: true,
                });
            }
        };
        // Every envelope and byte is charged before any is acted on: a frame over the budget is
        // not relayed at all, and its sender (only its sender) is closed.
        if !self.budget.charge(envelopes.len(), text.len()) {
            self.state.metrics.ws_rejected_frames.inc();
            return Some(End::Close { code: CloseCode::Error, reason: "too many messages".into(), tell_shard: true });
        }
        for env in envelopes {
            match env {
                Envelope::Message { name, payload } => match ClientMessage::parse(&name, payload) {
                    Ok(message) => {
                        self.shard.tell(Command::FromClient { session: self.session, request: None, message })
                    }
                    Err(e) => {
                        self.state.metrics.ws_rejected_frames.inc();
                        tracing::debug!(connection = %self.session, error = %e, "message ignored");
                    }
                },
                Envelope::Request { id, name, payload } => match ClientMessage::parse(&name, payload) {
                    Ok(message) => {
                        self.shard.tell(Command::FromClient { session: self.session, request: Some(id), message })
                    }
                    Err(e) => {
                        self.state.metrics.ws_rejected_frames.inc();
                        let reply = envelope::to_text(&envelope::encode_response(&id, Err(e)));
                        if let Some(end) = self.send_frame(vec![reply]).await {
                            return Some(end);
                        }
                    }
                },
                Envelope::Response { id, message } => {
                    let Some(key) = id.as_str() else { continue };
                    match self.pending.remove(key) {
                        Some((Outstanding::Shard(token), _)) => self.shard.tell(Command::ClientReply {
                            session: self.session,
                            token,
                            result: Ok(message.unwrap_or(Value::Null)),
                        }),
                        Some((Outstanding::Ping, _)) | None => {}
                    }
                }
            }
        }
        None
    }

    async fn on_event(&mut self, event: SessionEvent) -> Option<End> {
        let now = std::time::Instant::now();
        match event {
            SessionEvent::Send { name, payload, batch } => {
                let text = envelope::to_text(&envelope::encode_message(name, payload));
                let frame = self.batcher.push(now, text, batch)?;
                self.send_frame(frame).await
            }
            SessionEvent::Broadcast { payload } => {
                let frame = self.batcher.push(now, envelope::broadcast_text(&payload), true)?;
                self.send_frame(frame).await
            }
            SessionEvent::Request { token, name, payload, batch } => {
                let id = self.request_id();
                self.pending.insert(id.clone(), (Outstanding::Shard(token), Instant::now() + REQUEST_TIMEOUT));
                let text = envelope::to_text(&envelope::encode_request(&id, name, payload));
                let frame = self.batcher.push(now, text, batch)?;
                self.send_frame(frame).await
            }
            SessionEvent::Reply { id, result } => {
                self.send_frame(vec![envelope::to_text(&envelope::encode_response(&id, result))]).await
            }
            SessionEvent::Close { code, reason } => Some(End::Close { code, reason, tell_shard: false }),
        }
    }

    async fn on_deadlines(&mut self) -> Option<End> {
        let now = Instant::now();
        if self.batcher.deadline().is_some_and(|d| Instant::from_std(d) <= now)
            && let Some(frame) = self.batcher.on_window_end()
            && let Some(end) = self.send_frame(frame).await
        {
            return Some(end);
        }
        let expired: Vec<String> =
            self.pending.iter().filter(|(_, (_, at))| *at <= now).map(|(k, _)| k.clone()).collect();
        for id in expired {
            match self.pending.remove(&id) {
                Some((Outstanding::Ping, _)) => {
                    return Some(End::Close {
                        code: CloseCode::Timeout,
                        reason: "ping timeout".into(),
                        tell_shard: true,
                    });
                }
                Some((Outstanding::Shard(token), _)) => self.shard.tell(Command::ClientReply {
                    session: self.session,
                    token,
                    result: Err(RequestFailed::TimedOut),
                }),
                None => {}
            }
        }
        if self.next_ping <= now {
            self.next_ping = now + self.state.config.ping_interval;
            let id = self.request_id();
            self.pending.insert(id.clone(), (Outstanding::Ping, now + PING_TIMEOUT));
            let text = envelope::to_text(&envelope::encode_request(&id, name::PING, Value::Null));
            if let Some(frame) = self.batcher.push(std::time::Instant::now(), text, true) {
                return self.send_frame(frame).await;
            }
        }
        None
    }

    fn request_id(&mut self) -> String {
        let id = format!("s_{}_{}", self.session.0, self.next_request);
        self.next_request += 1;
        id
    }

    async fn send_frame(&mut self, envelopes: Vec<String>) -> Option<End> {
        let text = envelope::encode_frame(&envelopes);
        match timeout(SEND_TIMEOUT, self.socket.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(End::ClientGone),
            Err(_) => {
                Some(End::Close { code: CloseCode::Error, reason: "client stopped reading".into(), tell_shard: true })
            }
        }
    }
}

fn receive_error(e: &axum::Error) -> End {
    let text = e.to_string();
    if text.contains("too long") || text.contains("Space limit") || text.contains("capacity") {
        End::Close { code: CloseCode::TooBig, reason: "frame too large".into(), tell_shard: true }
    } else {
        End::ClientGone
    }
}
