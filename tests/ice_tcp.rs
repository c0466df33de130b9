//! ICE over TCP (RFC 6544 passive candidates, RFC 4571 framing) against the real binary: a
//! participant whose media goes over TCP joins a call with one over UDP, and hostile or broken
//! TCP peers (partial frames, oversized length prefixes, silent connections, too many of them, a
//! peer that stops reading) cost the others nothing.

mod common;

use common::media::{join_over, packets, publish_all};
use common::{Server, key};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Each transport offers the UDP candidate and, below it in priority, a passive TCP candidate on
/// the same address and port.
fn assert_candidates(options: &Value) {
    let candidates = options["iceCandidates"].as_array().expect("iceCandidates");
    assert_eq!(candidates.len(), 2, "{options}");
    let (udp, tcp) = (&candidates[0], &candidates[1]);
    assert_eq!((udp["protocol"].as_str(), tcp["protocol"].as_str()), (Some("udp"), Some("tcp")));
    assert_eq!(tcp["tcpType"], "passive");
    assert_eq!(tcp["type"], "host");
    assert_eq!((udp["ip"].clone(), udp["port"].clone()), (tcp["ip"].clone(), tcp["port"].clone()));
    assert!(tcp["priority"].as_u64().unwrap() < udp["priority"].as_u64().unwrap(), "UDP is preferred");
}

#[tokio::test]
async fn a_participant_over_tcp_and_one_over_udp_see_and_hear_each_other() {
    let server = Server::start(&[]);
    let channel = server.channel("odoo:channel:tcp", true).await;
    let tcp = join_over(&server, &channel, 1, Protocol::Tcp).await;
    let udp = join_over(&server, &channel, 2, Protocol::Udp).await;
    publish_all(&tcp);
    publish_all(&udp);
    for (me, from, p) in [(1, 2, &tcp), (2, 1, &udp)] {
        let ok = p
            .wait_for(Duration::from_secs(20), |p| packets(p, from, "audio") > 100 && packets(p, from, "camera") > 300)
            .await;
        assert!(ok, "participant {me} did not receive {from}; server log:\n{}", server.stderr());
    }
    tcp.with(|p, _| {
        assert_eq!(p.protocol(), Protocol::Tcp);
        let cts = p.cts.as_ref().unwrap();
        assert_eq!(cts.proto, Protocol::Tcp);
        for media in ["audio", "camera"] {
            let r = p.reception(&json!(2), media).unwrap();
            assert_eq!(r.wrong_payload_type, 0);
            assert!(r.gaps() <= 2, "{media} over TCP: {} gaps", r.gaps());
        }
    });
    // Both of its transports are TCP connections; the counters moved both ways.
    let load = server.wait_load("two TCP connections", |l| tcp_connections(l) == 2).await;
    assert_eq!(load["sessions"], 2);
    assert!(server.metric("ringsfu_shard_tcp_received_packets_total").await > 300);
    assert!(server.metric("ringsfu_shard_tcp_sent_packets_total").await > 300);
    assert!(server.metric("ringsfu_shard_tcp_received_bytes_total").await > 30_000);
    assert!(server.metric("ringsfu_shard_tcp_sent_bytes_total").await > 30_000);
    assert_eq!(server.metric("ringsfu_shard_tcp_connections").await, 2);
    // The UDP participant's traffic is not counted as TCP: all of TCP is less than all traffic.
    assert!(
        server.metric("ringsfu_shard_tcp_received_packets_total").await
            < server.metric("ringsfu_shard_received_packets_total").await
    );
    tcp.leave().await;
    udp.leave().await;
    // The browser's side closes with its PeerConnection; here the task ends and drops both.
    server.wait_load("TCP connections closed", |l| tcp_connections(l) == 0).await;
}

fn tcp_connections(load: &Value) -> u64 {
    load["shards"].as_array().unwrap().iter().map(|s| s["tcpConnections"].as_u64().unwrap()).sum()
}

/// `INIT_TRANSPORTS` as the server sends it, read from a participant's transports.
#[tokio::test]
async fn transports_offer_a_passive_tcp_candidate_below_udp_unless_rtc_tcp_is_off() {
    let server = Server::start(&[]);
    let channel = server.channel("odoo:channel:candidates", true).await;
    let (_ws, init) = init_transports(&server, &channel, 1).await;
    assert_candidates(&init["ctsConfig"]);
    assert_candidates(&init["stcConfig"]);
    let port = init["ctsConfig"]["iceCandidates"][1]["port"].as_u64().unwrap() as u16;
    assert!(server.rtc.iter().any(|a| a.port() == port), "the shard's port: {port} of {:?}", server.rtc);
    TcpStream::connect(("127.0.0.1", port)).await.expect("the shard listens on TCP at its UDP port");

    let server = Server::start(&[("RTC_TCP", "false")]);
    let channel = server.channel("odoo:channel:candidates", true).await;
    let (_ws, init) = init_transports(&server, &channel, 1).await;
    let candidates = init["ctsConfig"]["iceCandidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 1);
    assert_eq!(candidates[0]["protocol"], "udp");
    let port = candidates[0]["port"].as_u64().unwrap() as u16;
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "RTC_TCP=false: nothing listens on TCP");
}

/// Joins on the bus and returns the payload of the server's `INIT_TRANSPORTS`.
async fn init_transports(server: &Server, channel: &str, id: i64) -> (common::Ws, Value) {
    let mut ws = common::Ws::join(server, channel, json!(id), &key()).await;
    let init = ws.expect_message("INIT_TRANSPORTS").await;
    (ws, init["message"]["payload"].clone())
}

/// A raw TCP connection to a shard's port.
async fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.expect("connect to the shard's TCP port");
    s.set_nodelay(true).unwrap();
    s
}

/// Whether the server closed the connection within `limit` (reads, discarding, until EOF).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn frame(data: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    ringsfu_core::framing::push_frame(&mut f, data);
    f
}

/// A STUN binding request over TCP for a transport's ufrag, authenticated with its password, gets
/// a binding response framed on the same connection, also when the request arrives split over
/// several writes or together with another frame in one write; a connection that sends one with
/// the wrong password is refused (no response) and closed as idle.
#[tokio::test]
async fn a_binding_request_over_tcp_is_answered_on_its_connection_whatever_the_segmentation() {
    let server = Server::start(&[("RTC_TCP_IDLE_TIMEOUT_SECONDS", "1")]);
    let channel = server.channel("odoo:channel:stun", true).await;
    let (_ws, init) = init_transports(&server, &channel, 1).await;
    // The sending transport: its `Rtc` exists from the start (the receiving one waits for a producer).
    let stc = &init["stcConfig"];
    let ufrag = stc["iceParameters"]["usernameFragment"].as_str().unwrap();
    let pass = stc["iceParameters"]["password"].as_str().unwrap();
    let tcp = &stc["iceCandidates"][1];
    let addr: SocketAddr = format!("{}:{}", tcp["ip"].as_str().unwrap(), tcp["port"]).parse().unwrap();

    // Whole.
    let mut s = raw(addr).await;
    let request = binding_request(ufrag, pass);
    s.write_all(&frame(&request)).await.unwrap();
    assert_binding_response(&mut s, &request).await;

    // One byte at a time, the length prefix split too.
    let mut s = raw(addr).await;
    let request = binding_request(ufrag, pass);
    for byte in frame(&request) {
        s.write_all(&[byte]).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_binding_response(&mut s, &request).await;

    // Two frames in one write: both answered, in order.
    let mut s = raw(addr).await;
    let (first, second) = (binding_request(ufrag, pass), binding_request(ufrag, pass));
    let mut both = frame(&first);
    both.extend(frame(&second));
    s.write_all(&both).await.unwrap();
    assert_binding_response(&mut s, &first).await;
    assert_binding_response(&mut s, &second).await;

    // The wrong password: no answer, and without an address bound the connection goes as idle.
    let mut s = raw(addr).await;
    s.write_all(&frame(&binding_request(ufrag, "not-the-password"))).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await, "closed after the idle timeout");
    assert!(server.wait_metric("ringsfu_shard_tcp_closed_connections_total{", |v| v >= 1).await >= 1);
    assert!(
        server.metric("ringsfu_shard_tcp_closed_connections_total{shard=\"0\",reason=\"idle\"}").await
            + server.metric("ringsfu_shard_tcp_closed_connections_total{shard=\"1\",reason=\"idle\"}").await
            >= 1
    );
}

/// A binding request as a browser sends it (USERNAME `<server ufrag>:<ours>`, PRIORITY,
/// ICE-CONTROLLING, MESSAGE-INTEGRITY with the server's password, FINGERPRINT).
fn binding_request(server_ufrag: &str, server_pass: &str) -> Vec<u8> {
    use str0m::ice::{StunMessage, TransId};
    let username = format!("{server_ufrag}:client");
    let message = StunMessage::binding_request(&username, TransId::new(), true, 42, 1_853_824_767, false);
    let mut buf = vec![0u8; 1500];
    let n = message.to_bytes(Some(server_pass.as_bytes()), &mut buf, hmac_sha1).expect("a STUN request");
    buf.truncate(n);
    buf
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    for part in parts {
        ctx.update(part);
    }
    ctx.sign().as_ref().try_into().expect("20 bytes")
}

/// Reads one frame and checks it is a binding success response to `request`.
async fn assert_binding_response(s: &mut TcpStream, request: &[u8]) {
    let mut prefix = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut prefix))
        .await
        .expect("a response within 5 s")
        .expect("a length prefix");
    let len = u16::from_be_bytes(prefix) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.expect("the whole frame");
    assert!(len >= 20, "a STUN message: {len} bytes");
    assert_eq!(&body[..2], &[0x01, 0x01], "a binding success response");
    assert_eq!(&body[4..8], &[0x21, 0x12, 0xa4, 0x42]);
    assert_eq!(body[8..20], request[8..20], "the response to that request's transaction");
}

/// The (shard 0 + shard 1) value of `ringsfu_shard_tcp_closed_connections_total` for a reason.
async fn closed(server: &Server, reason: &str) -> u64 {
    let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .filter(|l| l.starts_with("ringsfu_shard_tcp_closed_connections_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A length prefix no WebRTC peer sends (0, or above 4096) closes that connection at once, and
/// only it: another connection on the same shard is still answered.
#[tokio::test]
async fn an_oversized_length_prefix_closes_only_its_connection() {
    let server = Server::start(&[("RTC_TCP_IDLE_TIMEOUT_SECONDS", "30")]);
    let channel = server.channel("odoo:channel:oversize", true).await;
    let (_ws, init) = init_transports(&server, &channel, 1).await;
    let stc = &init["stcConfig"];
    let (ufrag, pass) = (
        stc["iceParameters"]["usernameFragment"].as_str().unwrap(),
        stc["iceParameters"]["password"].as_str().unwrap(),
    );
    let addr: SocketAddr =
        format!("{}:{}", stc["iceCandidates"][1]["ip"].as_str().unwrap(), stc["iceCandidates"][1]["port"])
            .parse()
            .unwrap();
    let mut good = raw(addr).await;
    let request = binding_request(ufrag, pass);
    good.write_all(&frame(&request)).await.unwrap();
    assert_binding_response(&mut good, &request).await;
    for prefix in [[0xff, 0xff], [0x10, 0x01], [0x00, 0x00]] {
        let mut bad = raw(addr).await;
        bad.write_all(&prefix).await.unwrap();
        bad.write_all(&[0x80; 64]).await.unwrap();
        assert!(closed_within(&mut bad, Duration::from_secs(3)).await, "{prefix:?} closes the connection");
    }
    assert_eq!(server.wait_metric("ringsfu_shard_tcp_closed_connections_total{", |v| v >= 3).await, 3);
    assert_eq!(closed(&server, "oversize").await, 3);
    // The good connection is untouched.
    let request = binding_request(ufrag, pass);
    good.write_all(&frame(&request)).await.unwrap();
    assert_binding_response(&mut good, &request).await;
}

/// Connections that never complete ICE are closed after `RTC_TCP_IDLE_TIMEOUT_SECONDS`.
#[tokio::test]
async fn connections_that_never_send_stun_are_closed_after_the_idle_timeout() {
    let server = Server::start(&[("RTC_TCP_IDLE_TIMEOUT_SECONDS", "1")]);
    let started = std::time::Instant::now();
    let mut silent = Vec::new();
    for addr in &server.rtc {
        silent.push(raw(*addr).await);
        silent.push(raw(*addr).await);
    }
    // One that sends something that is not STUN for any transport.
    let mut junk = raw(server.rtc[0]).await;
    junk.write_all(&frame(&[0x80; 100])).await.unwrap();
    silent.push(junk);
    // Accepted (a counter: `/v1/load` samples once a second and can miss connections that a
    // 1 s timeout closes).
    assert_eq!(server.wait_metric("ringsfu_shard_tcp_accepted_connections_total", |v| v >= 5).await, 5);
    for s in &mut silent {
        assert!(closed_within(s, Duration::from_secs(10)).await, "closed");
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the timeout: {:?}", started.elapsed());
    assert_eq!(server.wait_metric("ringsfu_shard_tcp_connections", |v| v == 0).await, 0);
    assert_eq!(closed(&server, "idle").await, 5);
}

/// With `RTC_TCP_MAX_CONNECTIONS` reached, new connections are closed as they arrive and counted,
/// while the sessions already there (one over TCP) keep receiving.
#[tokio::test]
async fn connections_over_the_limit_are_refused_while_sessions_keep_flowing() {
    let server = Server::start(&[
        ("NUM_WORKERS", "1"),
        ("RTC_TCP_MAX_CONNECTIONS", "4"),
        ("RTC_TCP_IDLE_TIMEOUT_SECONDS", "60"),
    ]);
    let channel = server.channel("odoo:channel:limit", true).await;
    let tcp = join_over(&server, &channel, 1, Protocol::Tcp).await;
    let udp = join_over(&server, &channel, 2, Protocol::Udp).await;
    publish_all(&tcp);
    publish_all(&udp);
    for (from, p) in [(2, &tcp), (1, &udp)] {
        assert!(p.wait_for(Duration::from_secs(20), |p| packets(p, from, "audio") > 50).await, "{}", server.stderr());
    }
    // Two are the participant's; two more fit; six are refused.
    let mut extra = Vec::new();
    for _ in 0..8 {
        extra.push(raw(server.rtc[0]).await);
    }
    let refused = server.wait_metric("ringsfu_shard_tcp_refused_connections_total", |v| v >= 6).await;
    assert_eq!(refused, 6);
    let mut closed_now = 0;
    for s in &mut extra {
        if closed_within(s, Duration::from_millis(300)).await {
            closed_now += 1;
        }
    }
    assert_eq!(closed_now, 6);
    let before = (tcp.with(|p, _| packets(p, 2, "audio")), udp.with(|p, _| packets(p, 1, "audio")));
    for (from, p, had) in [(2, &tcp, before.0), (1, &udp, before.1)] {
        let more = p.wait_for(Duration::from_secs(10), |p| packets(p, from, "audio") > had + 100).await;
        assert!(more, "session {} keeps receiving", 3 - from);
    }
    tcp.leave().await;
    udp.leave().await;
}

/// A participant over TCP that stops reading (its connection's window closes) costs the others
/// nothing: a UDP participant in the same channel keeps receiving the same media at its rate.
#[tokio::test]
async fn a_tcp_peer_that_stops_reading_does_not_stop_media_to_a_udp_participant() {
    let server = Server::start(&[("NUM_WORKERS", "1")]);
    let channel = server.channel("odoo:channel:stall", true).await;
    let sender = join_over(&server, &channel, 1, Protocol::Udp).await;
    let udp = join_over(&server, &channel, 2, Protocol::Udp).await;
    let stalled = join_over(&server, &channel, 3, Protocol::Tcp).await;
    publish_all(&sender);
    for p in [&udp, &stalled] {
        let ok = p.wait_for(Duration::from_secs(20), |p| packets(p, 1, "camera") > 200).await;
        assert!(ok, "receiving before the stall; server log:\n{}", server.stderr());
    }
    stalled.set_offline(true);
    // Five seconds of the sender's media after the stall reach the UDP participant.
    for _ in 0..5 {
        let had = udp.with(|p, _| (packets(p, 1, "audio"), packets(p, 1, "camera")));
        let ok = udp
            .wait_for(Duration::from_secs(3), |p| {
                packets(p, 1, "audio") > had.0 + 30 && packets(p, 1, "camera") > had.1 + 30
            })
            .await;
        assert!(ok, "the UDP participant kept receiving; server log:\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    udp.with(|p, _| assert!(p.reception(&json!(1), "audio").unwrap().gaps() <= 2));
    sender.leave().await;
    udp.leave().await;
    stalled.vanish();
}
