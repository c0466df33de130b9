//! Issue 11: what one hostile or broken client can no longer do to the others or to the server,
//! each over real sockets against the real binary.

mod common;

use common::{Frame, Server, Ws, key};
use futures_util::SinkExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn payload(env: &Value) -> &Value {
    &env["message"]["payload"]
}

/// Reads everything `ws` is sent for `limit`, answering requests; panics on a close.
async fn stays_open(ws: &mut Ws, who: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.frame_within(remaining).await {
            None => return,
            Some(Frame::Text(t)) => {
                for env in serde_json::from_str::<Vec<Value>>(&t).unwrap() {
                    if let Some(id) = env.get("needResponse") {
                        ws.send_envelopes(json!([{"responseTo": id}])).await;
                    }
                }
            }
            Some(other) => panic!("{who} was closed: {other:?}"),
        }
    }
}

/// Item 2: envelopes are counted, not frames, and the flooder is the one closed. Before, two
/// frames of 4,000 `BROADCAST`s each overflowed the other sessions' event queues and they were
/// closed with 1011 ("connection too slow"), over and over as Odoo clients reconnect.
#[tokio::test]
async fn a_participant_flooding_broadcasts_is_closed_and_nobody_else() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut others = Vec::new();
    for id in 1..=5 {
        others.push(Ws::join(&server, &uuid, json!(id), &key()).await);
    }
    let mut flooder = Ws::join(&server, &uuid, json!(66), &key()).await;
    let flood: Vec<Value> =
        (0..4_000).map(|i| json!({"message": {"name": "BROADCAST", "payload": {"n": i}}})).collect();
    let flood = Value::Array(flood).to_string();
    assert!(flood.len() < 256 << 10, "under the frame cap: {}", flood.len());
    for _ in 0..2 {
        let _ = flooder.stream.send(Message::Text(flood.clone().into())).await;
    }
    assert_eq!(flooder.expect_close(Duration::from_secs(5)).await, Some(1011));
    for (i, ws) in others.iter_mut().enumerate() {
        stays_open(ws, &format!("bystander {}", i + 1), Duration::from_millis(1500)).await;
    }
    others[0].message("BROADCAST", json!("still here")).await;
    for ws in &mut others[1..] {
        assert_eq!(payload(&ws.expect_message("BROADCAST").await)["message"], "still here");
    }
}

/// Item 3: large broadcasts are refused (over 64 KiB) instead of being copied once per receiver.
/// Before, 400 broadcasts of 250 KB to nine receivers that do not read took the server's memory
/// from ~100 MB to ~2 GB.
#[tokio::test]
async fn large_broadcasts_to_many_receivers_do_not_grow_the_servers_memory() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    // Nine receivers that never read.
    let mut receivers = Vec::new();
    for id in 1..=9 {
        receivers.push(Ws::join(&server, &uuid, json!(id), &key()).await);
    }
    let mut sender = Ws::join(&server, &uuid, json!(10), &key()).await;
    let before = server.rss_bytes();
    let big = json!([{"message": {"name": "BROADCAST", "payload": "z".repeat(250_000)}}]).to_string();
    for _ in 0..400 {
        if sender.stream.send(Message::Text(big.clone().into())).await.is_err() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_bytes();
    let grown = after.saturating_sub(before);
    assert!(grown < 64 << 20, "RSS grew by {} MB ({} → {} MB)", grown >> 20, before >> 20, after >> 20);
    // The sender was told: it is closed (over its byte budget, or too many refused broadcasts).
    assert_eq!(sender.expect_close(Duration::from_secs(5)).await, Some(1011));
    // A broadcast of Odoo's size still reaches everyone.
    let mut polite = Ws::join(&server, &uuid, json!(11), &key()).await;
    polite.message("BROADCAST", json!({"sequence": 7})).await;
    for ws in &mut receivers {
        assert_eq!(payload(&ws.expect_message("BROADCAST").await)["message"], json!({"sequence": 7}));
    }
}

/// Item 3: a broadcast over 64 KiB gets a clear error reply and reaches nobody; the session stays.
#[tokio::test]
async fn an_oversized_broadcast_request_is_answered_with_an_error_and_relayed_to_nobody() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut receiver = Ws::join(&server, &uuid, json!(1), &key()).await;
    let mut sender = Ws::join(&server, &uuid, json!(2), &key()).await;
    let id = sender.request("BROADCAST", json!("q".repeat(70 << 10))).await;
    assert_eq!(sender.expect_reply(&id).await["error"], "BROADCAST payload over 64 KiB");
    sender.message("BROADCAST", json!("small")).await;
    assert_eq!(payload(&receiver.expect_message("BROADCAST").await)["message"], "small");
}

/// Item 7: with `LOAD_SECRET` set, `/v1/stats` (every channel and its creator's address) and
/// `/metrics` need it, as `/v1/load` does; the health probes stay open.
#[tokio::test]
async fn the_load_secret_guards_stats_and_metrics_too() {
    let server = Server::start(&[("LOAD_SECRET", "s3cret")]);
    server.channel("odoo:channel:1", false).await;
    let client = reqwest::Client::new();
    for path in ["/v1/stats", "/metrics", "/v1/load"] {
        let open = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(open.status(), 401, "{path} without the secret");
        let wrong = client.get(server.url(path)).header("X-Load-Secret", "guess").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong secret");
        let right = client.get(server.url(path)).header("X-Load-Secret", "s3cret").send().await.unwrap();
        assert_eq!(right.status(), 200, "{path} with the secret");
    }
    let stats: Value = client
        .get(server.url("/v1/stats"))
        .header("X-Load-Secret", "s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats[0]["remoteAddress"], "127.0.0.1");
    for path in ["/health/live", "/health/ready", "/v1/noop"] {
        assert_eq!(client.get(server.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
}

/// Item 8: a token whose `exp` (or `nbf`, `iat`) is not a number is refused with 401, on
/// `/v1/channel` and on the bus (4106). Before, a string `exp` never expired.
#[tokio::test]
async fn tokens_with_non_numeric_times_are_refused() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    for claims in [
        json!({"iss": "odoo:channel:1", "exp": "1700000000"}),
        json!({"iss": "odoo:channel:1", "nbf": "0"}),
        json!({"iss": "odoo:channel:1", "iat": {"t": 1}}),
    ] {
        let res = client
            .get(server.url("/v1/channel"))
            .header("Authorization", format!("jwt {}", server.token(claims.clone())))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{claims}");
        let body: Value = res.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("is not a number"), "{body}");
    }
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut ws = Ws::connect(&server.ws_url()).await;
    let jwt = common::sign(json!({"session_id": 1, "exp": "1700000000"}), &key());
    ws.send_text(json!({"channelUUID": uuid, "jwt": jwt}).to_string()).await;
    assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(4106));
}

/// A client whose requests leave from `source` (any 127.0.0.0/8 address is loopback).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(Some(source.parse().unwrap())).build().unwrap()
}

/// A WebSocket upgrade from `source` that never authenticates, carrying `X-Forwarded-For:
/// forwarded`; the response's status.
async fn bare_upgrade(server: &Server, source: &str, forwarded: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(server.http).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Forwarded-For: {forwarded}\r\n\r\n",
        server.http
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

/// Item 6: with `TRUSTED_PROXIES`, forwarded headers count only from those peers, and the caller is
/// the right-most entry that is not a proxy. Before, `PROXY=1` trusted the first entry from
/// anyone: a browser that named Odoo's address used up Odoo's rate limit, and a forged header
/// passed `/v1/disconnect`'s creator check.
#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    // The gateway (the trusted proxy) is 127.0.0.2, the attacker 127.0.0.3, browsers 127.0.0.1.
    const ODOO: &str = "203.0.113.10";
    let server = Server::start(&[
        ("PROXY", "1"),
        ("TRUSTED_PROXIES", "127.0.0.2"),
        ("RATE_LIMIT_PER_SECOND", "1"),
        ("RATE_LIMIT_BURST", "20"),
    ]);
    let gateway = client_from("127.0.0.2");
    let attacker = client_from("127.0.0.3");

    // 30 unauthenticated upgrades claiming to be Odoo exhaust only the attacker's own bucket.
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(bare_upgrade(&server, "127.0.0.3", ODOO).await);
    }
    assert!(statuses.contains(&429), "the attacker is limited as itself: {statuses:?}");
    let token = server.token(json!({"iss": "odoo:channel:1"}));
    let ask = |forwarded: String| {
        gateway
            .get(server.url("/v1/channel?webRTC=false"))
            .header("Authorization", format!("jwt {token}"))
            .header("X-Forwarded-For", forwarded)
            .send()
    };
    let res = ask(ODOO.to_string()).await.unwrap();
    assert_eq!(res.status(), 200, "Odoo's own request is not limited by the attacker's");
    let uuid = res.json::<Value>().await.unwrap()["uuid"].as_str().unwrap().to_string();
    // A chain whose first entry a client forged: the caller is still Odoo (same channel).
    let res = ask(format!("192.0.2.66, {ODOO}, 127.0.0.2")).await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["uuid"], uuid.as_str(), "the right-most entry that is not a proxy");
    let stats = gateway.get(server.url("/v1/stats")).send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(stats[0]["remoteAddress"], ODOO);

    // A forged header from outside does not pass the creator check of /v1/disconnect.
    let mut ws = Ws::join(&server, &uuid, json!(7), &key()).await;
    let body = common::sign(json!({"sessionIdsByChannel": {uuid.clone(): [7]}}), &key());
    let res = attacker
        .post(server.url("/v1/disconnect"))
        .header("X-Forwarded-For", ODOO)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(ws.frame_within(Duration::from_millis(500)).await.is_none(), "the session was not kicked");
    // Odoo, through its proxy, can.
    let res =
        gateway.post(server.url("/v1/disconnect")).header("X-Forwarded-For", ODOO).body(body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(4108));
}

/// A raw TCP connection to the server from `source`.
async fn tcp_from(server: &Server, source: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server.http).await.unwrap()
}

/// Trickles `body` one byte a second after `head` until the server answers or closes; returns
/// what it answered and after how long, or `None` if it kept waiting past `limit`.
async fn trickle(mut stream: tokio::net::TcpStream, head: &str, limit: Duration) -> Option<(String, Duration)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = tokio::time::Instant::now();
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some((String::from_utf8_lossy(&answer).into_owned(), started.elapsed())),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let _ = stream.write_all(b"a").await;
            }
        }
    }
    None
}

/// Item 1: a request body trickled one byte a second no longer holds its connection forever (408
/// after 10 s, then closed), a chunked body announcing 2^64 bytes neither; an idle connection is
/// closed too. Before, such requests stayed open indefinitely.
#[tokio::test]
async fn slow_request_bodies_are_cut_off() {
    let server = Server::start(&[]);
    let limit = Duration::from_secs(25);
    let slow_post = "POST /v1/disconnect HTTP/1.1\r\nHost: sfu\r\nContent-Length: 60000\r\n\r\n";
    let content_length = tokio::spawn(trickle(tcp_from(&server, "127.0.0.4").await, slow_post, limit));
    let chunked = "POST /v1/disconnect HTTP/1.1\r\nHost: sfu\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n";
    let chunked = tokio::spawn(trickle(tcp_from(&server, "127.0.0.4").await, chunked, limit));
    let idle = tokio::spawn(trickle(tcp_from(&server, "127.0.0.4").await, "", limit));
    for (what, task) in [("Content-Length", content_length), ("chunked", chunked)] {
        let (answer, after) = task.await.unwrap().unwrap_or_else(|| panic!("the {what} body was never cut off"));
        assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer:?}");
        assert!(after < Duration::from_secs(15), "{what} cut off after {after:?}");
    }
    let (answer, after) = idle.await.unwrap().expect("the idle connection was never closed");
    assert!(after < Duration::from_secs(15), "idle closed after {after:?} ({answer:?})");
}

/// Item 1: one address cannot take every connection. Before, 300 slow bodies from one address
/// under `MAX_CONNECTIONS=300` made every legitimate request fail.
#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let server = Server::start(&[("MAX_CONNECTIONS", "40"), ("MAX_CONNECTIONS_PER_ADDRESS", "10")]);
    let slow_post = "POST /v1/disconnect HTTP/1.1\r\nHost: sfu\r\nContent-Length: 60000\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..40 {
        let stream = tcp_from(&server, "127.0.0.3").await;
        held.push(tokio::spawn(trickle(stream, slow_post, Duration::from_secs(3))));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = client_from("127.0.0.1").get(server.url("/v1/noop")).send().await;
    assert_eq!(res.map(|r| r.status().as_u16()).ok(), Some(200), "a legitimate request gets through");
    let mut refused = 0;
    for task in held {
        if let Some((answer, after)) = task.await.unwrap()
            && answer.is_empty()
            && after < Duration::from_secs(1)
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 30, "beyond 10 connections the attacker's are closed at once");
}

/// Item 4: a WebSocket that never authenticates costs little memory. Before, each held ~140 KB
/// (16,000 of them → 300 MB).
#[tokio::test]
async fn unauthenticated_websockets_are_cheap() {
    let server = Server::start(&[("RATE_LIMIT_PER_SECOND", "0")]);
    const SOCKETS: usize = 400;
    // Warm up the allocator and the runtime with a few first.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(Ws::connect(&server.ws_url()).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server.rss_bytes();
    for _ in 0..SOCKETS {
        idle.push(Ws::connect(&server.ws_url()).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_socket = server.rss_bytes().saturating_sub(before) / SOCKETS as u64;
    eprintln!("resident memory per idle unauthenticated WebSocket: {per_socket} bytes");
    assert!(per_socket < 32 << 10, "{per_socket} bytes per idle socket");
    // They are still served: a channel and a join work.
    let uuid = server.channel("odoo:channel:1", false).await;
    Ws::join(&server, &uuid, json!(1), &key()).await;
}

/// Item 10: the documented close codes reach the client as close frames. Before, an oversized
/// first frame arrived as 1006 (the connection dropped, no close frame).
#[tokio::test]
async fn an_oversized_first_frame_is_closed_with_1009() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(&server.ws_url()).await;
    let _ = ws.stream.send(Message::Text("x".repeat(300 << 10).into())).await;
    assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(1009));
}

/// Item 10: a client that keeps sending after it is cut off for flooding still reads 1011 (a
/// closing handshake instead of a close with unread data, which reset the connection: 1006).
#[tokio::test]
async fn a_flooder_still_sending_reads_its_1011() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut flooder = Ws::join(&server, &uuid, json!(1), &key()).await;
    let frame = json!([{"message": {"name": "BROADCAST", "payload": 1}}]).to_string();
    // Five messages a millisecond for 1.2 s: over the budget within a fraction of a second, and
    // still sending for a second after the server cut the client off.
    let started = tokio::time::Instant::now();
    'sending: while started.elapsed() < Duration::from_millis(1200) {
        for _ in 0..5 {
            if flooder.stream.send(Message::Text(frame.clone().into())).await.is_err() {
                break 'sending;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(flooder.expect_close(Duration::from_secs(5)).await, Some(1011));
}

/// Item 11: a body over the limit is answered 413, and a client that is still sending it reads
/// that answer. Before, an 8 MiB `POST /v1/disconnect` got a reset (broken pipe) instead.
#[tokio::test]
async fn an_oversized_body_still_being_sent_gets_its_413() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    for size in [8 << 20, 100 << 10] {
        let res = client.post(server.url("/v1/disconnect")).body(vec![b'x'; size]).send().await;
        let res = res.unwrap_or_else(|e| panic!("{size} bytes: {e:?}"));
        assert_eq!(res.status(), 413, "{size} bytes");
        let body: Value = res.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("64 KiB"), "{body}");
    }
}

/// Item 12: failed WebSocket authentications are logged at debug, with one summary line at warn
/// per 10 s. Before, each one was an INFO line: the attacker set the log volume.
#[tokio::test]
async fn failed_authentications_do_not_set_the_log_volume() {
    let server = Server::start(&[("LOG_LEVEL", "info")]);
    let uuid = server.channel("odoo:channel:1", false).await;
    for _ in 0..50 {
        let mut ws = Ws::connect(&server.ws_url()).await;
        ws.send_text(json!({"channelUUID": uuid, "jwt": "garbage"}).to_string()).await;
        assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(4106));
    }
    let log = server.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("authentication")).collect();
    assert_eq!(lines.len(), 1, "one summary line for 50 failures: {lines:#?}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
}
