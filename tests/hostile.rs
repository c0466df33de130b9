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
