//! The WebSocket bus of the real binary: authentication in both forms, close codes, broadcast and
//! info flows, replacement, kicks, PING, hostile clients.

mod common;

use common::{Frame, Server, Ws, key, now, sign};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn payload(env: &Value) -> &Value {
    &env["message"]["payload"]
}

#[tokio::test]
async fn both_credential_forms_are_acknowledged_with_an_empty_frame() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    // Modern: {"channelUUID", "jwt"}.
    let _a = Ws::join(&server, &uuid, json!(1), &key()).await;
    // Legacy (Odoo 17): the JSON string of a jwt carrying sfu_channel_uuid.
    let mut legacy = Ws::connect(&server.ws_url()).await;
    let jwt = sign(json!({"sfu_channel_uuid": uuid, "session_id": 2}), &key());
    legacy.send_text(json!(jwt).to_string()).await;
    assert_eq!(legacy.frame().await, Frame::Text(String::new()));
    // Any path upgrades.
    let mut other_path = Ws::connect(&format!("ws://{}/some/path?x=1", server.http)).await;
    other_path.authenticate(&uuid, &sign(json!({"session_id": 3}), &key())).await;
}

#[tokio::test]
async fn authentication_failures_close_with_4106() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let keyed = server.channel_with("odoo:channel:2", false, json!({"key": "Y2hhbm5lbA=="})).await;
    let frames = vec![
        json!({"channelUUID": uuid, "jwt": "garbage"}).to_string(),
        json!({"channelUUID": uuid, "jwt": sign(json!({"session_id": 0}), &key())}).to_string(),
        json!({"channelUUID": uuid, "jwt": sign(json!({"other": 1}), &key())}).to_string(),
        json!({"channelUUID": "00000000-0000-4000-8000-000000000000", "jwt": sign(json!({"session_id": 1}), &key())})
            .to_string(),
        json!({"channelUUID": uuid, "jwt": sign(json!({"session_id": 1, "exp": now() - 5}), &key())}).to_string(),
        // A keyed channel cannot be reached without channelUUID, nor with the global key.
        json!(sign(json!({"sfu_channel_uuid": keyed, "session_id": 1}), &key())).to_string(),
        json!({"channelUUID": keyed, "jwt": sign(json!({"session_id": 1}), &key())}).to_string(),
        "not json at all".to_string(),
        "42".to_string(),
    ];
    for frame in frames {
        let mut ws = Ws::connect(&server.ws_url()).await;
        ws.send_text(frame.clone()).await;
        assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(4106), "for {frame}");
    }
}

#[tokio::test]
async fn silent_sockets_are_closed_with_4107_and_cost_nothing_to_others() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    // Many idle connections that never authenticate.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(Ws::connect(&server.ws_url()).await);
    }
    // Meanwhile a real session works normally.
    let mut a = Ws::join(&server, &uuid, json!(1), &key()).await;
    let mut b = Ws::join(&server, &uuid, json!(2), &key()).await;
    a.message("BROADCAST", json!({"ping": 1})).await;
    assert_eq!(payload(&b.expect_message("BROADCAST").await)["message"], json!({"ping": 1}));
    let started = Instant::now();
    for ws in idle.iter_mut() {
        assert_eq!(ws.expect_close(Duration::from_secs(15)).await, Some(4107));
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ringsfu_websocket_closes_total{code=\"4107\"} 300"), "{metrics}");
}

#[tokio::test]
async fn a_full_channel_refuses_with_4109_after_the_acknowledgement() {
    let server = Server::start(&[("CHANNEL_SIZE", "2")]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let _a = Ws::join(&server, &uuid, json!(1), &key()).await;
    let _b = Ws::join(&server, &uuid, json!(2), &key()).await;
    let mut c = Ws::join(&server, &uuid, json!(3), &key()).await;
    assert_eq!(c.expect_close(Duration::from_secs(5)).await, Some(4109));
}

#[tokio::test]
async fn the_same_session_id_replaces_the_old_connection() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut watcher = Ws::join(&server, &uuid, json!(9), &key()).await;
    let mut first = Ws::join(&server, &uuid, json!(5), &key()).await;
    let mut second = Ws::join(&server, &uuid, json!(5), &key()).await;
    assert_eq!(first.expect_close(Duration::from_secs(5)).await, Some(4108));
    assert_eq!(payload(&watcher.expect_message("SESSION_LEAVE").await), &json!({"sessionId": 5}));
    // "5" (a string) is another session than 5 (a number).
    let _string_five = Ws::join(&server, &uuid, json!("5"), &key()).await;
    second.message("BROADCAST", json!("still here")).await;
    assert_eq!(payload(&watcher.expect_message("BROADCAST").await), &json!({"senderId": 5, "message": "still here"}));
    let stats = server.get_json("/v1/stats").await;
    assert_eq!(stats[0]["sessionsStats"]["count"], 3);
}

#[tokio::test]
async fn broadcast_and_info_flow_between_three_sessions() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut s1 = Ws::join(&server, &uuid, json!(1), &key()).await;
    let mut s2 = Ws::join(&server, &uuid, json!(2), &key()).await;
    let mut s3 = Ws::join(&server, &uuid, json!(3), &key()).await;

    s1.message("BROADCAST", json!({"hello": [1, 2]})).await;
    for ws in [&mut s2, &mut s3] {
        assert_eq!(
            payload(&ws.expect_message("BROADCAST").await),
            &json!({"senderId": 1, "message": {"hello": [1, 2]}})
        );
    }

    // Only the six known keys are kept, as booleans.
    s2.message("C_INFO_CHANGE", json!({"info": {"isTalking": 1, "isSelfMuted": false, "evil": "x"}})).await;
    for ws in [&mut s1, &mut s3] {
        assert_eq!(
            payload(&ws.expect_message("S_INFO_CHANGE").await),
            &json!({"2": {"isTalking": true, "isSelfMuted": false}})
        );
    }
    // needRefresh: the others' info to the asker only (never its own), then its info to the others.
    s3.message("C_INFO_CHANGE", json!({"info": {"isRaisingHand": true}, "needRefresh": true})).await;
    let refresh = s3.expect_message("S_INFO_CHANGE").await;
    assert_eq!(payload(&refresh), &json!({"1": {}, "2": {"isTalking": true, "isSelfMuted": false}}));
    for ws in [&mut s1, &mut s2] {
        let env = ws.expect_message("S_INFO_CHANGE").await;
        assert_eq!(payload(&env), &json!({"3": {"isRaisingHand": true}}));
    }
    // Leaving is announced.
    drop(s1);
    for ws in [&mut s2, &mut s3] {
        assert_eq!(payload(&ws.expect_message("SESSION_LEAVE").await), &json!({"sessionId": 1}));
    }
}

#[tokio::test]
async fn messages_of_a_burst_are_batched() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut a = Ws::join(&server, &uuid, json!(1), &key()).await;
    let mut b = Ws::join(&server, &uuid, json!(2), &key()).await;
    let burst: Vec<Value> = (0..5).map(|i| json!({"message": {"name": "BROADCAST", "payload": i}})).collect();
    a.send_envelopes(Value::Array(burst)).await;
    let first = b.envelopes().await;
    assert_eq!(first.len(), 1, "the first message of a burst goes at once");
    let rest = b.envelopes().await;
    assert_eq!(rest.len(), 4, "the others go together at the end of the window");
    assert_eq!(payload(&rest[3])["message"], 4);
}

#[tokio::test]
async fn hostile_frames_are_refused_without_disturbing_others() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut bystander = Ws::join(&server, &uuid, json!(100), &key()).await;
    let mut other = Ws::join(&server, &uuid, json!(101), &key()).await;

    // Unknown message names are ignored; unknown requests get an error reply.
    let mut ws = Ws::join(&server, &uuid, json!(1), &key()).await;
    ws.message("NOT_A_MESSAGE", json!({})).await;
    let id = ws.request("NOT_A_REQUEST", json!({})).await;
    let reply = ws.expect_reply(&id).await;
    assert_eq!(reply["error"], "unknown message NOT_A_REQUEST");
    assert!(reply.get("message").is_none());
    // A request that needs media on a channel without it gets a clear error too.
    let id = ws.request("INIT_PRODUCER", json!({"type": "audio", "kind": "audio", "rtpParameters": {}})).await;
    assert!(ws.expect_reply(&id).await["error"].as_str().unwrap().contains("webRTC=false"));

    // Invalid JSON: 1007.
    ws.send_text("{not json").await;
    assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(1007));
    // Binary: 1003.
    let mut ws = Ws::join(&server, &uuid, json!(2), &key()).await;
    use futures_util::SinkExt;
    ws.stream.send(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(1003));
    // A frame over the size cap: 1009.
    let mut ws = Ws::join(&server, &uuid, json!(3), &key()).await;
    let huge = json!([{"message": {"name": "BROADCAST", "payload": "x".repeat(400 * 1024)}}]).to_string();
    let _ = ws.stream.send(tokio_tungstenite::tungstenite::Message::Text(huge.into())).await;
    assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(1009));

    // The others never noticed anything but the leaves.
    bystander.message("BROADCAST", json!("fine")).await;
    let env = other.expect_message("BROADCAST").await;
    assert_eq!(payload(&env)["message"], "fine");
}

#[tokio::test]
async fn unanswered_pings_close_with_4107_and_answered_ones_keep_the_session() {
    let server = Server::start(&[("PING_INTERVAL_SECONDS", "1")]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut silent = Ws::join(&server, &uuid, json!(1), &key()).await;
    let mut polite = Ws::join(&server, &uuid, json!(2), &key()).await;
    let ping = silent.expect_message("PING").await;
    assert!(ping["needResponse"].as_str().unwrap().starts_with("s_"));
    assert!(ping["message"].get("payload").is_none());
    let seen = polite.pump(Duration::from_secs(13)).await;
    assert!(seen.iter().any(|e| e["message"]["name"] == "SESSION_LEAVE"), "the silent one leaves: {seen:?}");
    assert_eq!(silent.expect_close(Duration::from_secs(1)).await, Some(4107));
    polite.message("BROADCAST", json!(1)).await;
    assert_eq!(server.get_json("/v1/stats").await[0]["sessionsStats"]["count"], 1);
}

#[tokio::test]
async fn webrtc_channels_send_init_transports_and_close_unresponsive_clients() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", true).await;
    let mut ws = Ws::join(&server, &uuid, json!(1), &key()).await;
    let init = ws.expect_message("INIT_TRANSPORTS").await;
    let p = payload(&init);
    assert!(init["needResponse"].is_string());
    assert_eq!(p["capabilities"]["codecs"][0]["mimeType"], "audio/opus");
    for config in ["ctsConfig", "stcConfig"] {
        let c = &p[config];
        assert!(c["id"].is_string());
        assert_eq!(c["iceParameters"]["iceLite"], true);
        assert_eq!(c["iceCandidates"][0]["protocol"], "udp");
        assert_eq!(c["iceCandidates"][0]["address"], "127.0.0.1");
        let port = c["iceCandidates"][0]["port"].as_u64().unwrap() as u16;
        assert!(server.rtc.iter().any(|a| a.port() == port));
        assert_eq!(c["dtlsParameters"]["role"], "auto");
        assert_eq!(c["dtlsParameters"]["fingerprints"][0]["algorithm"], "sha-256");
        assert!(c.get("sctpParameters").is_none());
    }
    assert_eq!(p["producerOptionsByKind"]["video"]["encodings"].as_array().unwrap().len(), 3);
    assert_eq!(p["producerOptionsByKind"]["video"]["codecOptions"]["videoGoogleMaxBitrate"], 8_000_000);
    // No answer within the bus timeout: 1011, as upstream.
    assert_eq!(ws.expect_close(Duration::from_secs(8)).await, Some(1011));
}

#[tokio::test]
async fn a_kicked_session_gets_4108_and_the_lone_survivor_stays() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut a = Ws::join(&server, &uuid, json!(1), &key()).await;
    let mut b = Ws::join(&server, &uuid, json!(2), &key()).await;
    let body = sign(json!({"sessionIdsByChannel": {uuid.clone(): [2, 77]}}), &key());
    let res = reqwest::Client::new().post(server.url("/v1/disconnect")).body(body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(b.expect_close(Duration::from_secs(5)).await, Some(4108));
    assert_eq!(payload(&a.expect_message("SESSION_LEAVE").await), &json!({"sessionId": 2}));
}

#[tokio::test]
async fn a_disconnect_right_after_the_acknowledgement_finds_the_session() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut watcher = Ws::join(&server, &uuid, json!(1), &key()).await;
    let http = reqwest::Client::new();
    // The join is queued on the shard before the acknowledgement goes out, so a disconnect sent
    // the moment it arrives lands behind it, every time.
    for id in 100..120 {
        let mut ws = Ws::join(&server, &uuid, json!(id), &key()).await;
        let body = sign(json!({"sessionIdsByChannel": {uuid.clone(): [id]}}), &key());
        assert_eq!(http.post(server.url("/v1/disconnect")).body(body).send().await.unwrap().status(), 200);
        assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(4108), "session {id}");
        assert_eq!(payload(&watcher.expect_message("SESSION_LEAVE").await), &json!({"sessionId": id}));
    }
}

#[tokio::test]
async fn websockets_count_against_max_connections() {
    let server = Server::start(&[("MAX_CONNECTIONS", "3")]);
    let uuid = server.channel("odoo:channel:1", false).await;
    let mut open = Vec::new();
    for id in 1..=3 {
        // The channel request's connection holds a slot until the server sees it close.
        let mut ws = Ws::connect_when_admitted(&server.ws_url(), Duration::from_secs(5)).await;
        let jwt = sign(json!({"sfu_channel_uuid": uuid, "session_id": id, "exp": now() + 3600}), &key());
        ws.authenticate(&uuid, &jwt).await;
        open.push(ws);
    }
    // Upgraded connections still hold their place: a fourth is refused.
    let refused = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(server.ws_url())).await;
    assert!(matches!(refused, Ok(Err(_))), "a fourth connection must be refused");
    // One leaves; its place is free again.
    let mut leaving = open.pop().unwrap();
    leaving.stream.close(None).await.unwrap();
    assert_eq!(payload(&open[0].expect_message("SESSION_LEAVE").await), &json!({"sessionId": 3}));
    // The slot goes with the leaving task, which may finish a moment after the others hear of it.
    Ws::connect_when_admitted(&server.ws_url(), Duration::from_secs(5)).await;
}
