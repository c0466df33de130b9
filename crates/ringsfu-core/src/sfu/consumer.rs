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
    pub(crate) id: Uuid,
    /// The subscriber.
    pub(crate) session: SessionRef,
    pub(crate) producer: ProducerKey,
    pub(crate) transport: TransportKey,
    pub(crate) media: MediaType,
    pub(crate) kind: MediaKind,
    pub(crate) mid: Mid,
    pub(crate) ssrc: u32,
    pub(crate) rtx_ssrc: Option<u32>,
    /// Router payload types the subscriber accepts: (main, rtx).
    pub(crate) codecs: SmallVec<[(u8, Option<u8>); 2]>,
    pub(crate) extensions: ConsumerExtensions,
    /// The subscriber acknowledged `INIT_CONSUMER`.
    pub(crate) acked: bool,
    /// `CONSUMPTION_CHANGE` paused it.
    pub(crate) paused_by_subscriber: bool,
    pub(crate) munger: Munger,
    /// VP8 picture ids kept continuous across layer switches (VP8 producers only).
    pub(crate) vp8: Option<Vp8Rewriter>,
    /// The layer forwarded now; `None` until a keyframe (re)starts the stream.
    pub(crate) current: Option<u8>,
    /// The layer the selector wants.
    pub(crate) target: Option<u8>,
    pub(crate) selector: LayerSelector,
    /// This consumer's share of its subscriber's downlink, bit/s.
    pub(crate) budget: u64,
    pub(crate) clock_rate: u32,
    /// Who writes this consumer's packets.
    pub(crate) egress: Egress,
    pub(crate) direct_extensions: DirectExtensions,
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

/// What a new consumer is made of; the rest starts empty: not acknowledged, no layer forwarded,
/// its egress undecided until its transport has SRTP keys.
pub struct ConsumerSpec {
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
    pub direct_extensions: DirectExtensions,
    pub clock_rate: u32,
    /// The producer sends VP8 (picture ids are rewritten).
    pub vp8: bool,
    /// The producer's simulcast layers.
    pub layers: usize,
    pub munger_seed: u64,
}

impl Consumer {
    pub fn new(spec: ConsumerSpec) -> Consumer {
        Consumer {
            id: spec.id,
            session: spec.session,
            producer: spec.producer,
            transport: spec.transport,
            media: spec.media,
            kind: spec.kind,
            mid: spec.mid,
            ssrc: spec.ssrc,
            rtx_ssrc: spec.rtx_ssrc,
            codecs: spec.codecs,
            extensions: spec.extensions,
            acked: false,
            paused_by_subscriber: false,
            munger: Munger::new(spec.munger_seed),
            vp8: spec.vp8.then(Vp8Rewriter::default),
            current: None,
            // Single-layer producers have nothing to choose; simulcast waits for the allocator.
            target: (spec.layers == 1).then_some(0),
            selector: LayerSelector::default(),
            budget: 0,
            clock_rate: spec.clock_rate,
            egress: Egress::Undecided,
            direct_extensions: spec.direct_extensions,
        }
    }

    /// The subscriber.
    pub fn session(&self) -> SessionRef {
        self.session
    }

    pub fn media(&self) -> MediaType {
        self.media
    }

    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// The layer forwarded now; `None` until a keyframe (re)starts the stream.
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// The layer the selector wants.
    pub fn target(&self) -> Option<u8> {
        self.target
    }

    /// Pins the target layer, for simulations and benches that steer the decision themselves
    /// (in a shard the allocator sets it again at its next plan).
    pub fn set_target(&mut self, layer: Option<u8>) {
        self.target = layer;
    }

    /// The subscriber acknowledged `INIT_CONSUMER`: packets may go to it.
    pub fn acknowledge(&mut self) {
        self.acked = true;
    }

    /// The VP8 picture-id rewriter (VP8 producers only).
    pub fn vp8_mut(&mut self) -> Option<&mut Vp8Rewriter> {
        self.vp8.as_mut()
    }

    /// Whether the producer's packets go to this subscriber now.
    pub fn is_active(&self, producer_paused: bool) -> bool {
        self.acked && !self.paused_by_subscriber && !producer_paused
    }

    pub fn payload_type_for(&self, router_pt: u8) -> Option<u8> {
        self.codecs.iter().find(|(pt, _)| *pt == router_pt).map(|(pt, _)| *pt)
    }
}
