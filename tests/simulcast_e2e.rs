//! Simulcast layer switching on the real binary over real sockets: a three-layer publisher and
//! two subscribers, one behind a bottleneck on its downlink (the test's own shaper).

mod common;

use common::Server;
use common::media::join;
use ringsfu_client::Publish;
use ringsfu_client::link::Link;
use ringsfu_core::protocol::messages::MediaType;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The camera layer session `id` currently receives, from the debug view.
async fn layer(server: &Server, channel: &str, id: i64) -> Option<u64> {
    let view = server.get_json(&format!("/v1/debug/channel/{channel}")).await;
    view["sessions"].as_array()?.iter().find(|s| s["sessionId"] == id)?["consumers"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "camera")?["currentLayer"]
        .as_u64()
}

/// Polls until `want` holds for the layer of `id`; returns how long it took.
async fn wait_layer(
    server: &Server,
    channel: &str,
    id: i64,
    limit: Duration,
    want: impl Fn(Option<u64>) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if want(layer(server, channel, id).await) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test]
async fn a_constrained_subscriber_switches_down_and_back_up_over_real_sockets() {
    let server = Server::start(&[("NUM_WORKERS", "1")]);
    let channel = server.channel("odoo:channel:simulcast", true).await;
    let publisher = join(&server, &channel, 1).await;
    let free = join(&server, &channel, 2).await;
    let tight = join(&server, &channel, 3).await;
    publisher.with(|p, now| {
        p.publish(now, Publish::Audio { bytes: 100 });
        p.publish(
            now,
            Publish::Video { media: MediaType::Camera, bitrates: vec![150_000, 500_000, 1_500_000], fps: 30 },
        );
    });
    for id in [2, 3] {
        let reached = wait_layer(&server, &channel, id, Duration::from_secs(20), |l| l == Some(2)).await;
        assert!(reached.is_some(), "subscriber {id} never reached the top layer");
    }

    tight.set_downlink(Some(Link { loss: 0.0, rate_bps: Some(700_000) }));
    let down = wait_layer(&server, &channel, 3, Duration::from_secs(5), |l| l.is_some_and(|l| l < 2)).await;
    assert!(down.is_some(), "the constrained subscriber did not settle lower within 5 s");
    assert_eq!(layer(&server, &channel, 2).await, Some(2), "the free one stays on top");
    tokio::time::sleep(Duration::from_secs(3)).await;

    tight.set_downlink(None);
    let up = wait_layer(&server, &channel, 3, Duration::from_secs(15), |l| l == Some(2)).await;
    assert!(up.is_some(), "not back on the top layer within 15 s of lifting the constraint");
    assert_eq!(layer(&server, &channel, 2).await, Some(2), "the free one stayed on top");
    eprintln!("switch times over real sockets: down {:?}, up {:?}", down.unwrap(), up.unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let dropped = tight.downlink_dropped();
    for (who, name, allowed) in [(&free, "free", 0), (&tight, "tight", dropped)] {
        who.with(|p, _| {
            let r = p.reception(&json!(1), "camera").unwrap();
            eprintln!(
                "{name}: {} packets, {} gaps, {} picture id jumps, {dropped} dropped by the bottleneck",
                r.packets,
                r.gaps(),
                r.picture_id_jumps
            );
            // Loopback can still lose a datagram now and then; the shaper's drops are the rest.
            assert!(r.gaps() <= allowed + 2, "{name}: {} gaps not caused by the bottleneck", r.gaps());
            assert_eq!(r.picture_id_jumps, 0, "{name}: one continuous VP8 stream");
            assert_eq!(r.timestamp_regressions, 0, "{name}: timestamps never go back");
        });
    }
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    let switches: f64 = metrics
        .lines()
        .find(|l| l.starts_with("ringsfu_shard_layer_switches_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(switches >= 2.0, "{switches}");
    assert!(metrics.contains("ringsfu_shard_video_consumers{shard=\"0\",layer=\"2\"} 2"), "both end on the top layer");
    let _: Value = server.get_json(&format!("/v1/debug/channel/{channel}")).await;
}
