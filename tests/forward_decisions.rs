//! The per-consumer forwarding decision, driven directly: how a simulcast switch treats packets
//! that arrive late.

#[path = "fixtures/consumer.rs"]
mod fixture;

use fixture::vp8_consumer;
use ringsfu_core::sfu::forward::{Decision, Incoming, Skip};
use std::time::{Duration, Instant};

fn packet(layer: u8, seq: u64, keyframe: bool, late: bool) -> Incoming {
    Incoming {
        layer,
        seq,
        timestamp: seq as u32 * 3000,
        router_payload_type: 101,
        keyframe,
        late,
        producer_paused: false,
    }
}

fn forwarded_seq(d: Decision) -> u64 {
    match d {
        Decision::Forward { seq, .. } => seq,
        other => panic!("not forwarded: {other:?}"),
    }
}

/// A keyframe start of the target layer that arrives late (the publisher resent it after a
/// NACK, after later packets of that layer were skipped) must not open the switch: anchoring the
/// numbering on it left the skipped packets as a gap the subscriber could never fill (seen in
/// the simulation with loss on the publisher's uplink).
#[test]
fn a_late_keyframe_does_not_start_a_switch_and_leaves_no_gap() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut c = vp8_consumer(1, 1);
    c.set_target(Some(2));
    let last = forwarded_seq(c.decide(&packet(1, 500, false, false), true, at(0)));
    // Layer 2 goes by while the subscriber waits for its keyframe.
    for seq in 900..905 {
        assert_eq!(c.decide(&packet(2, seq, false, false), true, at(1)), Decision::Skip(Skip::WaitingKeyframe));
    }
    // The keyframe's first packet, recovered late: still waiting, still on layer 1.
    assert_eq!(c.decide(&packet(2, 899, true, true), true, at(2)), Decision::Skip(Skip::WaitingKeyframe));
    assert_eq!(c.current(), Some(1));
    assert_eq!(forwarded_seq(c.decide(&packet(1, 501, false, false), true, at(3))), last + 1);
    // The next keyframe, in order, switches; the numbering continues without a hole.
    let first = forwarded_seq(c.decide(&packet(2, 950, true, false), true, at(4)));
    assert_eq!(first, last + 2);
    assert_eq!(c.current(), Some(2));
    assert_eq!(forwarded_seq(c.decide(&packet(2, 951, false, false), true, at(5))), first + 1);
    // Late packets of the current layer are still forwarded into their place.
    assert_eq!(forwarded_seq(c.decide(&packet(2, 953, false, false), true, at(6))), first + 3);
    assert_eq!(forwarded_seq(c.decide(&packet(2, 952, false, true), true, at(7))), first + 2);
}
