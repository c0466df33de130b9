//! Scenarios: who joins which room, when, publishing what, receiving how.

use crate::client::Mode;
use ringsfu_client::Publish;
use ringsfu_core::protocol::messages::MediaType;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// P talkers, S listeners per room (listeners publish nothing).
    AudioRoom,
    /// N participants per room, each publishing audio and three-layer video, receiving all.
    Meeting,
    /// One publisher (audio and video) to N listeners.
    Broadcast,
    /// Meeting rooms filled from 0 to N participants over `--ramp-seconds`.
    Ramp,
    /// Participants join at `--rate` per second and leave after `--stay` seconds.
    Churn,
    /// Everyone joins at once.
    Spike,
}

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Params {
    /// Seconds the run lasts (every client leaves at the end).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Rooms (channels).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Participants per room (meeting, ramp, churn, spike).
    #[arg(long, default_value_t = 6)]
    pub size: usize,
    /// Talkers per room (audio-room).
    #[arg(long, default_value_t = 3)]
    pub talkers: usize,
    /// Listeners per room (audio-room, broadcast).
    #[arg(long, default_value_t = 100)]
    pub listeners: usize,
    /// Receivers per room that decrypt and check everything (latency, loss); the rest are sinks.
    #[arg(long, default_value_t = 2)]
    pub full: usize,
    /// Audio payload bytes (50 packets per second).
    #[arg(long, default_value_t = 120)]
    pub audio_bytes: usize,
    /// Bitrates of the video simulcast layers, lowest first (bit/s).
    #[arg(long, value_delimiter = ',', default_value = "150000,500000,1500000")]
    pub video_bitrates: Vec<u64>,
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Ramp: seconds to reach the full size.
    #[arg(long, default_value_t = 10)]
    pub ramp_seconds: u64,
    /// Churn: joins per second.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Churn: seconds each participant stays.
    #[arg(long, default_value_t = 8)]
    pub stay: u64,
    /// Every client's media over ICE-TCP instead of UDP (each client then decrypts everything:
    /// no sinks, so keep rooms small).
    #[arg(long)]
    pub tcp: bool,
}

#[derive(Debug, Clone)]
pub struct ClientPlan {
    pub room: usize,
    pub session_id: i64,
    pub start_after: Duration,
    pub stay: Option<Duration>,
    pub publish: Vec<Publish>,
    pub mode: Mode,
}

pub struct Plan {
    pub kind: Kind,
    pub rooms: usize,
    pub clients: Vec<ClientPlan>,
    pub duration: Duration,
    /// When the steady state starts: measurements use the window from here to the end.
    pub warmup: Duration,
}

impl Plan {
    pub fn new(kind: Kind, p: &Params) -> Plan {
        let audio = Publish::Audio { bytes: p.audio_bytes };
        let video = Publish::Video { media: MediaType::Camera, bitrates: p.video_bitrates.clone(), fps: p.fps };
        let duration = Duration::from_secs(p.duration);
        let mut clients = Vec::new();
        let mut add = |room: usize,
                       index: usize,
                       start_after: Duration,
                       stay: Option<Duration>,
                       publish: Vec<Publish>,
                       full: bool| {
            clients.push(ClientPlan {
                room,
                session_id: index as i64 + 1,
                start_after,
                stay,
                publish,
                mode: if full { Mode::Full } else { Mode::Sink },
            });
        };
        // Joins are spread over the first second so the bus is not one burst.
        let spread = |i: usize, n: usize| Duration::from_millis((i as u64 * 1000) / n.max(1) as u64);
        let mut warmup = Duration::from_secs(3);
        match kind {
            Kind::AudioRoom => {
                for room in 0..p.rooms {
                    let n = p.talkers + p.listeners;
                    for i in 0..n {
                        let publish = if i < p.talkers { vec![audio.clone()] } else { vec![] };
                        let full = i >= p.talkers && i < p.talkers + p.full;
                        add(room, i, spread(i, n), None, publish, full);
                    }
                }
            }
            Kind::Meeting | Kind::Spike => {
                for room in 0..p.rooms {
                    for i in 0..p.size {
                        let start = if kind == Kind::Spike { Duration::from_secs(2) } else { spread(i, p.size) };
                        add(room, i, start, None, vec![audio.clone(), video.clone()], i < p.full);
                    }
                }
                warmup = Duration::from_secs(if kind == Kind::Spike { 6 } else { 5 });
            }
            Kind::Broadcast => {
                for room in 0..p.rooms {
                    add(room, 0, Duration::ZERO, None, vec![audio.clone(), video.clone()], false);
                    for i in 1..=p.listeners {
                        add(room, i, spread(i, p.listeners), None, vec![], i <= p.full);
                    }
                }
                warmup = Duration::from_secs(5);
            }
            Kind::Ramp => {
                let total = p.rooms * p.size;
                for k in 0..total {
                    let start = Duration::from_millis(p.ramp_seconds * 1000 * k as u64 / total.max(1) as u64);
                    add(
                        k % p.rooms,
                        k / p.rooms,
                        start,
                        None,
                        vec![audio.clone(), video.clone()],
                        k / p.rooms < p.full,
                    );
                }
                warmup = Duration::from_secs(p.ramp_seconds + 3);
            }
            Kind::Churn => {
                let joins = ((p.duration.saturating_sub(p.stay)) as f64 * p.rate).max(1.0) as usize;
                for k in 0..joins {
                    let start = Duration::from_secs_f64(k as f64 / p.rate.max(0.01));
                    add(
                        k % p.rooms,
                        k,
                        start,
                        Some(Duration::from_secs(p.stay)),
                        vec![audio.clone(), video.clone()],
                        false,
                    );
                }
                warmup = Duration::from_secs(p.stay.min(p.duration / 2));
            }
        }
        Plan { kind, rooms: p.rooms, clients, duration, warmup: warmup.min(duration / 2) }
    }

    pub fn describe(&self, p: &Params) -> Value {
        json!({"scenario": self.kind, "params": p, "clients": self.clients.len(), "rooms": self.rooms,
               "warmupSeconds": self.warmup.as_secs_f64(), "durationSeconds": self.duration.as_secs_f64()})
    }
}
