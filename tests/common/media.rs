//! Participants of the real-socket media tests: the synthetic Odoo client (`Live`) joined to a
//! running server, and what it publishes and counts.

use super::{Server, key, now, sign};
use ringsfu_client::live::Live;
use ringsfu_client::{Participant, Publish};
use ringsfu_core::protocol::messages::MediaType;
use serde_json::json;
use std::time::Duration;
use str0m::net::Protocol;

/// Session `id` joins `channel`, its media over UDP.
pub async fn join(server: &Server, channel: &str, id: i64) -> Live {
    join_over(server, channel, id, Protocol::Udp).await
}

/// Session `id` joins `channel`, its media over `proto` (UDP or ICE-TCP).
pub async fn join_over(server: &Server, channel: &str, id: i64, proto: Protocol) -> Live {
    let jwt = sign(json!({"session_id": id, "exp": now() + 3600}), &key());
    Live::connect_over(&server.ws_url(), channel, &jwt, json!(id), "127.0.0.1".parse().unwrap(), proto)
        .await
        .expect("join")
}

/// Audio and a three-layer camera (100, 250 and 600 kbit/s).
pub fn publish_all(p: &Live) {
    p.with(|p, now| {
        p.publish(now, Publish::Audio { bytes: 100 });
        p.publish(now, Publish::Video { media: MediaType::Camera, bitrates: vec![100_000, 250_000, 600_000], fps: 30 });
    });
}

/// RTP packets `p` received of session `from`'s `media`.
pub fn packets(p: &mut Participant, from: i64, media: &str) -> u64 {
    p.reception(&json!(from), media).map_or(0, |r| r.packets)
}

/// Waits until each of `people` (session ids 1, 2, …) receives more than `audio` packets of
/// every other's audio and `camera` of their camera; panics with the server's log otherwise.
pub async fn wait_everyone_receives(server: &Server, people: &[Live], audio: u64, camera: u64) {
    let n = people.len() as i64;
    for (i, p) in people.iter().enumerate() {
        let me = i as i64 + 1;
        let ok = p
            .wait_for(Duration::from_secs(30), |p| {
                (1..=n).filter(|f| *f != me).all(|f| packets(p, f, "audio") > audio && packets(p, f, "camera") > camera)
            })
            .await;
        assert!(ok, "participant {me} did not receive everyone; server log:\n{}", server.stderr());
    }
}
