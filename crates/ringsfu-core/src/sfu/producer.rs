//! A producer: one media type a session publishes (audio, camera or screen), with its simulcast
//! layers, on that session's receiving transport.

use super::arena::Key;
use super::consumer::ConsumerKey;
use super::ingress::nack::NackTracker;
use super::ingress::payloads::{self, PayloadRing};
use super::ingress::receive::ReceiveStream;
use super::ortc::producer_params::{MAX_ENCODINGS, ProducerParams};
use super::rate::RateMeter;
use super::transport::TransportKey;
use crate::protocol::messages::MediaType;
use crate::sfu::ids::SessionRef;
use smallvec::SmallVec;
use std::time::{Duration, Instant};
use str0m::media::{MediaKind, Mid, Rid};
use uuid::Uuid;

pub type ProducerKey = Key<Producer>;

/// Minimum time between two keyframe requests to the same layer of a publisher.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// One encoding of a producer (a simulcast layer; layer 0 is the lowest).
#[derive(Debug)]
pub struct Layer {
    pub rid: Option<Rid>,
    pub ssrc: Option<u32>,
    pub rtx_ssrc: Option<u32>,
    pub meter: RateMeter,
    pub last_keyframe_request: Option<Instant>,
    /// A keyframe was asked for and has not arrived yet.
    pub keyframe_pending: bool,
    /// Where its payloads live while consumers may resend them.
    pub payloads: PayloadRing,
    /// The highest (extended) sequence number forwarded from it: an older packet is late.
    pub highest_seq: Option<u64>,
    /// ringsfu's own ingress: the media stream's and its RTX stream's receive state, and the
    /// packets to ask again for (video).
    pub receive: Option<ReceiveStream>,
    pub rtx_receive: Option<ReceiveStream>,
    pub nack: Option<NackTracker>,
}

impl Layer {
    pub(crate) fn new(rid: Option<Rid>, kind: MediaKind) -> Layer {
        let slots = if kind == MediaKind::Video { payloads::VIDEO_SLOTS } else { payloads::AUDIO_SLOTS };
        Layer {
            rid,
            ssrc: None,
            rtx_ssrc: None,
            meter: RateMeter::default(),
            last_keyframe_request: None,
            keyframe_pending: false,
            payloads: PayloadRing::new(slots),
            highest_seq: None,
            receive: None,
            rtx_receive: None,
            nack: None,
        }
    }
}

pub struct Producer {
    pub id: Uuid,
    pub session: SessionRef,
    pub transport: TransportKey,
    pub media: MediaType,
    pub params: ProducerParams,
    /// The media section on the receiving `Rtc`.
    pub mid: Mid,
    pub layers: SmallVec<[Layer; MAX_ENCODINGS]>,
    pub paused: bool,
    /// Consumers of this producer, on the subscribers' sending transports.
    pub consumers: Vec<ConsumerKey>,
    /// The active ones (acknowledged, not paused by their subscriber): the fan-out list.
    pub forwarding: Vec<ConsumerKey>,
    pub meter: RateMeter,
    pub clock_rate: u32,
}

impl Producer {
    pub fn layer_of_rid(&self, rid: &[u8]) -> Option<u8> {
        self.params.encodings.iter().position(|e| e.rid.as_deref().map(str::as_bytes) == Some(rid)).map(|i| i as u8)
    }

    pub fn kind(&self) -> MediaKind {
        self.params.kind
    }
}
