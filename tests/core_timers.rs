//! The sans-IO core under a virtual clock: the timers no real-time test can afford to wait for.

use ringsfu_client::sim::default_limits;
use ringsfu_core::protocol::{CloseCode, SessionId};
use ringsfu_core::sfu::{ChannelId, Command, Reply, SessionEvent, SessionRef, SfuSettings, Shard, ShardEvent};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn shard(now: Instant) -> Shard {
    let settings = SfuSettings::new(&default_limits());
    Shard::new(0, Arc::new(settings), "127.0.0.1:40000".parse().unwrap(), now, 1)
}

fn events(s: &mut Shard) -> Vec<ShardEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn closes(events: &[ShardEvent]) -> Vec<(SessionRef, CloseCode)> {
    events
        .iter()
        .filter_map(|e| match e {
            ShardEvent::ToSession(r, SessionEvent::Close { code, .. }) => Some((*r, *code)),
            _ => None,
        })
        .collect()
}

fn join(s: &mut Shard, now: Instant, channel: ChannelId, r: u64, id: u64) {
    let reply = s.handle_command(
        now,
        Command::Join { channel, session: SessionRef(r), session_id: SessionId::from_value(&json!(id)).unwrap() },
    );
    assert!(matches!(reply, Reply::Joined), "{reply:?}");
}

/// Runs the shard's timers up to `until`, in steps.
fn advance(s: &mut Shard, until: Instant) {
    while let Some(next) = s.next_timeout() {
        if next > until {
            break;
        }
        s.handle_timeout(next);
    }
    s.handle_timeout(until);
}

#[test]
fn a_lone_session_is_kicked_after_an_hour_and_the_channel_closes() {
    let t0 = Instant::now();
    let mut s = shard(t0);
    let channel = ChannelId::random();
    s.handle_command(t0, Command::CreateChannel { channel, webrtc: false });
    join(&mut s, t0 + Duration::from_secs(10), channel, 1, 1);
    events(&mut s);
    advance(&mut s, t0 + Duration::from_secs(3599));
    assert!(events(&mut s).is_empty());
    advance(&mut s, t0 + Duration::from_secs(3600));
    let ev = events(&mut s);
    assert_eq!(closes(&ev), vec![(SessionRef(1), CloseCode::Kicked)]);
    assert!(ev.iter().any(|e| matches!(e, ShardEvent::ChannelClosed(c) if *c == channel)));
    assert_eq!(s.counters().channels, 0);
    assert_eq!(s.counters().sessions, 0);
}

#[test]
fn the_timer_stops_while_two_are_present_and_restarts_when_one_is_left() {
    let t0 = Instant::now();
    let mut s = shard(t0);
    let channel = ChannelId::random();
    s.handle_command(t0, Command::CreateChannel { channel, webrtc: false });
    join(&mut s, t0, channel, 1, 1);
    join(&mut s, t0 + Duration::from_secs(60), channel, 2, 2);
    advance(&mut s, t0 + Duration::from_secs(7200));
    assert!(closes(&events(&mut s)).is_empty(), "two sessions keep the channel");
    let left = t0 + Duration::from_secs(7300);
    s.handle_command(left, Command::Leave { session: SessionRef(2) });
    events(&mut s);
    advance(&mut s, left + Duration::from_secs(3599));
    assert!(closes(&events(&mut s)).is_empty());
    advance(&mut s, left + Duration::from_secs(3600));
    assert_eq!(closes(&events(&mut s)), vec![(SessionRef(1), CloseCode::Kicked)]);
}

#[test]
fn a_webrtc_session_that_never_connects_is_closed_with_4107() {
    let t0 = Instant::now();
    let mut s = shard(t0);
    let channel = ChannelId::random();
    s.handle_command(t0, Command::CreateChannel { channel, webrtc: true });
    join(&mut s, t0, channel, 1, 1);
    let ev = events(&mut s);
    assert!(ev.iter().any(|e| matches!(
        e,
        ShardEvent::ToSession(_, SessionEvent::Request { name: "INIT_TRANSPORTS", batch: false, .. })
    )));
    assert_eq!(s.counters().transports, 2);
    assert_eq!(s.counters().demux_entries, 2, "both ICE usernames are routed before INIT_TRANSPORTS goes out");
    advance(&mut s, t0 + Duration::from_secs(9));
    assert!(closes(&events(&mut s)).is_empty());
    advance(&mut s, t0 + Duration::from_secs(10));
    assert_eq!(closes(&events(&mut s)), vec![(SessionRef(1), CloseCode::Timeout)]);
    let c = s.counters();
    assert_eq!((c.sessions, c.transports, c.demux_entries), (0, 0, 0), "nothing leaks");
}

#[test]
fn a_full_channel_refuses_even_a_rejoin() {
    let t0 = Instant::now();
    let mut s = shard(t0);
    let channel = ChannelId::random();
    s.handle_command(t0, Command::CreateChannel { channel, webrtc: false });
    for i in 1..=100 {
        join(&mut s, t0, channel, i, i);
    }
    let reply = s.handle_command(
        t0,
        Command::Join { channel, session: SessionRef(500), session_id: SessionId::from_value(&json!(1)).unwrap() },
    );
    assert!(matches!(reply, Reply::JoinRefused(ringsfu_core::sfu::JoinRefused::ChannelFull)));
}
