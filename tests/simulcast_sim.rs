//! Simulcast layer switching in the virtual world: a three-layer publisher, one unconstrained and
//! one constrained subscriber behind a bottleneck link.

use ringsfu_client::Publish;
use ringsfu_client::sim::{Link, Sim};
use ringsfu_core::protocol::messages::MediaType;
use ringsfu_core::sfu::SessionRef;
use serde_json::json;
use std::time::Duration;

/// The layer subscriber `session` currently receives of the camera.
fn layer(sim: &Sim, session: SessionRef) -> Option<u8> {
    sim.shard
        .consumers()
        .find(|(_, c)| c.session() == session && c.media() == MediaType::Camera)
        .and_then(|(_, c)| c.current())
}

#[test]
fn a_constrained_subscriber_goes_down_and_comes_back_without_breaking_its_stream() {
    let mut sim = Sim::new();
    let channel = sim.create_channel(true);
    let publisher = sim.join(channel, json!(1));
    let free = sim.join(channel, json!(2));
    let tight = sim.join(channel, json!(3));
    let (free_ref, tight_ref) = (sim.members[free].session, sim.members[tight].session);
    let now = sim.now;
    sim.participant(publisher).publish(now, Publish::Audio { bytes: 100 });
    sim.participant(publisher).publish(
        now,
        Publish::Video { media: MediaType::Camera, bitrates: vec![150_000, 500_000, 1_500_000], fps: 30 },
    );

    // Both reach the top layer.
    assert!(
        sim.run_until(Duration::from_secs(20), |s| layer(s, free_ref) == Some(2) && layer(s, tight_ref) == Some(2))
    );
    // A stream that has just started is not taken on trust: each subscriber starts on the lowest
    // layer and climbs one step at a time, nothing else.
    let ramp = sim.shard.counters().layer_switches;
    assert_eq!(ramp, 4, "0 → 1 → 2 for each subscriber");
    let mut free_low = 0;

    // The constrained subscriber's downlink shrinks to 700 kbit/s: it settles on a lower layer.
    sim.set_link(tight, Link { loss: 0.0, rate_bps: Some(700_000) });
    let constrained_at = sim.now;
    let down = sim.run_until(Duration::from_secs(5), |s| {
        if layer(s, free_ref) != Some(2) {
            free_low += 1;
        }
        layer(s, tight_ref).is_some_and(|l| l < 2)
    });
    let down_after = sim.now - constrained_at;
    assert!(down, "still on the top layer {down_after:?} after the constraint");
    sim.run_for(Duration::from_secs(5));
    assert!(layer(&sim, tight_ref).is_some_and(|l| l < 2), "stays down while constrained");

    // Lifted: back to the top layer.
    sim.set_link(tight, Link::default());
    let lifted_at = sim.now;
    let up = sim.run_until(Duration::from_secs(15), |s| {
        if layer(s, free_ref) != Some(2) {
            free_low += 1;
        }
        layer(s, tight_ref) == Some(2)
    });
    let up_after = sim.now - lifted_at;
    assert!(up, "not back on the top layer {up_after:?} after lifting");
    sim.run_for(Duration::from_secs(2));
    eprintln!("switch times: down {down_after:?} after the constraint, up {up_after:?} after lifting");
    assert_eq!(free_low, 0, "the unconstrained subscriber stayed on the top layer");

    let dropped = sim.dropped_by_links;
    for (who, name) in [(free, "free"), (tight, "tight")] {
        let r = sim.participant(who).reception(&json!(1), "camera").unwrap().clone();
        eprintln!(
            "{name}: {} packets, {} gaps, {} picture id jumps, {} dropped by the link",
            r.packets,
            r.gaps(),
            r.picture_id_jumps,
            dropped
        );
        assert!(r.gaps() <= if who == free { 0 } else { dropped }, "{name}: gaps not caused by the link");
        assert_eq!(r.picture_id_jumps, 0, "{name}: the decoder sees one VP8 stream");
        assert_eq!(r.timestamp_regressions, 0, "{name}: timestamps never go back");
    }
    let switches = sim.shard.counters().layer_switches - ramp;
    assert!((2..=6).contains(&switches), "{switches} switches after both reached the top");
}

/// Two subscribers wait for keyframes of two different layers at once: the publisher is asked for
/// both (a regression: the fan-out loop kept only the last consumer's wish per packet, so the
/// other waited until that one was served).
#[test]
fn every_layer_some_subscriber_waits_for_is_asked_of_the_publisher() {
    let mut sim = Sim::new();
    let channel = sim.create_channel(true);
    let publisher = sim.join(channel, json!(1));
    let first = sim.join(channel, json!(2));
    let second = sim.join(channel, json!(3));
    let refs = [sim.members[first].session, sim.members[second].session];
    let publisher_ref = sim.members[publisher].session;
    let now = sim.now;
    sim.participant(publisher).publish(
        now,
        Publish::Video { media: MediaType::Camera, bitrates: vec![150_000, 500_000, 1_500_000], fps: 30 },
    );
    assert!(sim.run_until(Duration::from_secs(20), |s| refs.iter().all(|r| layer(s, *r) == Some(2))));

    let since = sim.now;
    let requested = |sim: &Sim, l: usize| {
        sim.shard
            .producers()
            .find(|(_, p)| p.session() == publisher_ref && p.media() == MediaType::Camera)
            .is_some_and(|(_, p)| p.layers()[l].last_keyframe_request().is_some_and(|t| t >= since))
    };
    // The allocator re-plans every 200 ms and would put both back on the top layer: the wishes
    // are set again every millisecond, until the first keyframe request goes out.
    let mut asked = false;
    for _ in 0..500 {
        for (r, wanted) in refs.iter().zip([0u8, 1]) {
            let consumer = sim
                .shard
                .consumers_mut()
                .find(|c| c.session() == *r && c.media() == MediaType::Camera)
                .expect("a camera consumer");
            consumer.set_target(Some(wanted));
        }
        sim.run_for(Duration::from_millis(1));
        if requested(&sim, 0) || requested(&sim, 1) {
            asked = true;
            break;
        }
    }
    assert!(asked, "no keyframe request in 500 ms");
    assert!(requested(&sim, 0) && requested(&sim, 1), "both waited-for layers are asked for in the same instant");
}
