//! The test-call page (`DEMO`): its committed script is what its sources build to, its routes
//! exist only when it is on, and `/demo/join` hands out a channel and a token the bus accepts.
//!
//! The build check needs Node.js and demo/node_modules (`make test-deps` installs both).

mod common;

use common::{Server, Ws};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn demo_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/demo"))
}

fn committed_bundle() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/control/routes/demo/demo.js"))
}

#[test]
fn committed_bundle_is_what_its_sources_build_to() {
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "node is missing: run `make test-deps` (or `make test`)");
    assert!(
        demo_dir().join("node_modules/esbuild").exists(),
        "demo/node_modules is missing: run `make test-deps` (or `make test`)"
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("demo-{}.js", std::process::id()));
    let build = Command::new("node").arg("build.mjs").arg(&out).current_dir(demo_dir()).output().expect("running node");
    assert!(build.status.success(), "the demo build failed:\n{}", String::from_utf8_lossy(&build.stderr));
    let built = std::fs::read(&out).expect("the build wrote its output");
    std::fs::remove_file(&out).ok();
    let committed = std::fs::read(committed_bundle()).expect("the committed bundle");
    assert!(
        built == committed,
        "src/control/routes/demo/demo.js is not what demo/ builds to ({} bytes built, {} committed): \
         run `cd demo && npm ci && npm run build` and commit the result",
        built.len(),
        committed.len()
    );
}

async fn join(server: &Server, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/demo/join"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn demo_routes_do_not_exist_when_it_is_off() {
    // A configured key and no DEMO: a production setup.
    let server = Server::start(&[]);
    assert!(!server.stdout.iter().any(|l| l.contains("test call:")), "{:?}", server.stdout);
    for path in ["/demo", "/demo/demo.js"] {
        let response = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = join(&server, r#"{"room":"demo"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn demo_page_and_script_are_served_and_announced() {
    let server = Server::start(&[("DEMO", "1")]);
    let announced = format!("test call: http://{}/demo", server.http);
    assert!(server.stdout.iter().any(|l| l.trim() == announced), "{announced:?} in {:?}", server.stdout);

    let page = reqwest::get(server.url("/demo?room=x")).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="demo/demo.js">"#), "{html}");

    let script = reqwest::get(server.url("/demo/demo.js")).await.unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let etag = script.headers()["etag"].clone();
    assert_eq!(script.bytes().await.unwrap(), std::fs::read(committed_bundle()).unwrap());
    let again =
        reqwest::Client::new().get(server.url("/demo/demo.js")).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn join_refuses_bad_rooms_and_gives_a_token_the_bus_accepts() {
    let server = Server::start(&[("DEMO", "1")]);
    let long = json!({"room": "r".repeat(65)}).to_string();
    for body in [r#"{"room":"a b"}"#, r#"{"room":""}"#, r#"{"room":"../etc"}"#, r#"{"name":"x"}"#, "demo", &long] {
        let (status, error) = join(&server, body.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error["error"].as_str().is_some_and(|e| e.contains("room")), "{body}: {error}");
    }

    let (status, first) = join(&server, r#"{"room":"team-1"}"#).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["url"], format!("http://{}", server.http));
    let (_, second) = join(&server, r#"{"room":"team-1"}"#).await;
    let (_, other) = join(&server, r#"{"room":"team_2"}"#).await;
    assert_eq!(first["channelUUID"], second["channelUUID"], "one channel per room");
    assert_ne!(first["channelUUID"], other["channelUUID"]);
    assert_ne!(first["sessionId"], second["sessionId"], "a fresh session per join");

    // Both sessions join the room's channel on the bus, and it starts their transports.
    let mut sockets = Vec::new();
    for joined in [&first, &second] {
        let mut ws = Ws::connect(&joined["url"].as_str().unwrap().replacen("http", "ws", 1)).await;
        ws.authenticate(joined["channelUUID"].as_str().unwrap(), joined["jwt"].as_str().unwrap()).await;
        let init = ws.expect_message("INIT_TRANSPORTS").await;
        assert!(init["message"]["payload"]["ctsConfig"]["iceCandidates"].is_array(), "{init}");
        sockets.push(ws);
    }
    drop(sockets);
}

/// A demo token is signed with its demo channel's own key: it opens neither an Odoo channel
/// created without a `key` claim (checked with the server's key) nor another room.
#[tokio::test]
async fn a_demo_token_opens_its_own_room_only() {
    let server = Server::start(&[("DEMO", "1")]);
    let odoo_channel = server.channel("odoo.example", true).await;
    let (_, joined) = join(&server, r#"{"room":"mine"}"#).await;
    let (_, other_room) = join(&server, r#"{"room":"theirs"}"#).await;
    let jwt = joined["jwt"].as_str().unwrap();
    for channel in [odoo_channel.as_str(), other_room["channelUUID"].as_str().unwrap()] {
        let mut ws = Ws::connect(&server.ws_url()).await;
        ws.send_text(json!({"channelUUID": channel, "jwt": jwt}).to_string()).await;
        assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(4106), "{channel}");
    }
}

#[tokio::test]
async fn join_is_rate_limited_like_channel_requests() {
    let server = Server::start(&[("DEMO", "1"), ("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "2")]);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(join(&server, r#"{"room":"limited"}"#).await.0);
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
}
