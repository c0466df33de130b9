//! The HTTP plane of the real binary: every route and status code, channel reuse, proxy mode,
//! disconnect rules, limits.

mod common;

use common::{Server, Ws, key, now, sign};
use reqwest::StatusCode;
use ringsfu_common::auth::Key;
use serde_json::{Value, json};
use std::time::Duration;

async fn get_channel(server: &Server, auth: Option<String>, query: &str) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(server.url(&format!("/v1/channel{query}")));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn noop_answers_ok() {
    let server = Server::start(&[]);
    let res = reqwest::get(server.url("/v1/noop")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"result": "ok"}));
}

#[tokio::test]
async fn channel_request_rules() {
    let server = Server::start(&[]);
    let good = |claims: Value| format!("jwt {}", server.token(claims));

    let (status, body) =
        get_channel(&server, Some(good(json!({"iss": "odoo:channel:1", "exp": now() + 30}))), "").await;
    assert_eq!(status, 200);
    let uuid = body["uuid"].as_str().unwrap().to_string();
    assert_eq!(body["url"], format!("http://127.0.0.1:{}", server.http.port()));

    // Same caller, same issuer: the same channel, whatever else the request says.
    let (_, again) = get_channel(
        &server,
        Some(format!("Bearer {}", server.token(json!({"iss": "odoo:channel:1", "key": "abcd"})))),
        "?webRTC=false",
    )
    .await;
    assert_eq!(again["uuid"], uuid.as_str());
    let (_, other) = get_channel(&server, Some(good(json!({"iss": "odoo:channel:2"}))), "").await;
    assert_ne!(other["uuid"], uuid.as_str());

    // Every way to be refused, each with a JSON error.
    let cases: Vec<(Option<String>, StatusCode, &str)> = vec![
        (None, StatusCode::UNAUTHORIZED, "missing Authorization"),
        (Some(server.token(json!({"iss": "x"}))), StatusCode::UNAUTHORIZED, "<scheme> <token>"),
        (Some("jwt not-a-token".into()), StatusCode::UNAUTHORIZED, "JWT"),
        (
            Some(format!("jwt {}", sign(json!({"iss": "x"}), &Key::from_bytes(b"wrong")))),
            StatusCode::UNAUTHORIZED,
            "signature",
        ),
        (Some(good(json!({"iss": "x", "exp": now() - 10}))), StatusCode::UNAUTHORIZED, "expired"),
        (Some(good(json!({"iss": "x", "nbf": now() + 600}))), StatusCode::UNAUTHORIZED, "not valid yet"),
        (Some(good(json!({"exp": now() + 30}))), StatusCode::FORBIDDEN, "iss"),
        (Some(good(json!({"iss": "y", "key": "*not base64*"}))), StatusCode::BAD_REQUEST, "key claim"),
    ];
    for (auth, status, needle) in cases {
        let (got, body) = get_channel(&server, auth.clone(), "").await;
        assert_eq!(got, status, "for {auth:?}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{error:?} should mention {needle:?}");
    }
}

#[tokio::test]
async fn odoo18_uuid_key_claim_makes_a_keyed_channel() {
    let server = Server::start(&[]);
    let channel_key = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
    let uuid = server.channel_with("odoo:channel:18", false, json!({"key": channel_key})).await;
    let k = Key::from_base64(channel_key).unwrap();
    // A session token signed with the channel key joins; the global key does not.
    let mut ws = Ws::join(&server, &uuid, json!(1), &k).await;
    ws.message("BROADCAST", json!("hi")).await;
    let mut refused = Ws::connect(&server.ws_url()).await;
    let jwt = sign(json!({"session_id": 2}), &key());
    refused.send_text(json!({"channelUUID": uuid, "jwt": jwt}).to_string()).await;
    assert_eq!(refused.expect_close(Duration::from_secs(5)).await, Some(4106));
}

#[tokio::test]
async fn proxy_mode_uses_forwarded_headers() {
    let server = Server::start(&[("PROXY", "1")]);
    let token = server.token(json!({"iss": "odoo:channel:7"}));
    let ask = |xff: &'static str| {
        reqwest::Client::new()
            .get(server.url("/v1/channel"))
            .header("Authorization", format!("jwt {token}"))
            .header("X-Forwarded-For", xff)
            .header("X-Forwarded-Host", "sfu.example.com, inner")
            .header("X-Forwarded-Proto", "https")
            .send()
    };
    let a: Value = ask("203.0.113.1, 10.0.0.1").await.unwrap().json().await.unwrap();
    assert_eq!(a["url"], "https://sfu.example.com");
    let b: Value = ask("203.0.113.1").await.unwrap().json().await.unwrap();
    assert_eq!(a["uuid"], b["uuid"], "the caller is the first X-Forwarded-For entry");
    let c: Value = ask("198.51.100.9").await.unwrap().json().await.unwrap();
    assert_ne!(a["uuid"], c["uuid"], "another caller address gets another channel");
    let stats = server.get_json("/v1/stats").await;
    let addresses: Vec<&str> = stats.as_array().unwrap().iter().map(|c| c["remoteAddress"].as_str().unwrap()).collect();
    assert!(addresses.contains(&"203.0.113.1") && addresses.contains(&"198.51.100.9"), "{stats}");
}

#[tokio::test]
async fn disconnect_kicks_only_named_sessions_of_channels_the_caller_created() {
    let server = Server::start(&[("PROXY", "1")]);
    let create = |xff: &'static str, iss: &'static str| {
        let token = server.token(json!({"iss": iss}));
        let url = server.url("/v1/channel?webRTC=false");
        async move {
            let v: Value = reqwest::Client::new()
                .get(url)
                .header("Authorization", format!("jwt {token}"))
                .header("X-Forwarded-For", xff)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["uuid"].as_str().unwrap().to_string()
        }
    };
    let mine = create("10.1.1.1", "odoo:channel:1").await;
    let theirs = create("10.2.2.2", "odoo:channel:1").await;
    let mut a1 = Ws::join(&server, &mine, json!(1), &key()).await;
    let mut a2 = Ws::join(&server, &mine, json!(2), &key()).await;
    let mut b1 = Ws::join(&server, &theirs, json!(1), &key()).await;

    let disconnect = |body: String, xff: &'static str| {
        reqwest::Client::new().post(server.url("/v1/disconnect")).header("X-Forwarded-For", xff).body(body).send()
    };
    let body = sign(
        json!({"sessionIdsByChannel": {mine.clone(): [1], theirs.clone(): [1], "00000000-0000-4000-8000-000000000000": [1]}, "exp": now() + 20}),
        &key(),
    );
    let res = disconnect(body, "10.1.1.1").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), 0);
    assert_eq!(a1.expect_close(Duration::from_secs(5)).await, Some(4108));
    // a2 sees a1 leave, and stays; b1 (another creator's channel) is untouched.
    let leave = a2.expect_message("SESSION_LEAVE").await;
    assert_eq!(leave["message"]["payload"], json!({"sessionId": 1}));
    assert!(b1.frame_within(Duration::from_millis(500)).await.is_none(), "b1 must not be kicked");

    // Bad bodies get clear errors.
    let res = disconnect("garbage".into(), "10.1.1.1").await.unwrap();
    assert_eq!(res.status(), 401);
    let res = disconnect(sign(json!({"other": 1}), &key()), "10.1.1.1").await.unwrap();
    assert_eq!(res.status(), 422);
    let res = disconnect("x".repeat(100 * 1024), "10.1.1.1").await.unwrap();
    assert_eq!(res.status(), 413);
    // The unread rest of the body must not be taken for the next request on the connection.
    assert_eq!(res.headers()["connection"], "close");
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].is_string());
    let res = disconnect(sign(json!({"other": 1}), &key()), "10.1.1.1").await.unwrap();
    assert_eq!(res.status(), 422, "a request after the 413 is answered on its own");
}

#[tokio::test]
async fn stats_describe_channels_and_their_sessions() {
    let server = Server::start(&[]);
    let uuid = server.channel("odoo:channel:3", false).await;
    let mut a = Ws::join(&server, &uuid, json!(1), &key()).await;
    let _b = Ws::join(&server, &uuid, json!(2), &key()).await;
    a.message("C_INFO_CHANGE", json!({"info": {"isCameraOn": true, "isScreenSharingOn": true}})).await;
    let stats =
        server.wait_json("/v1/stats", "camera and screen counted", |s| s[0]["sessionsStats"]["screenCount"] == 1).await;
    let entry = &stats[0];
    assert_eq!(entry["uuid"], uuid.as_str());
    assert_eq!(entry["remoteAddress"], "127.0.0.1");
    assert_eq!(entry["webRtcEnabled"], false);
    assert_eq!(entry["sessionsStats"]["count"], 2);
    assert_eq!(entry["sessionsStats"]["cameraCount"], 1);
    assert_eq!(entry["sessionsStats"]["screenCount"], 1);
    assert_eq!(entry["sessionsStats"]["incomingBitRate"], json!({"audio": 0, "camera": 0, "screen": 0, "total": 0}));
    assert!(entry["createDate"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    for (method, path, status) in [
        ("GET", "/", 404),
        ("GET", "/v1/src/server.js", 404),
        ("GET", "/v1/noop/", 404),
        ("POST", "/v1/noop", 405),
        ("GET", "/v1/disconnect", 405),
        ("DELETE", "/v1/channel", 405),
    ] {
        let res = client.request(method.parse().unwrap(), server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), status, "{method} {path}");
        let body: Value = res.json().await.unwrap();
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    // Oversized headers are refused by the HTTP layer.
    let res = client.get(server.url("/v1/noop")).header("X-Big", "a".repeat(40_000)).send().await.unwrap();
    assert_eq!(res.status(), 431);
}

#[tokio::test]
async fn load_health_and_metrics() {
    let server = Server::start(&[("LOAD_SECRET", "s3cret"), ("MAX_SESSIONS", "123")]);
    let res = reqwest::get(server.url("/v1/load")).await.unwrap();
    assert_eq!(res.status(), 401);
    let res =
        reqwest::Client::new().get(server.url("/v1/load")).header("X-Load-Secret", "s3cret").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let load: Value = res.json().await.unwrap();
    assert_eq!(load["maxSessions"], 123);
    assert_eq!(load["draining"], false);
    assert_eq!(load["shards"].as_array().unwrap().len(), 2);
    for key in ["channels", "sessions", "cpuUsage", "memoryUsage"] {
        assert!(load[key].is_number(), "{key} in {load}");
    }
    let memory = load["memoryUsage"].as_f64().unwrap();
    assert!(memory > 0.0 && memory < 1.0);
    for key in
        ["shard", "channels", "sessions", "cpuUsage", "packetsInPerSec", "packetsOutPerSec", "bitrateIn", "bitrateOut"]
    {
        assert!(load["shards"][0][key].is_number(), "{key} in {load}");
    }

    assert_eq!(server.get_json("/health/live").await["status"], "ok");
    assert_eq!(server.get_json("/health/ready").await["status"], "ready");
    let metrics = reqwest::Client::new()
        .get(server.url("/metrics"))
        .header("X-Load-Secret", "s3cret")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ringsfu_http_requests_total{",
        "ringsfu_shard_sessions{shard=\"0\"}",
        "ringsfu_shard_received_packets_total{",
        "ringsfu_shard_cpu_seconds_total{",
        "ringsfu_shard_dropped_packets_total{",
        "ringsfu_process_resident_memory_bytes",
        "ringsfu_websocket_connections",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn channel_requests_are_rate_limited_per_address() {
    let server = Server::start(&[("PROXY", "1"), ("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "3")]);
    let token = server.token(json!({"iss": "odoo:channel:1"}));
    let ask = |caller: &'static str| {
        reqwest::Client::new()
            .get(server.url("/v1/channel?webRTC=false"))
            .header("Authorization", format!("jwt {token}"))
            .header("X-Forwarded-For", caller)
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(ask("203.0.113.1").await.unwrap().status());
    }
    // The fifth: with one token back per second, the burst of 3 is spent even on a slow machine.
    let refused = ask("203.0.113.1").await.unwrap();
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3]);
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["content-type"], "application/json");
    assert_eq!(refused.json::<Value>().await.unwrap(), json!({"error": "too many requests from this address"}));
    assert_eq!(ask("198.51.100.7").await.unwrap().status(), StatusCode::OK, "another address has its own bucket");
    assert_eq!(ask("2001:db8::7").await.unwrap().status(), StatusCode::OK);
    let refusals = 1 + statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count() as u64;
    assert_eq!(server.metric("ringsfu_rate_limited_requests_total").await, refusals);
}

#[tokio::test]
async fn channels_spread_over_shards() {
    for shards in [1usize, 2] {
        let n = shards.to_string();
        let server = Server::start(&[("NUM_WORKERS", n.as_str())]);
        assert_eq!(server.rtc.len(), shards);
        for i in 0..4 {
            let uuid = server.channel(&format!("odoo:channel:{i}"), false).await;
            let _ = uuid;
        }
        // The channels count comes from the directory at once; the shards' from their counters.
        let on_shards =
            |l: &Value| l["shards"].as_array().unwrap().iter().map(|s| s["channels"].as_u64().unwrap()).sum::<u64>();
        let load = server.wait_load("4 channels", |l| l["channels"] == 4 && on_shards(l) == 4).await;
        let per_shard: Vec<u64> =
            load["shards"].as_array().unwrap().iter().map(|s| s["channels"].as_u64().unwrap()).collect();
        assert_eq!(per_shard.len(), shards);
        assert!(per_shard.iter().all(|c| *c == 4 / shards as u64), "{per_shard:?}");
    }
}
