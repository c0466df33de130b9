//! `sfu-gateway` as a process, in front of real `ringsfu` processes (PROXY=1) and fault-injecting
//! fake SFUs, all on loopback: selection by load and region, stickiness, failover, the circuit
//! breaker, overload, disconnect forwarding, the upstream-Node-SFU fallback, limits, refused
//! configurations and reloads.

mod common;
mod gateway_support;

use common::{Frame, Server, Ws, now, sign};
use gateway_support::{
    CHANNEL_KEY, FAST, FakeSfu, Fault, Gateway, LoadMode, channel_with_key, dead_address, gateway_key, node,
};
use reqwest::StatusCode;
use ringsfu_common::auth::Key;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// SFU keys: each SFU has its own, the gateway re-signs for each.
const KEY_A: &str = common::KEY_B64;
const KEY_B: &str = "c2Z1LWItaGFzLWl0cy1vd24ta2V5LWZvci10ZXN0cw==";
const KEY_C: &str = "dGhpcmQtc2Z1LWtleQ==";
/// A real ringsfu as it runs behind a gateway.
fn ringsfu(key_b64: &str) -> Server {
    Server::start(&[("PROXY", "1"), ("AUTH_KEY", key_b64), ("NUM_WORKERS", "1"), ("MAX_SESSIONS", "10")])
}

fn address(server: &Server) -> String {
    format!("http://{}", server.http)
}

fn secrets(nodes: &[String]) -> String {
    format!("{}\n{FAST}", nodes.concat())
}

/// Joins `session_id` to `channel` at the `url` a channel answer gave.
async fn join_at(url: &str, channel: &str, session_id: u64, key: &Key) -> Ws {
    let mut ws = Ws::connect(&format!("{}/", url.replacen("http", "ws", 1))).await;
    let jwt = sign(json!({"sfu_channel_uuid": channel, "session_id": session_id, "exp": now() + 3600}), key);
    ws.authenticate(channel, &jwt).await;
    ws
}

async fn sessions_seen(gw: &Gateway, sfu: &str, sessions: u64) {
    gw.wait_health(&format!("{sfu} reports {sessions} sessions"), |h| {
        h["nodes"].as_array().unwrap().iter().any(|n| n["address"] == sfu && n["load"]["sessions"] == sessions)
    })
    .await;
}

#[tokio::test]
async fn the_least_loaded_sfu_gets_the_channel_and_browsers_join_it_at_the_returned_url() {
    let (a, b) = (ringsfu(KEY_A), ringsfu(KEY_B));
    let gw =
        Gateway::start(&secrets(&[node(&address(&a), "here", KEY_A, ""), node(&address(&b), "here", KEY_B, "")]), &[]);
    gw.wait_all_healthy().await;

    // Three sessions on a, directly.
    let busy = a.channel("odoo:direct", false).await;
    let mut sessions = Vec::new();
    for i in 1..=3 {
        sessions.push(Ws::join(&a, &busy, json!(i), &common::key()).await);
    }
    sessions_seen(&gw, &address(&a), 3).await;

    let body = channel_with_key(&gw, "odoo:channel:load").await;
    assert_eq!(body["url"], address(&b), "b is less loaded");
    assert_eq!(body.as_object().unwrap().len(), 2, "the SFU's {{uuid, url}} untouched: {body}");
    let uuid = body["uuid"].as_str().unwrap();

    // The SFU saw the caller's address, and the channel kept its key claim: a browser joins with it.
    let stats = b.get_json("/v1/stats").await;
    assert_eq!(stats[0]["uuid"], uuid);
    assert_eq!(stats[0]["remoteAddress"], "127.0.0.1");
    let mut browser = join_at(body["url"].as_str().unwrap(), uuid, 1, &Key::from_base64(CHANNEL_KEY).unwrap()).await;
    browser.message("BROADCAST", json!("hello")).await;
}

#[tokio::test]
async fn a_repeated_iss_returns_the_same_channel_even_when_its_sfu_is_now_busier() {
    let (a, b) = (ringsfu(KEY_A), ringsfu(KEY_B));
    let gw =
        Gateway::start(&secrets(&[node(&address(&a), "here", KEY_A, ""), node(&address(&b), "here", KEY_B, "")]), &[]);
    gw.wait_all_healthy().await;

    let first = channel_with_key(&gw, "odoo:channel:sticky").await;
    let (uuid, url) = (first["uuid"].as_str().unwrap(), first["url"].as_str().unwrap());
    let mut sessions = Vec::new();
    for i in 1..=3 {
        sessions.push(join_at(url, uuid, i, &Key::from_base64(CHANNEL_KEY).unwrap()).await);
    }
    sessions_seen(&gw, url, 3).await;

    for _ in 0..3 {
        assert_eq!(channel_with_key(&gw, "odoo:channel:sticky").await, first, "same SFU, same channel");
    }
    let other = channel_with_key(&gw, "odoo:channel:other").await;
    assert_ne!(other["url"], url, "a new channel goes to the less loaded SFU");
    let placements = gw.node(url).await["placements"].as_u64().unwrap();
    assert_eq!(placements, 1);
}

/// At `info`, a line per channel placed, none for a caller asking again for its channel. The
/// gateway batches its lines only while it is busy: an idle one has written the line by the time
/// its answer is read.
#[tokio::test]
async fn each_new_channel_is_logged_once_and_at_once() {
    let sfu = FakeSfu::start(KEY_A);
    let gw = Gateway::start(&secrets(&[node(&sfu.address, "here", KEY_A, "")]), &[("SFU_GATEWAY_LOG_LEVEL", "info")]);
    gw.wait_all_healthy().await;
    let placed =
        |log: &str| log.lines().filter(|l| l.contains("channel placed")).map(str::to_string).collect::<Vec<_>>();
    for (issuer, lines) in [("odoo:channel:1", 1), ("odoo:channel:1", 1), ("odoo:channel:2", 2)] {
        let uuid = channel_with_key(&gw, issuer).await["uuid"].as_str().unwrap().to_string();
        // The line follows the answer by at most the gateway's return to idle.
        let deadline = Instant::now() + Duration::from_millis(500);
        while !gw.stderr().contains(&uuid) {
            assert!(Instant::now() < deadline, "no line for {issuer}'s channel {uuid}:\n{}", gw.stderr());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let log = gw.stderr();
        assert_eq!(placed(&log).len(), lines, "after {issuer}: {:#?}", placed(&log));
        assert!(placed(&log).last().unwrap().contains(&format!("issuer=\"{issuer}\"")), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_sfu_mid_run_loses_no_channel_request() {
    let (a, b) = (ringsfu(KEY_A), ringsfu(KEY_B));
    let (a_url, b_url) = (address(&a), address(&b));
    let gw = Gateway::start(&secrets(&[node(&a_url, "here", KEY_A, ""), node(&b_url, "here", KEY_B, "")]), &[]);
    gw.wait_all_healthy().await;
    let gw = std::sync::Arc::new(gw);

    let mut workers = Vec::new();
    for w in 0..4 {
        let gw = gw.clone();
        workers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..25 {
                let (status, body) = gw.channel(&format!("odoo:channel:{w}-{i}"), "").await;
                answers.push((status, body["url"].as_str().unwrap_or_default().to_string()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(a); // SIGKILL, mid-run
    let mut answers = Vec::new();
    for w in workers {
        answers.extend(w.await.unwrap());
    }
    assert_eq!(answers.len(), 100);
    for (status, url) in &answers {
        assert_eq!(*status, StatusCode::OK, "a request was lost: {answers:?}");
        assert!(*url == a_url || *url == b_url);
    }
    assert!(answers.iter().any(|(_, u)| *u == a_url), "a took some before it died");
    assert!(answers.iter().rev().take(8).all(|(_, u)| *u == b_url), "b took the rest");
    gw.wait_health("a unhealthy", |h| h["healthy"] == 1).await;
}

#[tokio::test]
async fn the_breaker_opens_on_failures_and_a_probe_closes_it_again() {
    let (p, backup) = (FakeSfu::start(KEY_A), FakeSfu::start(KEY_B));
    p.set_fault(Fault::Status(500));
    let gw = Gateway::start(&secrets(&[node(&p.address, "p", KEY_A, ""), node(&backup.address, "b", KEY_B, "")]), &[]);
    gw.wait_all_healthy().await;

    for i in 0..6 {
        let (status, body) = gw.channel(&format!("iss-{i}"), "region=p").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["url"], backup.address, "failed over");
    }
    assert_eq!(p.requests().len(), 3, "after 3 failures the open breaker keeps requests away");
    let breaker = &gw.node(&p.address).await["breaker"];
    assert_eq!(breaker["state"], "open", "{breaker}");
    assert_eq!(breaker["trips"], 1);

    p.set_fault(Fault::None);
    tokio::time::sleep(Duration::from_millis(1100)).await; // the 1 s cool-down
    let (status, body) = gw.channel("iss-probe", "region=p").await;
    assert_eq!((status, body["url"].clone()), (StatusCode::OK, json!(p.address)), "the probe went to p");
    assert_eq!(gw.node(&p.address).await["breaker"]["state"], "closed");
    let (_, body) = gw.channel("iss-after", "region=p").await;
    assert_eq!(body["url"], p.address);
}

#[tokio::test]
async fn with_every_sfu_down_the_answer_is_503_with_retry_after() {
    // Nothing listens: no SFU ever became healthy.
    let gw =
        Gateway::start(&secrets(&[node(&dead_address(), "x", KEY_A, ""), node(&dead_address(), "x", KEY_B, "")]), &[]);
    let response = gw.channel_response("iss", "", &[]).await;
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("no SFU can take the channel"), "{body}");
    assert_eq!(body["excluded"], json!({"unhealthy": 2}));
    let ready = reqwest::get(gw.url("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);

    // Healthy by their polls, but every channel request fails.
    let (a, b) = (FakeSfu::start(KEY_A), FakeSfu::start(KEY_B));
    a.set_fault(Fault::Status(500));
    b.set_fault(Fault::Status(502));
    let gw = Gateway::start(&secrets(&[node(&a.address, "x", KEY_A, ""), node(&b.address, "x", KEY_B, "")]), &[]);
    gw.wait_all_healthy().await;
    let response = gw.channel_response("iss", "", &[]).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("every SFU tried failed") && error.contains("502"), "{error}");
}

#[tokio::test]
async fn a_disconnect_through_the_gateway_kicks_the_session_on_the_right_ringsfu() {
    let (a, b) = (ringsfu(KEY_A), ringsfu(KEY_B));
    let gw =
        Gateway::start(&secrets(&[node(&address(&a), "here", KEY_A, ""), node(&address(&b), "here", KEY_B, "")]), &[]);
    gw.wait_all_healthy().await;
    let body = channel_with_key(&gw, "odoo:channel:kick").await;
    let (uuid, url) = (body["uuid"].as_str().unwrap(), body["url"].as_str().unwrap());
    let key = Key::from_base64(CHANNEL_KEY).unwrap();
    let mut one = join_at(url, uuid, 1, &key).await;
    let mut two = join_at(url, uuid, 2, &key).await;
    // The acknowledgement precedes the join on the shard: wait until the SFU counts both.
    let holder = if url == address(&a) { &a } else { &b };
    for _ in 0..100 {
        if holder.get_json("/v1/stats").await[0]["sessionsStats"]["count"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let token = sign(
        json!({"sessionIdsByChannel": {uuid: [1], "00000000-0000-4000-8000-000000000000": [9]}, "exp": now() + 20}),
        &gateway_key(),
    );
    let response = reqwest::Client::new().post(gw.url("/v1/disconnect")).body(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 0);
    assert_eq!(one.expect_close(Duration::from_secs(5)).await, Some(4108), "session 1 kicked");
    let leave = two.expect_message("SESSION_LEAVE").await;
    assert_eq!(leave["message"]["payload"], json!({"sessionId": 1}));
    assert!(!matches!(two.frame_within(Duration::from_millis(300)).await, Some(Frame::Close(..))), "2 stays");
}

#[tokio::test]
async fn disconnects_are_split_by_the_sfu_holding_each_channel() {
    let (a, b, c) = (FakeSfu::start(KEY_A), FakeSfu::start(KEY_B), FakeSfu::start(KEY_C));
    let gw = Gateway::start(
        &secrets(&[
            node(&a.address, "a", KEY_A, ""),
            node(&b.address, "b", KEY_B, ""),
            node(&c.address, "c", KEY_C, ""),
        ]),
        &[],
    );
    gw.wait_all_healthy().await;
    let (_, on_a) = gw.channel("iss-a", "region=a").await;
    let (_, on_b) = gw.channel("iss-b", "region=b").await;
    let (on_a, on_b) = (on_a["uuid"].as_str().unwrap(), on_b["uuid"].as_str().unwrap());

    let exp = now() + 20;
    let token = sign(json!({"sessionIdsByChannel": {on_a: [1], on_b: [2], "lost": [3]}, "exp": exp}), &gateway_key());
    let response = reqwest::Client::new().post(gw.url("/v1/disconnect")).body(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let part = |sfu: &FakeSfu| {
        let seen = sfu.disconnects();
        assert_eq!(seen.len(), 1, "{}", sfu.address);
        assert_eq!(seen[0].forwarded_for.as_deref(), Some("127.0.0.1"), "the caller's address, for the creator check");
        assert_eq!(seen[0].claims["exp"], exp, "other claims are kept");
        seen[0].claims["sessionIdsByChannel"].clone()
    };
    assert_eq!(part(&a), json!({on_a: [1], "lost": [3]}));
    assert_eq!(part(&b), json!({on_b: [2], "lost": [3]}));
    assert_eq!(part(&c), json!({"lost": [3]}), "an unknown channel goes to every healthy SFU");

    // The holder cannot be reached: the caller is told.
    let holder = a.address.clone();
    drop(a);
    let token = sign(json!({"sessionIdsByChannel": {on_a: [1]}}), &gateway_key());
    let response = reqwest::Client::new().post(gw.url("/v1/disconnect")).body(token).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains(&holder), "{body}");
}

#[tokio::test]
async fn faulty_sfus_are_failed_over_and_a_4xx_is_passed_back_untried() {
    let backup = FakeSfu::start(KEY_A);
    let slow = FakeSfu::start(KEY_B);
    slow.set_fault(Fault::Slow(Duration::from_millis(1500)));
    let error = FakeSfu::start(KEY_B);
    error.set_fault(Fault::Status(503));
    let wrong_key = FakeSfu::start(KEY_C); // configured below with KEY_B: it refuses the gateway's tokens
    let garbage = FakeSfu::start(KEY_B);
    garbage.set_fault(Fault::BadBody);
    let vanishing = FakeSfu::start(KEY_B);
    let bad_request = FakeSfu::start(KEY_B);
    bad_request.set_fault(Fault::Status(400));
    let limited = FakeSfu::start(KEY_B);
    limited.set_fault(Fault::Status(429));
    let nodes = [
        node(&backup.address, "backup", KEY_A, ""),
        node(&slow.address, "slow", KEY_B, ""),
        node(&error.address, "error", KEY_B, ""),
        node(&wrong_key.address, "wrong-key", KEY_B, ""),
        node(&garbage.address, "garbage", KEY_B, ""),
        node(&vanishing.address, "vanishing", KEY_B, ""),
        node(&bad_request.address, "bad-request", KEY_B, ""),
        node(&limited.address, "limited", KEY_B, ""),
    ];
    // The faulty ones are busier and assignments do not bump: outside the hinted region the
    // backup always ranks first, so a failover lands there.
    for faulty in [&slow, &error, &wrong_key, &garbage, &vanishing, &bad_request, &limited] {
        faulty.set_sessions(9);
    }
    let gw = Gateway::start(&format!("{}\n[balancing]\nsessions_per_channel = 0\n", secrets(&nodes)), &[]);
    gw.wait_all_healthy().await;
    drop(vanishing); // connection refused from now on

    for region in ["slow", "error", "wrong-key", "garbage", "vanishing"] {
        let before = backup.requests().len();
        let started = Instant::now();
        let (status, body) = gw.channel(&format!("iss-{region}"), &format!("region={region}")).await;
        assert_eq!((status, &body["url"]), (StatusCode::OK, &json!(backup.address)), "{region}: {body}");
        assert_eq!(backup.requests().len(), before + 1, "{region}");
        if region == "slow" {
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(600) && waited < Duration::from_millis(1500), "{waited:?}");
        }
    }
    let wrong = gw.node(&wrong_key.address).await;
    assert_eq!(wrong["breaker"]["failures"], 1, "{wrong}");

    for (region, expected) in [("bad-request", 400), ("limited", 429)] {
        let before = backup.requests().len();
        let (status, body) = gw.channel(&format!("iss-{region}"), &format!("region={region}")).await;
        assert_eq!(status.as_u16(), expected, "{region}");
        assert_eq!(body, json!({"error": "injected fault"}), "the SFU's answer, untouched");
        assert_eq!(backup.requests().len(), before, "{region}: a 4xx is not retried");
    }
}

#[tokio::test]
async fn health_follows_its_thresholds_for_a_flapping_sfu() {
    let f = FakeSfu::start(KEY_A);
    let gw = Gateway::start(&secrets(&[node(&f.address, "x", KEY_A, "")]), &[]);
    gw.wait_all_healthy().await;

    // Every other poll fails: never two in a row, so never unhealthy.
    let start = f.polls();
    f.script_polls(&[false, true, false, true, false, true, false, true, false, true]);
    while f.polls() < start + 11 {
        let n = gw.node(&f.address).await;
        assert_eq!(n["state"], "healthy", "{n}");
        assert!(n["consecutiveFailures"].as_u64().unwrap() <= 1, "{n}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }

    // Two failures in a row: unhealthy; two successes: healthy again.
    let start = f.polls();
    f.script_polls(&[false, false, true]);
    let mut states = Vec::new();
    while f.polls() < start + 6 {
        let n = gw.node(&f.address).await;
        if n["state"] == "unhealthy" {
            let (failures, successes) = (n["consecutiveFailures"].as_u64(), n["consecutiveSuccesses"].as_u64());
            assert!(failures >= Some(2) || successes == Some(1), "{n}");
        }
        if states.last() != Some(&n["state"]) {
            states.push(n["state"].clone());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(states, vec![json!("healthy"), json!("unhealthy"), json!("healthy")]);
}

#[tokio::test]
async fn an_upstream_node_sfu_without_load_is_polled_on_noop_and_scored_half_loaded() {
    let (upstream, ours) = (FakeSfu::start(KEY_A), FakeSfu::start(KEY_B));
    upstream.set_load_mode(LoadMode::Missing);
    ours.set_sessions(2);
    let gw =
        Gateway::start(&secrets(&[node(&upstream.address, "x", KEY_A, ""), node(&ours.address, "x", KEY_B, "")]), &[]);
    gw.wait_all_healthy().await;
    let n = gw.node(&upstream.address).await;
    assert_eq!(
        (n["state"].clone(), n["loadKnown"].clone(), n["load"].clone()),
        (json!("healthy"), json!(false), Value::Null)
    );
    assert_eq!(n["score"], 0.5);

    let (_, body) = gw.channel("iss-1", "").await;
    assert_eq!(body["url"], ours.address, "2 of 10 sessions scores 0.2 < 0.5");
    ours.set_sessions(8);
    sessions_seen(&gw, &ours.address, 8).await;
    let (_, body) = gw.channel("iss-2", "").await;
    assert_eq!(body["url"], upstream.address, "8 of 10 sessions scores 0.8 > 0.5");
}

#[tokio::test]
async fn region_and_country_hints_choose_the_region_and_fall_back_when_it_is_down() {
    let (eu, us) = (FakeSfu::start(KEY_A), FakeSfu::start(KEY_B));
    eu.set_sessions(8);
    let gw = Gateway::start(
        &secrets(&[node(&eu.address, "eu-west", KEY_A, ""), node(&us.address, "us-east", KEY_B, "")]),
        &[],
    );
    gw.wait_all_healthy().await;
    let rows = [
        ("", &us),                        // no hint: the less loaded one
        ("region=eu-west", &eu),          // a region hint wins over load
        ("country=FR", &eu),              // France is nearest eu-west
        ("country=ca", &us),              // Canada is nearest us-east
        ("region=mars", &us),             // an unknown region is no hint
        ("webRTC=false&country=BE", &eu), // other parameters do not disturb the hint
    ];
    for (i, (query, expected)) in rows.iter().enumerate() {
        let (status, body) = gw.channel(&format!("iss-{i}"), query).await;
        assert_eq!((status, &body["url"]), (StatusCode::OK, &json!(expected.address)), "{query}");
    }
    assert_eq!(eu.requests().last().unwrap().query.as_deref(), Some("webRTC=false"), "hints are not forwarded");

    eu.set_load_mode(LoadMode::Failing);
    gw.wait_health("eu down", |h| h["healthy"] == 1).await;
    let (status, body) = gw.channel("iss-fallback", "region=eu-west").await;
    assert_eq!((status, &body["url"]), (StatusCode::OK, &json!(us.address)), "falls back to any healthy SFU");
}

#[tokio::test]
async fn the_sfu_gets_the_callers_address_the_query_and_every_claim() {
    let sfu = FakeSfu::start(KEY_A);
    let document = secrets(&[node(&sfu.address, "r", KEY_A, "")]);
    let direct = Gateway::start(&document, &[]);
    let proxied = Gateway::start(&document, &[("SFU_GATEWAY_TRUST_PROXY", "true")]);
    direct.wait_all_healthy().await;
    proxied.wait_all_healthy().await;

    let claims = json!({"iss": "odoo:channel:9", "key": CHANNEL_KEY, "exp": now() + 30, "custom": [1, {"x": 2}]});
    let token = sign(claims.clone(), &gateway_key());
    for gw in [&direct, &proxied] {
        let response = reqwest::Client::new()
            .get(gw.url("/v1/channel?region=r&webRTC=false&recordingAddress=http%3A%2F%2Fodoo%2Fx&country=FR"))
            .header("Authorization", format!("Bearer {token}"))
            .header("X-Forwarded-For", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let seen = sfu.requests();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(Value::Object(s.claims.clone()), claims, "every claim, re-signed with the SFU's key");
        assert_eq!(s.query.as_deref(), Some("webRTC=false&recordingAddress=http%3A%2F%2Fodoo%2Fx"));
    }
    assert_eq!(seen[0].forwarded_for.as_deref(), Some("127.0.0.1"), "an untrusted header is ignored");
    assert_eq!(seen[1].forwarded_for.as_deref(), Some("203.0.113.9, 127.0.0.1"), "a trusted chain is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_between_two_polls_is_spread_over_equal_sfus() {
    let (a, b) = (FakeSfu::start(KEY_A), FakeSfu::start(KEY_B));
    // Slow polls: the whole burst falls between two of them.
    let document = format!(
        "{}{}[health]\ninterval_seconds = 30\n[balancing.weights]\nsessions = 1\ncpu = 0\nmemory = 0\n",
        node(&a.address, "x", KEY_A, ""),
        node(&b.address, "x", KEY_B, "")
    );
    let gw = std::sync::Arc::new(Gateway::start(&document, &[]));
    gw.wait_all_healthy().await;
    let burst: Vec<_> = (0..20)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.channel(&format!("burst-{i}"), "").await })
        })
        .collect();
    for request in burst {
        assert_eq!(request.await.unwrap().0, 200);
    }
    assert_eq!((a.requests().len(), b.requests().len()), (10, 10), "each assignment bumps its SFU at once");
}

#[tokio::test]
async fn bad_tokens_bad_bodies_and_oversized_requests_get_clear_4xx() {
    let sfu = FakeSfu::start(KEY_A);
    let gw = Gateway::start(&secrets(&[node(&sfu.address, "x", KEY_A, "")]), &[]);
    let client = reqwest::Client::new();
    let good = |claims: Value| format!("jwt {}", sign(claims, &gateway_key()));
    let cases: Vec<(Option<String>, StatusCode, &str)> = vec![
        (None, StatusCode::UNAUTHORIZED, "missing Authorization"),
        (Some(sign(json!({"iss": "x"}), &gateway_key())), StatusCode::UNAUTHORIZED, "<scheme> <token>"),
        (Some("jwt not-a-token".into()), StatusCode::UNAUTHORIZED, "JWT"),
        (Some(good(json!({"iss": "x"})).replace("jwt ", "jwt x")), StatusCode::UNAUTHORIZED, ""),
        (Some(format!("jwt {}", sign(json!({"iss": "x"}), &common::key()))), StatusCode::UNAUTHORIZED, "signature"),
        (Some(good(json!({"iss": "x", "exp": now() - 10}))), StatusCode::UNAUTHORIZED, "expired"),
        (Some(good(json!({"iss": "x", "nbf": now() + 600}))), StatusCode::UNAUTHORIZED, "not valid yet"),
        (Some(good(json!({"exp": now() + 30}))), StatusCode::FORBIDDEN, "iss"),
        (Some(good(json!({"iss": ""}))), StatusCode::FORBIDDEN, "iss"),
        (Some(good(json!({"iss": "y", "key": "*not base64*"}))), StatusCode::BAD_REQUEST, "key claim"),
        (Some(good(json!({"iss": "y", "key": 5}))), StatusCode::BAD_REQUEST, "key claim"),
    ];
    for (auth, status, needle) in cases {
        let mut request = client.get(gw.url("/v1/channel"));
        if let Some(a) = &auth {
            request = request.header("Authorization", a);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{auth:?}");
        let body: Value = response.json().await.unwrap();
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{error:?} should mention {needle:?}");
    }

    let disconnect = |body: Vec<u8>| client.post(gw.url("/v1/disconnect")).body(body).send();
    let rows: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"garbage".to_vec(), 401, "JWT"),
        (vec![0xff, 0xfe], 400, "body must be a JWT"),
        (sign(json!({"sessionIdsByChannel": {}}), &common::key()).into_bytes(), 401, "signature"),
        (sign(json!({"other": 1}), &gateway_key()).into_bytes(), 422, "sessionIdsByChannel"),
        (sign(json!({"sessionIdsByChannel": [1]}), &gateway_key()).into_bytes(), 422, "sessionIdsByChannel"),
        (vec![b'x'; 100 * 1024], 413, "request body over 64 KiB"),
    ];
    for (body, status, needle) in rows {
        let response = disconnect(body).await.unwrap();
        assert_eq!(response.status(), status, "{needle}");
        if status == 413 {
            assert_eq!(response.headers()["connection"], "close", "the unread body makes the connection unusable");
        }
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().contains(needle), "{error} should mention {needle:?}");
    }
    let response = disconnect(sign(json!({"sessionIdsByChannel": {}}), &gateway_key()).into_bytes()).await.unwrap();
    assert_eq!(response.status(), 200, "nothing to forward is fine");

    for (method, path, status) in
        [("GET", "/", 404), ("GET", "/v1/load", 404), ("POST", "/v1/noop", 405), ("GET", "/v1/disconnect", 405)]
    {
        let response = client.request(method.parse().unwrap(), gw.url(path)).send().await.unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    }
    let response = client.get(gw.url("/v1/noop")).header("X-Big", "a".repeat(40_000)).send().await.unwrap();
    assert_eq!(response.status(), 431);
    assert!(sfu.requests().is_empty(), "nothing bad reached the SFU");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_sfu_list_without_dropping_requests_in_flight() {
    let (old, new) = (FakeSfu::start(KEY_A), FakeSfu::start(KEY_B));
    old.set_fault(Fault::Slow(Duration::from_millis(800)));
    // Attempts may take 2 s here: the old SFU answers after 0.8 s.
    let document =
        secrets(&[node(&old.address, "x", KEY_A, "")]).replace("attempt_timeout_ms = 600", "attempt_timeout_ms = 2000");
    let gw = std::sync::Arc::new(Gateway::start(&document, &[]));
    gw.wait_all_healthy().await;

    let in_flight = {
        let gw = gw.clone();
        tokio::spawn(async move { gw.channel("odoo:channel:slow", "").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.rewrite_secrets(&secrets(&[node(&new.address, "x", KEY_B, "")]));
    gw.signal(libc::SIGHUP);
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, &body["url"]), (StatusCode::OK, &json!(old.address)), "the request in flight finished");

    let health = gw.wait_health("only the new SFU", |h| h["total"] == 1 && h["healthy"] == 1).await;
    assert_eq!(health["nodes"][0]["address"], new.address);
    let (_, body) = gw.channel("odoo:channel:next", "").await;
    assert_eq!(body["url"], new.address);

    // A broken file is refused and the running list kept; a file others can read is warned about.
    gw.rewrite_secrets("[[sfu]]\naddress = \"nope\"\n");
    gw.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.stderr().contains("reload refused") {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.health().await["total"], 1);
    gateway_support::write_secrets(&gw.secrets, &secrets(&[node(&new.address, "x", KEY_B, "")]), 0o644);
    gw.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.stderr().contains("chmod 600") {
        assert!(Instant::now() < deadline, "no warning logged:\n{}", gw.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn operator_routes_describe_the_fleet() {
    let a = FakeSfu::start(KEY_A);
    a.set_sessions(4);
    let gw = Gateway::start(
        &secrets(&[
            node(&a.address, "eu-west", KEY_A, "max_sessions = 20"),
            node(&dead_address(), "us-east", KEY_B, ""),
        ]),
        &[],
    );
    gw.wait_health("a healthy", |h| h["healthy"] == 1).await;
    let get = |path: &str| reqwest::get(gw.url(path));
    assert_eq!(get("/v1/noop").await.unwrap().json::<Value>().await.unwrap(), json!({"result": "ok"}));
    assert_eq!(get("/noop").await.unwrap().json::<Value>().await.unwrap(), json!({"status": "ok"}));
    assert_eq!(get("/health/live").await.unwrap().status(), 200);
    assert_eq!(get("/health/ready").await.unwrap().status(), 200, "one healthy SFU is enough");
    gw.channel("iss-1", "").await;

    let health = gw.health().await;
    assert_eq!(
        (health["status"].clone(), health["healthy"].clone(), health["total"].clone()),
        (json!("degraded"), json!(1), json!(2))
    );
    let n = gw.node(&a.address).await;
    assert_eq!(n["region"], "eu-west");
    assert_eq!(n["state"], "healthy");
    assert_eq!(n["load"]["sessions"], 4);
    assert_eq!(n["maxSessions"], 20);
    assert!(n["responseTimeMs"].as_f64().unwrap() > 0.0, "{n}");
    assert_eq!(n["breaker"]["state"], "closed");
    assert_eq!(n["consecutiveFailures"], 0);
    assert_eq!(n["placements"], 1);
    let down = &health["nodes"][1];
    assert_eq!(down["state"], "unhealthy");
    assert!(down["lastError"].as_str().unwrap().contains("connection"), "{down}");

    assert_eq!(get("/nowhere").await.unwrap().status(), 404);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("/nowhere"), "a path no route takes is not a label:\n{metrics}");
    for name in [
        "sfu_gateway_http_requests_total{route=\"/v1/channel\",status=\"200\"} 1",
        "sfu_gateway_http_requests_total{route=\"/health/live\",status=\"200\"} 1",
        "sfu_gateway_channel_requests_total{result=\"created\"} 1",
        "sfu_gateway_channel_attempts_total{",
        "sfu_gateway_health_polls_total{",
        "sfu_gateway_node_healthy{",
        "sfu_gateway_node_breaker_state{",
        "sfu_gateway_node_sessions{",
        "sfu_gateway_node_score{",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
}

#[test]
fn sigterm_stops_the_gateway_cleanly() {
    let sfu = FakeSfu::start(KEY_A);
    let mut gw = Gateway::start(&secrets(&[node(&sfu.address, "x", KEY_A, "")]), &[]);
    gw.signal(libc::SIGTERM);
    let status = gw.wait(Duration::from_secs(5)).expect("stopped within 5 s");
    assert!(status.success(), "{status:?}: {}", gw.stderr());
}
