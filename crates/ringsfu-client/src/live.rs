//! A [`Participant`] on real sockets: a tokio task drives its WebSocket and two UDP sockets (or,
//! over ICE-TCP, two TCP connections to the server's TCP candidates, each datagram framed as RFC
//! 4571 says). Tests and the load generator act on it and inspect it through [`Live::with`].

use super::link::{Bottleneck, Link};
use super::participant::Participant;
use futures_util::{SinkExt, StreamExt};
use ringsfu_core::framing::Deframer;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

struct Shared {
    participant: Mutex<Participant>,
    wake: Notify,
    /// `Some(code)` once the server closed the WebSocket (`None` inside: no close frame).
    closed: Mutex<Option<Option<u16>>>,
    stop: AtomicBool,
    /// The media path is dead both ways (the WebSocket still works); over TCP, nothing is read
    /// or written on the connections (a peer that stopped reading).
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
        Self::connect_over(ws_url, channel, jwt, session_id, ip, Protocol::Udp).await
    }

    /// [`Live::connect`], with media over UDP or over ICE-TCP.
    pub async fn connect_over(
        ws_url: &str,
        channel: &str,
        jwt: &str,
        session_id: Value,
        ip: IpAddr,
        proto: Protocol,
    ) -> Result<Live, String> {
        let cts = Path::bind(ip, proto).await.map_err(|e| e.to_string())?;
        let stc = Path::bind(ip, proto).await.map_err(|e| e.to_string())?;
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
        let mut participant = Participant::new(session_id, cts.local(), stc.local());
        if proto == Protocol::Tcp {
            participant = participant.over_tcp();
        }
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

    /// Kills (or restores) the media path both ways while the WebSocket stays up.
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

/// One transport's way to the server: a UDP socket, or a TCP connection made on first send.
enum Path {
    Udp { socket: UdpSocket, buf: Vec<u8> },
    Tcp(TcpPath),
}

struct TcpPath {
    local: SocketAddr,
    /// Bound (so the local candidate's address is known), connected on the first send.
    socket: Option<TcpSocket>,
    server: Option<SocketAddr>,
    reader: Option<OwnedReadHalf>,
    writer: Option<OwnedWriteHalf>,
    deframer: Deframer,
    buf: Vec<u8>,
}

impl Path {
    async fn bind(ip: IpAddr, proto: Protocol) -> std::io::Result<Path> {
        if proto != Protocol::Tcp {
            let socket = UdpSocket::bind((ip, 0)).await?;
            return Ok(Path::Udp { socket, buf: vec![0; 2048] });
        }
        let socket = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(ip, 0))?;
        let local = socket.local_addr()?;
        Ok(Path::Tcp(TcpPath {
            local,
            socket: Some(socket),
            server: None,
            reader: None,
            writer: None,
            deframer: Deframer::default(),
            buf: vec![0; 16 << 10],
        }))
    }

    fn local(&self) -> SocketAddr {
        match self {
            Path::Udp { socket, .. } => socket.local_addr().expect("bound"),
            Path::Tcp(t) => t.local,
        }
    }

    async fn send(&mut self, to: SocketAddr, data: &[u8]) {
        match self {
            Path::Udp { socket, .. } => {
                let _ = socket.send_to(data, to).await;
            }
            Path::Tcp(t) => {
                if t.writer.is_none() {
                    let Some(socket) = t.socket.take() else { return };
                    let Ok(stream) = socket.connect(to).await else { return };
                    let _ = stream.set_nodelay(true);
                    let (reader, writer) = stream.into_split();
                    (t.server, t.reader, t.writer) = (Some(to), Some(reader), Some(writer));
                }
                let mut frame = Vec::with_capacity(2 + data.len());
                ringsfu_core::framing::push_frame(&mut frame, data);
                if let Some(writer) = t.writer.as_mut() {
                    let _ = writer.write_all(&frame).await;
                }
            }
        }
    }

    /// Waits for what arrives next and appends its datagrams to `out` (over TCP, the frames one
    /// read completed; a closed connection is pending forever).
    async fn receive(&mut self, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        match self {
            Path::Udp { socket, buf } => {
                if let Ok((n, source)) = socket.recv_from(buf).await {
                    out.push((source, buf[..n].to_vec()));
                }
            }
            Path::Tcp(t) => {
                let (Some(reader), Some(server)) = (t.reader.as_mut(), t.server) else {
                    return std::future::pending().await;
                };
                match reader.read(&mut t.buf).await {
                    Ok(n) if n > 0 => {
                        let framed = t.deframer.push(&t.buf[..n], |frame| out.push((server, frame.to_vec())));
                        if framed.is_err() {
                            t.reader = None;
                        }
                    }
                    _ => t.reader = None,
                }
            }
        }
    }
}

async fn drive(
    shared: Arc<Shared>,
    mut ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    mut cts: Path,
    mut stc: Path,
) {
    let cts_local = cts.local();
    let stc_local = stc.local();
    let mut envelopes: Vec<Value> = Vec::new();
    let mut datagrams: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    let mut cts_received: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut stc_received: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    // Datagrams held in the constrained downlink until they leave it.
    let mut delayed: std::collections::VecDeque<(Instant, SocketAddr, Vec<u8>)> = std::collections::VecDeque::new();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            let _ = ws.close(None).await;
            return;
        }
        let next = {
            let mut p = shared.participant.lock().expect("participant lock");
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
            let path = if from == cts_local { &mut cts } else { &mut stc };
            path.send(to, &data).await;
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
            () = cts.receive(&mut cts_received), if !offline => {
                if !shared.offline.load(Ordering::Relaxed) {
                    let mut p = shared.participant.lock().expect("participant lock");
                    let now = Instant::now();
                    for (source, data) in cts_received.drain(..) {
                        p.handle_datagram(now, cts_local, source, &data);
                    }
                }
                cts_received.clear();
            }
            () = stc.receive(&mut stc_received), if !offline => {
                if !shared.offline.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let mut p = shared.participant.lock().expect("participant lock");
                    let mut downlink = shared.downlink.lock().expect("downlink lock");
                    for (source, data) in stc_received.drain(..) {
                        match downlink.as_mut().map(|b| b.admit(now, data.len())) {
                            None => p.handle_datagram(now, stc_local, source, &data),
                            Some(Some(at)) => delayed.push_back((at, source, data)),
                            Some(None) => {
                                shared.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                stc_received.clear();
            }
            _ = tokio::time::sleep_until(sleep_until) => {
                let mut p = shared.participant.lock().expect("participant lock");
                p.handle_timeout(Instant::now());
            }
            _ = shared.wake.notified() => {}
        }
    }
}
