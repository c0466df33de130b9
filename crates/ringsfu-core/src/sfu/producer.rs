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
    pub(crate) rid: Option<Rid>,
    pub(crate) ssrc: Option<u32>,
    pub(crate) rtx_ssrc: Option<u32>,
    pub(crate) meter: RateMeter,
    pub(crate) last_keyframe_request: Option<Instant>,
    /// A keyframe was asked for and has not arrived yet.
    pub(crate) keyframe_pending: bool,
    /// Where its payloads live while consumers may resend them.
    pub(crate) payloads: PayloadRing,
    /// The highest (extended) sequence number forwarded from it: an older packet is late.
    pub(crate) highest_seq: Option<u64>,
    /// ringsfu's own ingress: the media stream's and its RTX stream's receive state, and the
    /// packets to ask again for (video).
    pub(crate) receive: Option<ReceiveStream>,
    pub(crate) rtx_receive: Option<ReceiveStream>,
    pub(crate) nack: Option<NackTracker>,
}

impl Layer {
    pub fn rid(&self) -> Option<Rid> {
        self.rid
    }

    /// The SSRC its packets come on, once bound.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// When the publisher was last asked for a keyframe of this layer.
    pub fn last_keyframe_request(&self) -> Option<Instant> {
        self.last_keyframe_request
    }

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
    pub(crate) id: Uuid,
    pub(crate) session: SessionRef,
    /// The publisher's receiving transport; `None` for the mirror of another part's producer.
    pub(crate) transport: Option<TransportKey>,
    /// The CNAME its consumers carry.
    pub(crate) cname: String,
    pub(crate) media: MediaType,
    pub(crate) params: ProducerParams,
    /// The media section on the receiving `Rtc`.
    pub(crate) mid: Mid,
    pub(crate) layers: SmallVec<[Layer; MAX_ENCODINGS]>,
    pub(crate) paused: bool,
    /// Consumers of this producer, on the subscribers' sending transports.
    pub(crate) consumers: Vec<ConsumerKey>,
    /// The active ones (acknowledged, not paused by their subscriber): the fan-out list.
    pub(crate) forwarding: Vec<ConsumerKey>,
    pub(crate) meter: RateMeter,
    pub(crate) clock_rate: u32,
}

impl Producer {
    /// The publisher.
    pub fn session(&self) -> SessionRef {
        self.session
    }

    pub fn media(&self) -> MediaType {
        self.media
    }

    /// The publisher's receiving transport (`None`: a mirror of another shard's producer).
    pub fn transport(&self) -> Option<TransportKey> {
        self.transport
    }

    /// Its simulcast layers, lowest first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub fn layer_of_rid(&self, rid: &[u8]) -> Option<u8> {
        self.params.encodings.iter().position(|e| e.rid.as_deref().map(str::as_bytes) == Some(rid)).map(|i| i as u8)
    }

    pub fn kind(&self) -> MediaKind {
        self.params.kind
    }
}
