//! A [`Participant`] on real sockets: a tokio task drives its WebSocket and two UDP sockets.
//! Tests and the load generator act on it and inspect it through [`Live::with`].

use super::link::{Bottleneck, Link};
use super::participant::Participant;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

struct Shared {
    participant: Mutex<Participant>,
    wake: Notify,
    /// `Some(code)` once the server closed the WebSocket (`None` inside: no close frame).
    closed: Mutex<Option<Option<u16>>>,
    stop: AtomicBool,
    /// The UDP path is dead both ways (the WebSocket still works).
    offline: AtomicBool,
    /// A constrained downlink (what arrives on the receiving transport), and what it dropped.
    downlink: Mutex<Option<Bottleneck>>,
    pub dropped: std::sync::atomic::AtomicU64,
}

pub struct Live {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Live {
    /// Connects, authenticates (`{channelUUID, jwt}`, waiting for the `""` acknowledgement) and
    /// starts driving the participant.
    pub async fn connect(
        ws_url: &str,
        channel: &str,
        jwt: &str,
        session_id: Value,
        ip: IpAddr,
    ) -> Result<Live, String> {
        let cts = UdpSocket::bind((ip, 0)).await.map_err(|e| e.to_string())?;
        let stc = UdpSocket::bind((ip, 0)).await.map_err(|e| e.to_string())?;
        let (mut ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(ws_url))
            .await
            .map_err(|_| "WebSocket connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let credentials = json!({"channelUUID": channel, "jwt": jwt}).to_string();
        ws.send(Message::Text(credentials.into())).await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.is_empty() => {}
            other => return Err(format!("no acknowledgement: {other:?}")),
        }
        let participant = Participant::new(
            session_id,
            cts.local_addr().map_err(|e| e.to_string())?,
            stc.local_addr().map_err(|e| e.to_string())?,
        );
        let shared = Arc::new(Shared {
            participant: Mutex::new(participant),
            wake: Notify::new(),
            closed: Mutex::new(None),
            stop: AtomicBool::new(false),
            offline: AtomicBool::new(false),
            downlink: Mutex::new(None),
            dropped: std::sync::atomic::AtomicU64::new(0),
        });
        let task = tokio::spawn(drive(shared.clone(), ws, cts, stc));
        Ok(Live { shared, task })
    }

    /// Acts on or inspects the participant; its outputs are sent right after.
    pub fn with<R>(&self, f: impl FnOnce(&mut Participant, Instant) -> R) -> R {
        let result = {
            let mut p = self.shared.participant.lock().expect("participant lock");
            f(&mut p, Instant::now())
        };
        self.shared.wake.notify_one();
        result
    }

    /// Polls `done` every 20 ms until it holds or `limit` passes.
    pub async fn wait_for(&self, limit: Duration, mut done: impl FnMut(&mut Participant) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.with(|p, _| done(p)) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Constrains (or, with `None`, frees) what reaches the receiving transport.
    pub fn set_downlink(&self, link: Option<Link>) {
        *self.shared.downlink.lock().expect("downlink lock") = link.map(Bottleneck::new);
        self.shared.wake.notify_one();
    }

    /// Kills (or restores) the UDP path both ways while the WebSocket stays up.
    pub fn set_offline(&self, offline: bool) {
        self.shared.offline.store(offline, Ordering::Relaxed);
    }

    /// Datagrams the constrained downlink dropped so far.
    pub fn downlink_dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The server's close code, once it closed the connection.
    pub fn closed(&self) -> Option<Option<u16>> {
        *self.shared.closed.lock().expect("closed lock")
    }

    /// Leaves: closes the WebSocket (as a browser tab would) and stops sending media.
    pub async fn leave(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    /// Vanishes: stops everything without closing anything (a crashed browser).
    pub fn vanish(self) {
        self.task.abort();
    }
}

async fn drive(
    shared: Arc<Shared>,
    mut ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    cts: UdpSocket,
    stc: UdpSocket,
) {
    let cts_local = cts.local_addr().expect("bound");
    let mut cts_buf = vec![0u8; 2048];
    let mut stc_buf = vec![0u8; 2048];
    let mut envelopes: Vec<Value> = Vec::new();
    let mut datagrams: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    // Datagrams held in the constrained downlink until they leave it.
    let mut delayed: std::collections::VecDeque<(Instant, SocketAddr, Vec<u8>)> = std::collections::VecDeque::new();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            let _ = ws.close(None).await;
            return;
        }
        let next = {
            let mut p = shared.participant.lock().expect("participant lock");
            let stc_local = stc.local_addr().expect("bound");
            let now = Instant::now();
            while delayed.front().is_some_and(|(at, ..)| *at <= now) {
                let (_, source, data) = delayed.pop_front().expect("checked");
                p.handle_datagram(now, stc_local, source, &data);
            }
            while let Some(env) = p.poll_envelope() {
                envelopes.push(env);
            }
            while let Some(d) = p.poll_transmit() {
                datagrams.push(d);
            }
            let mut next = p.next_timeout();
            if let Some((at, ..)) = delayed.front() {
                next = Some(next.map_or(*at, |n| n.min(*at)));
            }
            next
        };
        let offline = shared.offline.load(Ordering::Relaxed);
        for (from, to, data) in datagrams.drain(..) {
            if offline {
                continue;
            }
            let socket = if from == cts_local { &cts } else { &stc };
            let _ = socket.send_to(&data, to).await;
        }
        for env in envelopes.drain(..) {
            let frame = Value::Array(vec![env]).to_string();
            if ws.send(Message::Text(frame.into())).await.is_err() {
                *shared.closed.lock().expect("closed lock") = Some(None);
                return;
            }
        }
        let sleep_until = next
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&text) else { continue };
                    let mut p = shared.participant.lock().expect("participant lock");
                    let now = Instant::now();
                    for env in &list {
                        p.handle_envelope(now, env);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    *shared.closed.lock().expect("closed lock") = Some(frame.map(|f| u16::from(f.code)));
                    return;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    *shared.closed.lock().expect("closed lock") = Some(None);
                    return;
                }
            },
            received = cts.recv_from(&mut cts_buf) => {
                if let Ok((n, source)) = received
                    && !shared.offline.load(Ordering::Relaxed)
                {
                    let mut p = shared.participant.lock().expect("participant lock");
                    p.handle_datagram(Instant::now(), cts_local, source, &cts_buf[..n]);
                }
            }
            received = stc.recv_from(&mut stc_buf) => {
                if let Ok((n, source)) = received
                    && !shared.offline.load(Ordering::Relaxed)
                {
                    let now = Instant::now();
                    let leaves = shared.downlink.lock().expect("downlink lock").as_mut().map(|b| b.admit(now, n));
                    match leaves {
                        None => {
                            let stc_local = stc.local_addr().expect("bound");
                            let mut p = shared.participant.lock().expect("participant lock");
                            p.handle_datagram(now, stc_local, source, &stc_buf[..n]);
                        }
                        Some(Some(at)) => delayed.push_back((at, source, stc_buf[..n].to_vec())),
                        Some(None) => {
                            shared.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(sleep_until) => {
                let mut p = shared.participant.lock().expect("participant lock");
                p.handle_timeout(Instant::now());
            }
            _ = shared.wake.notified() => {}
        }
    }
}
