//! The shard's output queues and its timer table's deadlines: what every router and transport
//! writes its effects into, for the driver to poll.

use super::command::ShardEvent;
use super::counters::LocalCounters;
use super::ids::{ChannelId, SessionRef};
use super::relay::Relay;
use super::timer::Timers;
use super::transport::{Transport, TransportKey};
use std::collections::VecDeque;
use std::net::SocketAddr;
use str0m::net::DatagramSend;
use str0m::{Event, Output};

/// What a deadline of the timer table is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    Rtc(TransportKey),
    SessionConnect(SessionRef),
    ConsumerRetry(SessionRef, SessionRef),
    ChannelClose(ChannelId),
    /// Every subscriber's allocation is re-planned.
    Bandwidth,
    /// Sender reports of the streams ringsfu sends itself.
    Reports,
    /// A transport lost ICE consent this long ago: its session goes unless it came back.
    ConsentLost(TransportKey),
    /// A sending transport's bandwidth estimator asked for the time (probe pacing, checks).
    Congestion(TransportKey),
    /// A receiving transport with ringsfu's own ingress owes its publisher feedback, a NACK or
    /// a report.
    Ingress(TransportKey),
}

/// Send buffers kept for reuse: enough for a burst of a few thousand datagrams. With
/// `MAX_SPARE_CAPACITY` this bounds the pool at 16 MiB per shard.
const SPARE_BUFFERS: usize = 4096;
/// A new send buffer's capacity: any datagram we send.
const BUFFER_CAPACITY: usize = 1500;
/// Larger buffers handed back are freed rather than kept.
const MAX_SPARE_CAPACITY: usize = 4096;

/// The shard's output queues, kept apart from its objects so the packet path can borrow both.
pub struct Outputs {
    pub timers: Timers<Timer>,
    pub transmits: VecDeque<(SocketAddr, DatagramSend)>,
    pub rtc_events: VecDeque<(TransportKey, Event)>,
    pub events: VecDeque<ShardEvent>,
    pub pokes: Vec<TransportKey>,
    /// Messages to the parts of a channel on other shards: (shard, message).
    pub relay: VecDeque<(usize, Relay)>,
    pub counters: LocalCounters,
    /// Sent datagrams' buffers, handed back by the driver for the packets ringsfu writes.
    spare: Vec<Vec<u8>>,
}

impl Outputs {
    pub fn new(timers: Timers<Timer>) -> Outputs {
        Outputs {
            timers,
            transmits: VecDeque::with_capacity(256),
            rtc_events: VecDeque::with_capacity(256),
            events: VecDeque::new(),
            pokes: Vec::with_capacity(64),
            relay: VecDeque::new(),
            counters: LocalCounters::default(),
            spare: Vec::new(),
        }
    }

    /// Moves everything an `Rtc` has to say into the queues. Called after every mutation of an
    /// `Rtc`, as str0m requires.
    pub fn drain(&mut self, key: TransportKey, t: &mut Transport) {
        let Some(rtc) = t.rtc.as_mut() else { return };
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    t.timeout = Some(at);
                    // An `Rtc` moves its deadline later after nearly every packet (its pacer
                    // wants a look 40 ms after the last): the table is touched only when the
                    // deadline comes earlier than the armed one, and a later one is re-armed
                    // when the armed one fires.
                    if t.armed.is_none_or(|armed| at < armed) {
                        t.armed = Some(at);
                        self.timers.schedule(at, Timer::Rtc(key));
                    }
                    return;
                }
                Ok(Output::Transmit(transmit)) => {
                    if !super::demux::is_stun(&transmit.contents) {
                        // DTLS and RTCP go where str0m's ICE agent sends media.
                        t.media_dest = Some(transmit.destination);
                    }
                    self.transmits.push_back((transmit.destination, transmit.contents))
                }
                Ok(Output::Event(event)) => self.rtc_events.push_back((key, event)),
                Err(e) => {
                    tracing::debug!(transport = %t.id, error = %e, "transport failed");
                    rtc.disconnect();
                    return;
                }
            }
        }
    }

    /// An empty send buffer: a spare one, else a new one.
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY))
    }

    /// Queues a datagram ringsfu writes itself to `dest`: `write` fills a spare buffer and says
    /// whether there is anything to send (if not, the buffer goes straight back).
    pub fn transmit_with(&mut self, dest: SocketAddr, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let mut buf = self.buffer();
        if write(&mut buf) {
            self.transmits.push_back((dest, buf.into()));
            true
        } else {
            self.recycle(buf);
            false
        }
    }

    /// Takes back a sent datagram's buffer for reuse (up to `SPARE_BUFFERS`).
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if self.spare.len() < SPARE_BUFFERS && (BUFFER_CAPACITY..=MAX_SPARE_CAPACITY).contains(&capacity) {
            self.spare.push(buffer);
        }
    }

    /// Notes that an `Rtc` has RTP queued, released by an `Input::Timeout` before idling.
    pub fn needs_poke(&mut self, key: TransportKey, t: &mut Transport) {
        if !t.needs_poke {
            t.needs_poke = true;
            self.pokes.push(key);
        }
    }
}
