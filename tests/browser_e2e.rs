//! Real browsers through ringsfu: headless Chromium pages running mediasoup-client (as the Odoo
//! client does) publish their fake camera and microphone and must see and hear each other.
//!
//! Needs `chromium` and the npm packages of tests/browser (`make test` installs both).

mod common;

use common::{Server, chromium, key, now, sign};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

fn browser_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"))
}

/// Runs a scenario in Chromium; panics with the whole result and the server's log unless it passed.
fn run_scenario(config: Value, server: &Server) -> Value {
    let output = Command::new("node")
        .arg(browser_dir().join("e2e.mjs"))
        .arg(config.to_string())
        .current_dir(browser_dir())
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no result; stderr:\n{stderr}"));
    let result: Value = serde_json::from_str(line).expect("result is JSON");
    eprintln!("browser log:\n{stderr}");
    assert_eq!(
        result["ok"],
        true,
        "{}\nserver log:\n{}",
        serde_json::to_string_pretty(&result).unwrap(),
        server.stderr()
    );
    result
}

fn participant(server: &Server, channel: &str, id: i64, publish: Value) -> Value {
    let jwt = sign(json!({"session_id": id, "exp": now() + 3600}), &key());
    json!({"url": format!("http://{}", server.http), "channelUUID": channel, "jwt": jwt, "sessionId": id, "publish": publish})
}

/// Three pages, each publishing 640x360 video and audio, each checking it decodes the others.
fn call_of_three(server: &Server, channel: &str) -> Value {
    let everyone = json!({"audio": true, "video": true, "width": 640, "height": 360});
    json!({
        "scenario": "call",
        "timeoutMs": 60000,
        "chromium": chromium(),
        "participants": (1..=3).map(|id| participant(server, channel, id, everyone.clone())).collect::<Vec<_>>(),
    })
}

#[test]
fn three_chromium_participants_see_and_hear_each_other() {
    common::require_browser_toolchain(&browser_dir().join("node_modules/mediasoup-client"));
    let server = Server::start(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let channel = rt.block_on(server.channel("odoo:channel:browser", true));
    let config = call_of_three(&server, &channel);
    let result = run_scenario(config, &server);
    let p = &result["participants"][0];
    eprintln!("negotiated: send {} / recv {}", p["send"], p["recv"]);
    // What they saw and heard was written and sealed by ringsfu's own egress, not str0m's:
    // audio and video, every copy (both counters come from one snapshot of the shard).
    let metrics = rt.block_on(async { reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap() });
    let sum = |name: &str| -> f64 {
        metrics.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    let direct = sum("ringsfu_shard_forwarded_rtp_packets_direct_total");
    let forwarded = sum("ringsfu_shard_forwarded_rtp_packets_total");
    assert!(direct > 300.0, "by ringsfu's own egress: {direct} packets\n{metrics}");
    assert_eq!(direct, forwarded, "every forwarded packet by ringsfu's own egress\n{metrics}");
    // What the pages published was opened by ringsfu's own ingress (not str0m's receive path),
    // whose feedback Chrome's send-side estimate ran on.
    let opened = sum("ringsfu_shard_received_rtp_packets_direct_total");
    assert!(opened > 300.0, "publishers' packets opened by ringsfu: {opened}\n{metrics}");
    for p in result["participants"].as_array().unwrap() {
        assert_eq!(p["recv"]["dtlsState"], "connected");
        assert!(
            p["recv"]["srtpCipher"].as_str().unwrap().contains("GCM"),
            "an AEAD-AES-GCM SRTP profile: {}",
            p["recv"]
        );
    }
}

/// The stock client's pages with their sessions on two shards (docs/cross-shard.md): a budget
/// of two sessions per shard puts the third page on the other shard, and all three still see
/// and hear each other through the relay.
#[test]
fn chromium_participants_split_over_two_shards_see_and_hear_each_other() {
    common::require_browser_toolchain(&browser_dir().join("node_modules/mediasoup-client"));
    let server = Server::start(&[("NUM_WORKERS", "2"), ("CHANNEL_SHARD_BUDGET", "2")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let channel = rt.block_on(server.channel("odoo:channel:browser-spread", true));
    let config = call_of_three(&server, &channel);
    run_scenario(config, &server);
    let relayed = rt.block_on(server.metric("ringsfu_shard_relayed_out_rtp_packets_total"));
    assert!(relayed > 300, "relayed between the shards: {relayed}\n{}", server.stderr());
}

/// One 720p simulcast publisher and one subscriber, on a server with the given environment.
fn simulcast_run(env: &[(&str, &str)], scenario: &str) {
    let server = Server::start(env);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let channel = rt.block_on(server.channel("odoo:channel:simulcast", true));
    let config = json!({
        "scenario": scenario,
        "timeoutMs": 60000,
        "chromium": chromium(),
        "participants": [
            participant(&server, &channel, 1, json!({"audio": true, "video": true, "width": 1280, "height": 720})),
            participant(&server, &channel, 2, json!({})),
        ],
    });
    let result = run_scenario(config, &server);
    eprintln!("{scenario}: {}", result["extra"]);
}

#[test]
fn a_constrained_chromium_subscriber_gets_a_lower_simulcast_layer_and_keeps_decoding() {
    common::require_browser_toolchain(&browser_dir().join("node_modules/mediasoup-client"));
    // Unconstrained, the subscriber decodes the top layer (1280 wide)...
    simulcast_run(&[], "simulcast-top");
    // ...with its downlink capped below what the top layer needs, a lower one, still decoding.
    simulcast_run(&[("MAX_BITRATE_OUT", "500000")], "simulcast");
}
