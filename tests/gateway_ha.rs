//! Several `sfu-gateway` processes sharing one real `redis-server`, in front of real `ringsfu`
//! processes, all on loopback: shared placements (one channel per `iss` whichever gateway is
//! asked, even in a race), disconnects through any gateway, a gateway dying, a Redis outage and
//! its reconciliation; and ringsfu registering itself (`GATEWAY_URL`): admission, draining on
//! SIGTERM, leaving after the TTL when killed, refusal of a wrong secret.

mod common;
mod gateway_support;

use common::{Server, Ws, now, sign};
use gateway_support::ha::{REGISTRATION_SECRET, Redis, RegisteredSfu};
use gateway_support::{CHANNEL_KEY, FAST, Gateway, channel_with_key, gateway_key, node};
use ringsfu_common::announcement::{Announcement, sign_announcement};
use ringsfu_common::auth::Key;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY_A: &str = common::KEY_B64;
const KEY_B: &str = "c2Z1LWItaGFzLWl0cy1vd24ta2V5LWZvci10ZXN0cw==";

fn ringsfu(key_b64: &str) -> Server {
    Server::start(&[("PROXY", "1"), ("AUTH_KEY", key_b64), ("NUM_WORKERS", "1"), ("MAX_SESSIONS", "100")])
}

fn address(server: &Server) -> String {
    format!("http://{}", server.http)
}

/// Two static ringsfu and the tuning of the gateway tests. The gateway prefers `a` (weight 10)
/// or `b`: two gateways with opposite preferences would each open the channel of an `iss` on
/// their own favourite, were nothing shared.
fn secrets(a: &Server, b: &Server, prefer_a: bool) -> String {
    // Listed first (ties keep the configuration order) and ten times the weight.
    let entry =
        |s: &Server, key, preferred: bool| node(&address(s), "here", key, if preferred { "weight = 10" } else { "" });
    let (a, b) = (entry(a, KEY_A, prefer_a), entry(b, KEY_B, !prefer_a));
    if prefer_a { format!("{a}{b}\n{FAST}") } else { format!("{b}{a}\n{FAST}") }
}

/// A gateway on `redis`; `extra` environment on top.
fn gateway(secrets: &str, redis: &Redis, extra: &[(&str, &str)]) -> Gateway {
    let url = redis.url();
    let mut env = vec![("SFU_GATEWAY_REDIS_URL", url.as_str()), ("SFU_GATEWAY_LOG_LEVEL", "info")];
    env.extend_from_slice(extra);
    Gateway::start(secrets, &env)
}

/// Distinct channels the ringsfu hold.
async fn channels(servers: &[&Server]) -> HashSet<String> {
    let mut all = HashSet::new();
    for s in servers {
        for c in s.get_json("/v1/stats").await.as_array().unwrap() {
            all.insert(c["uuid"].as_str().unwrap().to_string());
        }
    }
    all
}

async fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let text = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn wait_metric(gw: &Gateway, name: &str, value: f64) {
    for _ in 0..200 {
        if metric(gw, name).await == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never {value} at {}: {}", gw.http, gw.stderr());
}

/// `/v1/channel` through `gw` must be a 200: (uuid, url).
async fn placed(gw: &Gateway, issuer: &str) -> (String, String) {
    let body = channel_with_key(gw, issuer).await;
    (body["uuid"].as_str().unwrap().to_string(), body["url"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_placements_disconnects_and_survive_each_other() {
    let redis = Redis::start();
    let (a, b) = (ringsfu(KEY_A), ringsfu(KEY_B));
    let gw_a = gateway(&secrets(&a, &b, true), &redis, &[("SFU_GATEWAY_ID", "gw-a")]);
    let gw_b = Arc::new(gateway(&secrets(&a, &b, false), &redis, &[("SFU_GATEWAY_ID", "gw-b")]));
    gw_a.wait_all_healthy().await;
    gw_b.wait_all_healthy().await;

    // An iss placed through A is answered with the same channel through B, again and again.
    let first = placed(&gw_a, "odoo:channel:shared").await;
    for _ in 0..3 {
        assert_eq!(placed(&gw_b, "odoo:channel:shared").await, first, "B returns A's channel");
    }
    assert_eq!(channels(&[&a, &b]).await.len(), 1);

    // 50 new iss, each asked through both gateways at once: one channel each.
    let before = channels(&[&a, &b]).await.len();
    let mut races = Vec::new();
    let gw_a = Arc::new(gw_a);
    for i in 0..50 {
        let (ga, gb) = (gw_a.clone(), gw_b.clone());
        races.push(tokio::spawn(async move {
            let issuer = format!("odoo:channel:race-{i}");
            let (via_a, via_b) = tokio::join!(placed(&ga, &issuer), placed(&gb, &issuer));
            assert_eq!(via_a, via_b, "{issuer}: both gateways answer with one channel");
        }));
    }
    for race in races {
        race.await.unwrap();
    }
    assert_eq!(channels(&[&a, &b]).await.len() - before, 50, "exactly one channel per iss");

    // A disconnect sent to B reaches the session placed through A, on whichever SFU holds it.
    let (uuid, url) = placed(&gw_a, "odoo:channel:kick").await;
    let key = Key::from_base64(CHANNEL_KEY).unwrap();
    let mut ws = Ws::connect(&format!("{}/", url.replacen("http", "ws", 1))).await;
    let jwt = sign(json!({"sfu_channel_uuid": uuid, "session_id": 7, "exp": now() + 3600}), &key);
    ws.authenticate(&uuid, &jwt).await;
    let holder = if url == address(&a) { &a } else { &b };
    holder.wait_load("the session joined", |l| l["sessions"] == 1).await;
    let token = sign(json!({"sessionIdsByChannel": {&uuid: [7]}, "exp": now() + 20}), &gateway_key());
    let response = reqwest::Client::new().post(gw_b.url("/v1/disconnect")).body(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(4108), "the session was kicked");
    // B knew the holder from Redis: it sent nothing to the other SFU.
    let other = if url == address(&a) { address(&b) } else { address(&a) };
    let metrics = reqwest::get(gw_b.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("sfu_gateway_disconnect_forwards_total{{node=\"{url}\"")), "{metrics}");
    assert!(!metrics.contains(&format!("sfu_gateway_disconnect_forwards_total{{node=\"{other}\"")), "{metrics}");

    // Each gateway sees the other's view of the fleet in /v1/health, with its age.
    let health = gw_b.health().await;
    assert_eq!(health["gateway"], json!({"id": "gw-b", "redis": "up"}));
    let peer = &health["gateways"][0];
    assert_eq!(peer["gateway"], "gw-a", "{health:#}");
    assert_eq!(peer["nodes"].as_array().unwrap().len(), 2);
    assert!(peer["ageMs"].as_u64().unwrap() < 5_000);

    // Killing A loses no request sent to B, placed through A or new.
    let worker = {
        let gw_b = gw_b.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..40 {
                let issuer =
                    if i % 2 == 0 { "odoo:channel:shared".to_string() } else { format!("odoo:channel:after-{i}") };
                answers.push((issuer.clone(), placed(&gw_b, &issuer).await));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(Arc::try_unwrap(gw_a).ok().expect("no other handle on A"));
    for (issuer, answer) in worker.await.unwrap() {
        if issuer == "odoo:channel:shared" {
            assert_eq!(answer, first, "the iss placed through A keeps its channel");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_serves_from_local_state_warns_once_and_reconciles() {
    let mut redis = Redis::start();
    let (a, b) = (ringsfu(KEY_A), ringsfu(KEY_B));
    let gw_a = gateway(&secrets(&a, &b, true), &redis, &[("SFU_GATEWAY_ID", "gw-a")]);
    let gw_b = gateway(&secrets(&a, &b, false), &redis, &[("SFU_GATEWAY_ID", "gw-b")]);
    gw_a.wait_all_healthy().await;
    gw_b.wait_all_healthy().await;
    let before = placed(&gw_a, "odoo:channel:before").await;
    assert_eq!(metric(&gw_a, "sfu_gateway_redis_up").await, Some(1.0));

    redis.stop();
    // Both keep answering, from their own state: what each placed stays where it is.
    for i in 0..10 {
        placed(&gw_a, &format!("odoo:channel:outage-a-{i}")).await;
        placed(&gw_b, &format!("odoo:channel:outage-b-{i}")).await;
        assert_eq!(placed(&gw_a, "odoo:channel:before").await, before);
    }
    let during = placed(&gw_a, "odoo:channel:during").await;
    for gw in [&gw_a, &gw_b] {
        wait_metric(gw, "sfu_gateway_redis_up", 0.0).await;
        assert!(metric(gw, "sfu_gateway_redis_errors_total").await.unwrap() >= 1.0);
        let warnings = gw.stderr().matches("Redis unavailable").count();
        assert_eq!(warnings, 1, "one warning per outage, not per request: {}", gw.stderr());
    }

    // Redis comes back empty: each gateway re-writes its placements, so B now answers A's.
    redis.resume();
    wait_metric(&gw_a, "sfu_gateway_redis_up", 1.0).await;
    wait_metric(&gw_b, "sfu_gateway_redis_up", 1.0).await;
    assert!(gw_a.stderr().contains("Redis reachable"), "{}", gw_a.stderr());
    let (_, during_url) = &during;
    assert_eq!(redis.command("GET sfu-gateway:iss:odoo:channel:during").as_deref(), Some(during_url.as_str()));
    assert_eq!(placed(&gw_b, "odoo:channel:during").await, during, "placed during the outage, known to B after");
    assert_eq!(placed(&gw_b, "odoo:channel:before").await, before);
}

/// A gateway that admits self-registered SFUs: no static SFU, a short TTL, slow polls (so what
/// is seen at once comes from the registrations, not from a poll).
fn registering_gateway(redis: &Redis, id: &str) -> Gateway {
    let tuning = FAST.replace("interval_seconds = 0.2", "interval_seconds = 1");
    gateway(
        &tuning,
        redis,
        &[
            ("SFU_GATEWAY_ID", id),
            ("SFU_GATEWAY_REGISTRATION_SECRET", REGISTRATION_SECRET),
            ("SFU_GATEWAY_REGISTRATION_TTL_SECONDS", "3"),
        ],
    )
}

async fn node_of(gw: &Gateway, address: &str) -> Option<Value> {
    gw.health().await["nodes"].as_array().unwrap().iter().find(|n| n["address"] == address).cloned()
}

async fn wait_node(gw: &Gateway, address: &str, what: &str, predicate: impl Fn(Option<&Value>) -> bool) {
    for _ in 0..200 {
        if predicate(node_of(gw, address).await.as_ref()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{address} never {what} at {}: {:#}", gw.http, gw.health().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringsfu_registers_itself_drains_at_once_and_leaves_after_the_ttl() {
    let redis = Redis::start();
    let gw_a = registering_gateway(&redis, "gw-a");
    let gw_b = registering_gateway(&redis, "gw-b");

    // One ringsfu registers with both gateways, another with A only: B learns it through Redis.
    let both = RegisteredSfu::start(&[gw_a.url(""), gw_b.url("")], REGISTRATION_SECRET, &[]);
    let only_a = RegisteredSfu::start(&[gw_a.url("")], REGISTRATION_SECRET, &[]);
    for gw in [&gw_a, &gw_b] {
        for sfu in [&both, &only_a] {
            wait_node(gw, &sfu.address(), "healthy", |n| n.is_some_and(|n| n["state"] == "healthy")).await;
        }
        let node = node_of(gw, &both.address()).await.unwrap();
        assert_eq!(node["origin"], "registered");
        assert_eq!(node["region"], "here");
        assert_eq!(node["maxSessions"], 10, "its announced capacity");
    }
    // It receives channels: the gateway signs with the derived key, which the SFU accepts.
    let mut urls = HashSet::new();
    for i in 0..6 {
        urls.insert(placed(if i % 2 == 0 { &gw_a } else { &gw_b }, &format!("odoo:channel:reg-{i}")).await.1);
    }
    assert_eq!(urls, HashSet::from([both.address(), only_a.address()]), "both take channels");

    // SIGTERM: the gateways hear "draining" at once and send it no new channel.
    both.signal(libc::SIGTERM);
    let since = Instant::now();
    for gw in [&gw_a, &gw_b] {
        wait_node(gw, &both.address(), "draining", |n| n.is_some_and(|n| n["registration"]["draining"] == true)).await;
    }
    assert!(since.elapsed() < Duration::from_secs(1), "announced, not found by a later poll");
    for i in 0..6 {
        let gw = if i % 2 == 0 { &gw_a } else { &gw_b };
        assert_eq!(placed(gw, &format!("odoo:channel:after-term-{i}")).await.1, only_a.address());
    }

    // Killed -9, an SFU stays listed (unhealthy) until its registration runs out, then leaves.
    only_a.signal(libc::SIGKILL);
    let killed = Instant::now();
    wait_node(&gw_a, &only_a.address(), "gone", |n| n.is_none()).await;
    wait_node(&gw_b, &only_a.address(), "gone", |n| n.is_none()).await;
    assert!(killed.elapsed() >= Duration::from_secs(1), "it left with the TTL, not at once");
    assert!(gw_a.stderr().contains("registered SFU left"), "{}", gw_a.stderr());
}

#[tokio::test]
async fn a_registration_with_a_wrong_secret_is_refused_and_logged_once() {
    let redis = Redis::start();
    let gw = registering_gateway(&redis, "gw");
    let announcement = Announcement {
        url: "http://127.0.0.1:9".into(),
        region: None,
        capacity: 10,
        draining: false,
        id: "intruder".into(),
    };
    let client = reqwest::Client::new();
    for secret in ["not-the-registration-secret", "not-the-registration-secret", REGISTRATION_SECRET] {
        let token = sign_announcement(&announcement, secret, now());
        let response = client.post(gw.url("/v1/register")).bearer_auth(token).send().await.unwrap();
        if secret == REGISTRATION_SECRET {
            assert_eq!(response.status(), 200);
        } else {
            assert_eq!(response.status(), 401);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "token signature is invalid");
        }
    }
    let expired = sign_announcement(&announcement, REGISTRATION_SECRET, now() - 120);
    let response = client.post(gw.url("/v1/register")).bearer_auth(expired).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let log = gw.stderr();
    assert_eq!(log.matches("SFU registration refused").count(), 2, "once per source and reason: {log}");
    assert!(log.contains("token signature is invalid") && log.contains("token has expired"), "{log}");
    // The refused ones never entered the fleet; the good one did (unhealthy: nothing listens there).
    wait_node(&gw, "http://127.0.0.1:9", "listed", |n| n.is_some_and(|n| n["registration"]["id"] == "intruder")).await;
}

#[test]
fn a_registering_ringsfu_refuses_a_configured_key_or_a_missing_secret() {
    let rows: &[(&[(&str, &str)], &str)] = &[
        (&[("AUTH_KEY", KEY_A), ("GATEWAY_REGISTRATION_SECRET", REGISTRATION_SECRET)], "AUTH_KEY cannot be combined"),
        (
            &[("LOAD_SECRET", "s"), ("GATEWAY_REGISTRATION_SECRET", REGISTRATION_SECRET)],
            "LOAD_SECRET cannot be combined",
        ),
        (&[], "GATEWAY_URL needs GATEWAY_REGISTRATION_SECRET"),
        (&[("GATEWAY_REGISTRATION_SECRET", "short")], "at least 16 characters"),
    ];
    for (env, needle) in rows {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringsfu"))
            .env_clear()
            .env("GATEWAY_URL", "http://127.0.0.1:9")
            .env("PORT", "0")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(needle), "{env:?}: {stderr}");
    }
}
