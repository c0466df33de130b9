//! A consumer: what one subscriber receives of one producer, on the subscriber's sending
//! transport, with its own SSRC, mid and continuous numbering.

use super::arena::Key;
use super::forward::direct::{DirectExtensions, DirectStream};
use super::forward::layer::LayerSelector;
use super::forward::munger::Munger;
use super::forward::vp8::Vp8Rewriter;
use super::ortc::consumer_params::ConsumerExtensions;
use super::producer::ProducerKey;
use super::transport::TransportKey;
use crate::protocol::messages::MediaType;
use crate::sfu::ids::SessionRef;
use smallvec::SmallVec;
use std::time::Duration;
use str0m::media::{MediaKind, Mid};
use uuid::Uuid;

pub type ConsumerKey = Key<Consumer>;

/// Delay before a failed consumer creation is tried again (upstream's recovery timeout).
pub const RETRY_DELAY: Duration = Duration::from_secs(2);
/// SSRC mediasoup-client reserves for its bandwidth probator.
pub(crate) const PROBATOR_SSRC: u32 = 1234;

pub struct Consumer {
    pub id: Uuid,
    /// The subscriber.
    pub session: SessionRef,
    pub producer: ProducerKey,
    pub transport: TransportKey,
    pub media: MediaType,
    pub kind: MediaKind,
    pub mid: Mid,
    pub ssrc: u32,
    pub rtx_ssrc: Option<u32>,
    /// Router payload types the subscriber accepts: (main, rtx).
    pub codecs: SmallVec<[(u8, Option<u8>); 2]>,
    pub extensions: ConsumerExtensions,
    /// The subscriber acknowledged `INIT_CONSUMER`.
    pub acked: bool,
    /// `CONSUMPTION_CHANGE` paused it.
    pub paused_by_subscriber: bool,
    pub munger: Munger,
    /// VP8 picture ids kept continuous across layer switches (VP8 producers only).
    pub vp8: Option<Vp8Rewriter>,
    /// The layer forwarded now; `None` until a keyframe (re)starts the stream.
    pub current: Option<u8>,
    /// The layer the selector wants.
    pub target: Option<u8>,
    pub selector: LayerSelector,
    /// This consumer's share of its subscriber's downlink, bit/s.
    pub budget: u64,
    pub clock_rate: u32,
    /// Who writes this consumer's packets.
    pub egress: Egress,
    pub direct_extensions: DirectExtensions,
}

/// Who writes a consumer's packets.
#[derive(Debug)]
pub enum Egress {
    /// str0m's send path (queue, pacer, NACK/RTX, TWCC, reports): consumers on transports whose
    /// SRTP profile ringsfu does not seal itself, or with `OWN_*_EGRESS` off.
    Str0m,
    /// ringsfu's own (`forward::direct`): consumers on AES-GCM transports.
    Direct(Box<DirectStream>),
    /// The transport has no SRTP keys yet.
    Undecided,
}

impl Consumer {
    /// Whether the producer's packets go to this subscriber now.
    pub fn is_active(&self, producer_paused: bool) -> bool {
        self.acked && !self.paused_by_subscriber && !producer_paused
    }

    pub fn payload_type_for(&self, router_pt: u8) -> Option<u8> {
        self.codecs.iter().find(|(pt, _)| *pt == router_pt).map(|(pt, _)| *pt)
    }
}
