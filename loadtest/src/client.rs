//! One synthetic client: a [`Participant`] on its own task with a WebSocket and two UDP sockets.
//! Full subscribers decrypt and check everything; sinks finish ICE/DTLS and then only count the
//! media datagrams, read in batches, so one load core can drive many SFU cores. Over ICE-TCP
//! (`--tcp`) a client is the tests' [`Live`] participant on two TCP connections, decrypting
//! everything.

use futures_util::{SinkExt, StreamExt};
use ringsfu::runtime::udp::RecvBatch;
use ringsfu_client::live::Live;
use ringsfu_client::{Latencies, Participant, Publish};
use ringsfu_core::sfu::demux;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

/// The bus carries small JSON messages. tungstenite's default 128 KiB read buffer is zeroed each
/// time the stream is polled, which was a seventh of the generator's CPU with hundreds of clients.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

/// A sink reads its socket this often rather than waking for each datagram: one load-generator
/// core then drives many shard cores (the socket buffer holds far more than arrives meanwhile;
/// STUN answers and RTCP wait at most this long, which ICE and the server do not notice).
const SINK_READ_INTERVAL: Duration = Duration::from_millis(100);
const SINK_BATCH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decrypts every packet: continuity, latency, jitter.
    Full,
    /// Counts media datagrams without decrypting them.
    Sink,
}

#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub ws_url: String,
    pub channel: String,
    pub jwt: String,
    pub session_id: i64,
    pub publish: Vec<Publish>,
    pub mode: Mode,
    /// Leave after this long (churn); otherwise stay until the end of the run.
    pub stay: Option<Duration>,
    /// Full subscribers record latencies from here on (the end of the warm-up): the first
    /// seconds, while each downlink estimate climbs from its initial value, are start-up.
    pub measure_from: Instant,
    /// Media over ICE-TCP.
    pub tcp: bool,
}

/// Counters every client adds to while running (the live progress line reads them).
#[derive(Default)]
pub struct Totals {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub left: AtomicU64,
    pub received_packets: AtomicU64,
    pub received_bytes: AtomicU64,
}

#[derive(Debug)]
pub struct ClientResult {
    pub mode: Mode,
    pub error: Option<String>,
    /// WebSocket open → `INIT_TRANSPORTS` answered (the protocol's CONNECTED).
    pub join_time: Option<Duration>,
    pub received_packets: u64,
    pub received_bytes: u64,
    /// Full subscribers: packets missing in what they received, and what they received in all.
    pub gaps: u64,
    pub expected: u64,
    pub jitter_us: f64,
    pub latency_us: Option<Box<Latencies>>,
}

pub async fn run(spec: ClientSpec, ip: IpAddr, end: Instant, totals: Arc<Totals>) -> ClientResult {
    let mut result = ClientResult {
        mode: spec.mode,
        error: None,
        join_time: None,
        received_packets: 0,
        received_bytes: 0,
        gaps: 0,
        expected: 0,
        jitter_us: 0.0,
        latency_us: None,
    };
    let driven = if spec.tcp {
        drive_over_tcp(&spec, ip, end, &totals, &mut result).await
    } else {
        drive(&spec, ip, end, &totals, &mut result).await
    };
    if let Err(e) = driven {
        totals.failed.fetch_add(1, Ordering::Relaxed);
        result.error = Some(e);
    }
    result
}

async fn drive(
    spec: &ClientSpec,
    ip: IpAddr,
    end: Instant,
    totals: &Totals,
    result: &mut ClientResult,
) -> Result<(), String> {
    let cts = UdpSocket::bind((ip, 0)).await.map_err(|e| e.to_string())?;
    let stc = UdpSocket::bind((ip, 0)).await.map_err(|e| e.to_string())?;
    let (cts_local, stc_local) =
        (cts.local_addr().map_err(|e| e.to_string())?, stc.local_addr().map_err(|e| e.to_string())?);
    let opened = Instant::now();
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(&spec.ws_url, Some(ws_config()), false),
    )
    .await
    .map_err(|_| "WebSocket connect timed out".to_string())?
    .map_err(|e| format!("WebSocket connect: {e}"))?;
    ws.send(Message::Text(json!({"channelUUID": spec.channel, "jwt": spec.jwt}).to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    let mut p = Participant::new(json!(spec.session_id), cts_local, stc_local);
    p.record_latencies = false;
    let now = Instant::now();
    for what in &spec.publish {
        p.publish(now, what.clone());
    }
    let leave_at = spec.stay.map(|d| Instant::now() + d).unwrap_or(end).min(end);
    let mut acknowledged = false;
    let mut batch = RecvBatch::new(SINK_BATCH);
    let mut next_sink_read = Instant::now();
    let mut cts_buf = vec![0u8; 2048];
    let mut stc_buf = vec![0u8; 2048];
    let mut sink_packets = 0u64;
    let mut sink_bytes = 0u64;
    loop {
        while let Some(env) = p.poll_envelope() {
            ws.send(Message::Text(Value::Array(vec![env]).to_string().into()))
                .await
                .map_err(|e| format!("bus send: {e}"))?;
        }
        while let Some((from, to, data)) = p.poll_transmit() {
            let socket = if from == cts_local { &cts } else { &stc };
            let _ = socket.send_to(&data, to).await;
        }
        if result.join_time.is_none() && p.is_connected() {
            result.join_time = Some(opened.elapsed());
            totals.connected.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        if now >= leave_at {
            break;
        }
        if spec.mode == Mode::Full && p.latency_histograms.is_none() && now >= spec.measure_from {
            p.latency_histograms = Some(Box::default());
        }
        let wake = p.next_timeout().map_or(leave_at, |t| t.min(leave_at));
        // Sinks read media themselves once DTLS is up: only STUN, DTLS and RTCP reach str0m.
        let sinking = spec.mode == Mode::Sink && p.stc.as_ref().is_some_and(|t| t.connected);
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if !acknowledged {
                        acknowledged = true;
                        continue;
                    }
                    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&text) else { continue };
                    let now = Instant::now();
                    for env in &list {
                        p.handle_envelope(now, env);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("closed by the server: {:?}", frame.map(|f| u16::from(f.code))));
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return Err("bus connection lost".into()),
            },
            received = cts.recv_from(&mut cts_buf) => {
                if let Ok((n, source)) = received {
                    p.handle_datagram(Instant::now(), cts_local, source, &cts_buf[..n]);
                }
            }
            received = stc.recv_from(&mut stc_buf), if !sinking => {
                if let Ok((n, source)) = received {
                    p.handle_datagram(Instant::now(), stc_local, source, &stc_buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next_sink_read)), if sinking => {
                // Everything that queued since the last read, a batch per syscall.
                let fd = stc.as_raw_fd();
                let now = Instant::now();
                let (mut packets, mut bytes) = (0u64, 0u64);
                while let Ok(n) = batch.receive(fd) {
                    for i in 0..n {
                        let Some((source, data)) = batch.datagram(i) else { continue };
                        if demux::is_rtp(data) {
                            packets += 1;
                            bytes += data.len() as u64;
                        } else {
                            p.handle_datagram(now, stc_local, source, data);
                        }
                    }
                    if n < SINK_BATCH {
                        break;
                    }
                }
                sink_packets += packets;
                sink_bytes += bytes;
                totals.received_packets.fetch_add(packets, Ordering::Relaxed);
                totals.received_bytes.fetch_add(bytes, Ordering::Relaxed);
                next_sink_read = now + SINK_READ_INTERVAL;
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                p.handle_timeout(Instant::now());
            }
        }
    }
    let _ = ws.close(None).await;
    totals.left.fetch_add(1, Ordering::Relaxed);
    // What full subscribers saw.
    let mut latency = p.latency_histograms.take();
    let mut received_packets = sink_packets;
    let mut received_bytes = sink_bytes;
    for r in p.receptions.values() {
        received_packets += r.packets;
        received_bytes += r.bytes;
        result.gaps += r.gaps();
        if let (Some(lo), Some(hi)) = (r.lowest_seq, r.highest_seq) {
            result.expected += hi - lo + 1;
        }
        result.jitter_us = result.jitter_us.max(r.jitter_us);
    }
    if spec.mode == Mode::Full {
        totals.received_packets.fetch_add(received_packets, Ordering::Relaxed);
        totals.received_bytes.fetch_add(received_bytes, Ordering::Relaxed);
    }
    result.received_packets = received_packets;
    result.received_bytes = received_bytes;
    if let Some(h) = latency.as_mut() {
        h.audio.auto(true);
        h.video.auto(true);
    }
    result.latency_us = latency;
    if result.join_time.is_none() {
        return Err("never reached CONNECTED".into());
    }
    Ok(())
}

/// How often a client over ICE-TCP reads its participant's counters.
const TCP_COUNT_INTERVAL: Duration = Duration::from_millis(100);

/// A client whose media goes over ICE-TCP: the participant runs on [`Live`]'s task (its two TCP
/// connections, RFC 4571 framing) and this one only reads its counters.
async fn drive_over_tcp(
    spec: &ClientSpec,
    ip: IpAddr,
    end: Instant,
    totals: &Totals,
    result: &mut ClientResult,
) -> Result<(), String> {
    let opened = Instant::now();
    let live = Live::connect_over(
        &spec.ws_url,
        &spec.channel,
        &spec.jwt,
        json!(spec.session_id),
        ip,
        str0m::net::Protocol::Tcp,
    )
    .await?;
    live.with(|p, now| {
        p.record_latencies = false;
        for what in &spec.publish {
            p.publish(now, what.clone());
        }
    });
    let leave_at = spec.stay.map(|d| Instant::now() + d).unwrap_or(end).min(end);
    let (mut counted_packets, mut counted_bytes) = (0, 0);
    loop {
        if let Some(code) = live.closed() {
            return Err(format!("closed by the server: {code:?}"));
        }
        let (connected, packets, bytes) = live.with(|p, now| {
            if spec.mode == Mode::Full && p.latency_histograms.is_none() && now >= spec.measure_from {
                p.latency_histograms = Some(Box::default());
            }
            let (packets, bytes) = p.receptions.values().fold((0, 0), |(n, b), r| (n + r.packets, b + r.bytes));
            (p.is_connected(), packets, bytes)
        });
        if result.join_time.is_none() && connected {
            result.join_time = Some(opened.elapsed());
            totals.connected.fetch_add(1, Ordering::Relaxed);
        }
        totals.received_packets.fetch_add(packets - counted_packets, Ordering::Relaxed);
        totals.received_bytes.fetch_add(bytes - counted_bytes, Ordering::Relaxed);
        (counted_packets, counted_bytes) = (packets, bytes);
        let now = Instant::now();
        if now >= leave_at {
            break;
        }
        tokio::time::sleep((leave_at - now).min(TCP_COUNT_INTERVAL)).await;
    }
    let latency = live.with(|p, _| {
        for r in p.receptions.values() {
            result.gaps += r.gaps();
            if let (Some(lo), Some(hi)) = (r.lowest_seq, r.highest_seq) {
                result.expected += hi - lo + 1;
            }
            result.jitter_us = result.jitter_us.max(r.jitter_us);
        }
        p.latency_histograms.take()
    });
    live.leave().await;
    totals.left.fetch_add(1, Ordering::Relaxed);
    result.received_packets = counted_packets;
    result.received_bytes = counted_bytes;
    result.latency_us = latency.map(|mut h| {
        h.audio.auto(true);
        h.video.auto(true);
        h
    });
    if result.join_time.is_none() {
        return Err("never reached CONNECTED".into());
    }
    Ok(())
}

/// Where clients bind: the loopback address of the target.
pub fn local_ip_for(target: &SocketAddr) -> IpAddr {
    target.ip()
}
