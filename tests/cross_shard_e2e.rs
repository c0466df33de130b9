//! One channel over two shards of the real binary (docs/cross-shard.md): with a budget of two
//! sessions per shard, a call of four spreads, and everyone still receives everyone.

mod common;

use common::media::{join, publish_all, wait_everyone_receives};
use common::{Server, Ws, key};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_call_past_one_shards_budget_spreads_and_everyone_receives_everyone() {
    let server = Server::start(&[("NUM_WORKERS", "2"), ("CHANNEL_SHARD_BUDGET", "2")]);
    let channel = server.channel("odoo:channel:spread", true).await;
    let mut people = Vec::new();
    for id in 1..=4 {
        let p = join(&server, &channel, id).await;
        publish_all(&p);
        people.push(p);
    }
    wait_everyone_receives(&server, &people, 100, 200).await;
    for (i, p) in people.iter().enumerate() {
        let me = i as i64 + 1;
        p.with(|p, _| {
            for from in (1..=4).filter(|f| *f != me) {
                for media in ["audio", "camera"] {
                    let r = p.reception(&json!(from), media).unwrap();
                    assert_eq!(r.wrong_payload_type, 0);
                    assert!(r.gaps() <= 2, "{media} from {from} at {me}: {} gaps", r.gaps());
                }
            }
        });
    }
    // The debug view shows both parts, two sessions on each.
    let view = server.get_json(&format!("/v1/debug/channel/{channel}")).await;
    let parts: Vec<u64> = view["parts"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert_eq!(parts.len(), 2, "{view:#}");
    for part in &parts {
        let here = view["sessions"].as_array().unwrap().iter().filter(|s| s["shard"] == *part).count();
        assert_eq!(here, 2, "sessions on shard {part}: {view:#}");
    }
    // Odoo sees one channel of four.
    let stats = server.get_json("/v1/stats").await;
    assert_eq!(stats[0]["sessionsStats"]["count"], 4, "{stats:#}");
    // Each shard relays its publishers' packets to the other, once each.
    let relayed_out = server.metric("ringsfu_shard_relayed_out_rtp_packets_total").await;
    assert!(relayed_out > 1000, "{relayed_out} relayed");
    assert!(server.metric("ringsfu_shard_relayed_in_rtp_packets_total").await > 1000);
    // `/v1/load` shows the spread: one channel, two sessions on each shard, both relaying (the
    // rates of the last sampled second, the media still flowing).
    let load = server.get_json("/v1/load").await;
    assert_eq!(load["channels"], 1, "{load:#}");
    assert_eq!(load["spread"], json!([{"channel": channel, "sessions": [2, 2]}]), "{load:#}");
    for shard in load["shards"].as_array().unwrap() {
        assert_eq!(shard["channels"], 1, "a part on each shard: {load:#}");
        assert!(shard["relayedOutPerSec"].as_f64().unwrap() > 10.0, "{load:#}");
        assert!(shard["relayedInPerSec"].as_f64().unwrap() > 10.0, "{load:#}");
        assert_eq!(shard["relayDrops"], 0, "{load:#}");
    }
    for p in people {
        p.leave().await;
    }
}

/// A channel spread over shards is full at `CHANNEL_SIZE` sessions over all its parts, also for
/// a join that reaches a part which has not heard of the others' sessions yet (they are
/// introduced once connected).
#[tokio::test]
async fn a_spread_channel_is_full_at_its_size_over_all_its_parts() {
    let server = Server::start(&[("NUM_WORKERS", "2"), ("CHANNEL_SHARD_BUDGET", "1"), ("CHANNEL_SIZE", "2")]);
    let uuid = server.channel("odoo:channel:full", true).await;
    let _a = Ws::join(&server, &uuid, json!(1), &key()).await;
    let _b = Ws::join(&server, &uuid, json!(2), &key()).await;
    let mut c = Ws::join(&server, &uuid, json!(3), &key()).await;
    assert_eq!(c.expect_close(Duration::from_secs(5)).await, Some(4109));
    let stats = server.get_json("/v1/stats").await;
    assert_eq!(stats[0]["sessionsStats"]["count"], 2, "{stats:#}");
}
