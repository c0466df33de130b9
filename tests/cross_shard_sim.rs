//! One channel over two shards in the simulation (docs/cross-shard.md): sessions on either
//! shard see and hear each other through the relay between the channel's two parts.

use ringsfu_client::sim::{Link, Sim};
use ringsfu_client::{ParticipantEvent, Publish};
use ringsfu_core::protocol::SessionId;
use ringsfu_core::protocol::messages::MediaType;
use ringsfu_core::sfu::relay::{Relay, RelayMessage};
use ringsfu_core::sfu::{Command, JoinRefused, Reply, SessionRef};
use serde_json::json;
use std::time::Duration;

fn camera() -> Publish {
    Publish::Video { media: MediaType::Camera, bitrates: vec![100_000, 300_000, 900_000], fps: 30 }
}

fn packets(sim: &mut Sim, who: usize, from: i64, media: &str) -> u64 {
    sim.participant(who).reception(&json!(from), media).map_or(0, |r| r.packets)
}

/// Every member receives `media` of every other member, more than `n` packets of it.
fn all_receive(sim: &mut Sim, members: &[(usize, i64)], media: &str, n: u64) -> bool {
    members.iter().all(|&(who, me)| {
        members.iter().filter(|(_, id)| *id != me).all(|&(_, from)| packets(sim, who, from, media) > n)
    })
}

#[test]
fn a_meeting_of_eight_over_two_shards_sees_and_hears_everyone() {
    let mut sim = Sim::with_shards(2);
    let channel = sim.create_channel(true);
    let members: Vec<(usize, i64)> =
        (1..=8).map(|id| (sim.join_on(channel, json!(id), (id % 2) as usize), id)).collect();
    let now = sim.now;
    for &(m, _) in &members {
        sim.participant(m).publish(now, Publish::Audio { bytes: 100 });
        sim.participant(m).publish(now, camera());
    }
    let flowing = sim.run_until(Duration::from_secs(20), |s| {
        all_receive(s, &members, "audio", 100) && all_receive(s, &members, "camera", 200)
    });
    assert!(flowing, "not every stream reached every member");
    sim.run_for(Duration::from_secs(3));
    // In order and without holes, across the relay as on one shard.
    for &(who, me) in &members {
        for &(_, from) in members.iter().filter(|(_, id)| *id != me) {
            for media in ["audio", "camera"] {
                let r = sim.participant(who).reception(&json!(from), media).unwrap();
                assert!(r.gaps() * 100 <= r.packets, "{me} from {from} {media}: {} gaps in {}", r.gaps(), r.packets);
            }
        }
    }
    // Each shard consumes the other's publishers through mirrors: both relay.
    for i in 0..2 {
        let c = sim.shard_at(i).counters();
        assert!(c.rtp_relayed_out > 1000 && c.rtp_relayed_in > 1000, "shard {i}: {c:?}");
        assert_eq!(c.sessions, 4, "shard {i} holds its own four sessions");
    }
}

#[test]
fn a_broadcast_to_sixty_spreads_over_two_shards() {
    let mut sim = Sim::with_shards(2);
    let channel = sim.create_channel(true);
    let publisher = sim.join_on(channel, json!(1), 0);
    let now = sim.now;
    sim.participant(publisher).publish(now, Publish::Audio { bytes: 100 });
    sim.participant(publisher).publish(now, camera());
    let listeners: Vec<usize> = (2..=61).map(|id| sim.join_on(channel, json!(id), (id % 2) as usize)).collect();
    let received = sim.run_until(Duration::from_secs(20), |s| {
        listeners.iter().all(|&l| packets(s, l, 1, "audio") > 100 && packets(s, l, 1, "camera") > 100)
    });
    assert!(received, "a listener got nothing");
    // The publisher's packets cross once each, whatever the number of remote listeners; the
    // remote part fans them out.
    let home = sim.shard_at(0).counters();
    let remote = sim.shard_at(1).counters();
    assert_eq!(remote.rtp_relayed_in, home.rtp_relayed_out);
    assert!(home.rtp_relayed_out <= home.rtp_received_direct, "{home:?}");
    assert!(remote.rtp_forwarded > 5 * home.rtp_relayed_out, "30 listeners: {remote:?}");
    assert_eq!((remote.sessions, remote.producers, remote.consumers), (30, 2, 60), "mirrors on shard 1");
}

/// The bus crosses too: a broadcast and an info change of a session on one shard reach the
/// sessions on the other, and one leaving is announced there.
#[test]
fn the_bus_crosses_shards() {
    let mut sim = Sim::with_shards(2);
    let channel = sim.create_channel(true);
    let a = sim.join_on(channel, json!(1), 0);
    let b = sim.join_on(channel, json!(2), 1);
    sim.run_for(Duration::from_secs(1));
    let _ = std::iter::from_fn(|| sim.participant(b).poll_event()).count();
    sim.participant(a).broadcast(json!({"hello": "from shard 0"}));
    sim.participant(a).update_info(json!({"isTalking": true}), false);
    sim.run_for(Duration::from_millis(100));
    let messages: Vec<(String, serde_json::Value)> = std::iter::from_fn(|| sim.participant(b).poll_event())
        .filter_map(|e| match e {
            ParticipantEvent::Message { name, payload } => Some((name, payload)),
            _ => None,
        })
        .collect();
    assert!(messages.iter().any(|(n, p)| n == "BROADCAST" && p["message"]["hello"] == "from shard 0"), "{messages:?}");
    assert!(messages.iter().any(|(n, p)| n == "S_INFO_CHANGE" && p["1"]["isTalking"] == true), "{messages:?}");
    sim.leave(a);
    sim.run_for(Duration::from_millis(100));
    let left: Vec<ParticipantEvent> = std::iter::from_fn(|| sim.participant(b).poll_event()).collect();
    assert!(
        left.iter().any(|e| matches!(e, ParticipantEvent::Message { name, payload } if name == "SESSION_LEAVE" && payload["sessionId"] == 1)),
        "{left:?}"
    );
}

/// A subscriber on the other shard: its layers follow its own downlink, its requests for a
/// keyframe reach the publisher, and the publisher's camera closing ends its consumer too.
#[test]
fn a_remote_subscriber_switches_layers_asks_for_keyframes_and_loses_a_closed_producer() {
    let mut sim = Sim::with_shards(2);
    let channel = sim.create_channel(true);
    let publisher = sim.join_on(channel, json!(1), 0);
    let remote = sim.join_on(channel, json!(2), 1);
    let now = sim.now;
    sim.participant(publisher).publish(now, camera());
    let layer = |sim: &mut Sim| {
        let session = sim.members[remote].session;
        sim.shard_at(1).consumers().find(|(_, c)| c.session() == session).and_then(|(_, c)| c.current())
    };
    assert!(sim.run_until(Duration::from_secs(20), |s| layer(s) == Some(2)), "never reached the top layer");

    // A narrow downlink on the remote subscriber: down, then back up when it widens.
    sim.set_link(remote, Link { loss: 0.0, rate_bps: Some(250_000) });
    assert!(
        sim.run_until(Duration::from_secs(30), |s| layer(s).is_some_and(|l| l < 2)),
        "stayed on {:?}",
        layer(&mut sim)
    );
    sim.set_link(remote, Link::default());
    assert!(sim.run_until(Duration::from_secs(60), |s| layer(s) == Some(2)), "stayed on {:?}", layer(&mut sim));

    // Pausing and resuming what it receives restarts it at a keyframe: asked of the publisher,
    // whose producer is on the other shard.
    let since = sim.now;
    let keyframes = sim.participant(remote).reception(&json!(1), "camera").unwrap().keyframes;
    sim.participant(remote).set_consumption(json!(1), json!({"camera": false}));
    sim.run_for(Duration::from_millis(600));
    sim.participant(remote).set_consumption(json!(1), json!({"camera": true}));
    let asked = sim.run_until(Duration::from_secs(3), |s| {
        s.shard
            .producers()
            .any(|(_, p)| p.layers().iter().any(|l| l.last_keyframe_request().is_some_and(|t| t > since)))
    });
    assert!(asked, "the publisher's shard was not asked for a keyframe");
    assert!(
        sim.run_until(Duration::from_secs(3), |s| s
            .participant(remote)
            .reception(&json!(1), "camera")
            .unwrap()
            .keyframes
            > keyframes),
        "no keyframe reached the remote subscriber"
    );

    // The publisher leaves: its mirror and the remote consumer go.
    sim.leave(publisher);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.shard_at(1).producers().count(), 0);
    assert_eq!(sim.shard_at(1).consumers().count(), 0);
}

/// A session id that joins again on the other shard replaces its old connection there, as on
/// one shard: the old one is closed, the others keep one member for the id.
#[test]
fn a_rejoin_on_the_other_shard_replaces_the_old_connection() {
    let mut sim = Sim::with_shards(2);
    let channel = sim.create_channel(true);
    let first = sim.join_on(channel, json!(7), 0);
    let other = sim.join_on(channel, json!(8), 0);
    sim.run_for(Duration::from_secs(1));
    let again = sim.join_on(channel, json!(7), 1);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.members[first].closed, Some(4108), "the old connection is closed as replaced");
    assert_eq!(sim.members[again].closed, None);
    assert_eq!(sim.members[other].closed, None);
    assert_eq!(sim.shard_at(0).counters().sessions, 1);
    assert_eq!(sim.shard_at(1).counters().sessions, 1);
    let now = sim.now;
    sim.participant(again).publish(now, Publish::Audio { bytes: 100 });
    assert!(sim.run_until(Duration::from_secs(10), |s| packets(s, other, 7, "audio") > 50));
}

/// A part away from the channel's home closes when its last session leaves: the home stops
/// relaying to it, and a later session there gets a fresh part that is told everything again.
#[test]
fn a_part_closes_with_its_last_session_and_comes_back_with_the_next() {
    let mut sim = Sim::with_shards(2);
    let channel = sim.create_channel(true);
    let publisher = sim.join_on(channel, json!(1), 0);
    let now = sim.now;
    sim.participant(publisher).publish(now, Publish::Audio { bytes: 100 });
    let away = sim.join_on(channel, json!(2), 1);
    assert!(sim.run_until(Duration::from_secs(10), |s| packets(s, away, 1, "audio") > 50));
    sim.leave(away);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.shard_at(1).counters().channels, 0, "the part away from home closed");
    let relayed = sim.shard_at(0).counters().rtp_relayed_out;
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.shard_at(0).counters().rtp_relayed_out, relayed, "nothing relayed to a closed part");
    let back = sim.join_on(channel, json!(3), 1);
    assert!(
        sim.run_until(Duration::from_secs(10), |s| packets(s, back, 1, "audio") > 50),
        "the new part hears the publisher"
    );
    assert_eq!(sim.shard_at(0).counters().channels, 1);
}

/// A part made for a session the full channel then refuses does not stay behind.
#[test]
fn a_part_made_for_a_refused_session_closes() {
    let mut sim = Sim::with_shards(2);
    let channel = sim.create_channel(true);
    for id in 1..=100 {
        sim.join_on(channel, json!(id), 0);
    }
    sim.run_for(Duration::from_secs(1));
    let now = sim.now;
    let meet = Command::Meet { channel, webrtc: true, shards: vec![0] };
    sim.shard_at(1).handle_command(now, meet);
    // The new part learns of the channel's members first.
    sim.run_for(Duration::from_millis(10));
    let now = sim.now;
    let join =
        Command::Join { channel, session: SessionRef(10_000), session_id: SessionId::from_value(&json!(101)).unwrap() };
    let refused = sim.shard_at(1).handle_command(now, join);
    assert!(matches!(refused, Reply::JoinRefused(JoinRefused::ChannelFull)), "{refused:?}");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.shard_at(1).counters().channels, 0);
}

/// When the link to another shard stays full for long (its shard stuck), the part that cannot
/// reach the other gives it up: its own sessions are closed with 1011, so their clients
/// reconnect, and the other part, told by the link's reset, sees them leave. The reconnected
/// sessions meet every part again, and the channel is whole: not two halves that cannot see
/// each other.
#[test]
fn a_part_that_lost_touch_closes_its_sessions_and_the_channel_mends() {
    let mut sim = Sim::with_shards(2);
    let channel = sim.create_channel(true);
    let a = sim.join_on(channel, json!(1), 0);
    let b = sim.join_on(channel, json!(2), 1);
    let now = sim.now;
    for m in [a, b] {
        sim.participant(m).publish(now, Publish::Audio { bytes: 100 });
    }
    assert!(
        sim.run_until(Duration::from_secs(10), |s| packets(s, a, 2, "audio") > 50 && packets(s, b, 1, "audio") > 50)
    );
    let _ = std::iter::from_fn(|| sim.participant(b).poll_event()).count();
    let old_consumer = sim.participant(b).reception(&json!(1), "audio").unwrap().consumer_id.clone();

    let now = sim.now;
    sim.shard_at(0).lost_relay(now, 1, channel);
    // What the link carries to shard 1 in place of the messages it dropped.
    sim.shard_at(1).handle_relay(now, 0, Relay { channel, message: RelayMessage::Reset });
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.members[a].closed, Some(1011));
    assert_eq!(sim.members[b].closed, None);
    let told: Vec<ParticipantEvent> = std::iter::from_fn(|| sim.participant(b).poll_event()).collect();
    assert!(
        told.iter().any(|e| matches!(e, ParticipantEvent::Message { name, payload } if name == "SESSION_LEAVE" && payload["sessionId"] == 1)),
        "{told:?}"
    );
    assert_eq!(sim.shard_at(1).producers().count(), 1, "shard 1 keeps its own producer, not the mirror");
    assert_eq!(sim.shard_at(0).producers().count(), 0);
    let relayed = sim.shard_at(1).counters().rtp_relayed_out;
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.shard_at(1).counters().rtp_relayed_out, relayed, "nothing relayed to the forgotten part");

    // The client reconnects: the server has its part meet the channel's parts before the join.
    let now = sim.now;
    sim.shard_at(0).handle_command(now, Command::Meet { channel, webrtc: true, shards: vec![0, 1] });
    let again = sim.join_on(channel, json!(1), 0);
    let now = sim.now;
    sim.participant(again).publish(now, Publish::Audio { bytes: 100 });
    let mended = sim.run_until(Duration::from_secs(10), |s| {
        let fresh = s.participant(b).reception(&json!(1), "audio").is_some_and(|r| r.consumer_id != old_consumer);
        packets(s, again, 2, "audio") > 50 && fresh && packets(s, b, 1, "audio") > 50
    });
    assert!(mended, "the halves did not meet again");
}

/// The channel closes at its home after an hour with at most one session, and every part with
/// it: the session left on another shard is closed as the home's would be, and no part stays.
#[test]
fn the_channel_closing_at_home_closes_every_part() {
    let mut sim = Sim::with_shards(2);
    let channel = sim.create_channel(true);
    let a = sim.join_on(channel, json!(1), 0);
    let b = sim.join_on(channel, json!(2), 1);
    sim.run_for(Duration::from_secs(1));
    sim.leave(a);
    sim.run_for(Duration::from_secs(3590));
    assert_eq!(sim.members[b].closed, None, "not before the hour");
    sim.run_for(Duration::from_secs(20));
    assert_eq!(sim.members[b].closed, Some(4108));
    assert_eq!(sim.shard_at(0).counters().channels, 0);
    assert_eq!(sim.shard_at(1).counters().channels, 0);
    // A join racing the close (its WebSocket placed before the directory forgot the channel)
    // does not make the channel again at home.
    let now = sim.now;
    sim.shard_at(0).handle_command(now, Command::Meet { channel, webrtc: true, shards: vec![0, 1] });
    assert_eq!(sim.shard_at(0).counters().channels, 0);
}
