//! The packets sent with a transport-wide sequence number, in a fixed ring indexed by the
//! extended sequence number, so that feedback finds each one's send time, size and probe
//! cluster without searching or allocating.

/// Packets remembered: at 1,200-byte packets this is about 5 s at 8 Mbit/s; feedback comes
/// every 50–100 ms, so only a feedback that lags by seconds finds its packets forgotten.
pub const HISTORY_LEN: usize = 4096;

/// What feedback has said about a packet so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Unreported,
    Lost,
    Received,
}

#[derive(Debug, Clone, Copy)]
pub struct SentPacket {
    /// Extended sequence number; `u64::MAX` marks a slot never written.
    pub seq: u64,
    /// µs after the estimator's epoch.
    pub sent_us: u64,
    pub size: u16,
    /// Probe cluster id, 0 for media (cluster ids start at 1).
    pub cluster: u32,
    pub status: Status,
}

const EMPTY: SentPacket = SentPacket { seq: u64::MAX, sent_us: 0, size: 0, cluster: 0, status: Status::Unreported };

pub struct SentHistory {
    slots: Box<[SentPacket]>,
    /// The highest extended sequence number sent.
    last_seq: Option<u64>,
}

impl SentHistory {
    pub fn new() -> SentHistory {
        SentHistory { slots: vec![EMPTY; HISTORY_LEN].into_boxed_slice(), last_seq: None }
    }

    /// Remembers a packet; returns its extended sequence number.
    pub fn on_sent(&mut self, seq: u16, size: usize, cluster: u32, sent_us: u64) -> u64 {
        // The first packet starts one cycle up, so that a slightly older number still extends.
        let seq = extend(self.last_seq.unwrap_or(1 << 16), seq);
        self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
        let size = u16::try_from(size).unwrap_or(u16::MAX);
        self.slots[slot(seq)] = SentPacket { seq, sent_us, size, cluster, status: Status::Unreported };
        seq
    }

    /// The packet a feedback's 16-bit sequence number stands for, if still remembered.
    pub fn get_mut(&mut self, seq: u16) -> Option<&mut SentPacket> {
        let last = self.last_seq?;
        let seq = extend(last, seq);
        if seq > last {
            return None;
        }
        let packet = &mut self.slots[slot(seq)];
        (packet.seq == seq).then_some(packet)
    }

    /// The highest extended sequence number sent, and when it was sent.
    pub fn last_sent(&self) -> Option<(u64, u64)> {
        let seq = self.last_seq?;
        Some((seq, self.slots[slot(seq)].sent_us))
    }
}

/// A summary: the ring's 4,096 entries would drown any log.
impl std::fmt::Debug for SentHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |status| self.slots.iter().filter(|p| p.seq != u64::MAX && p.status == status).count();
        f.debug_struct("SentHistory")
            .field("last_seq", &self.last_seq)
            .field("unreported", &count(Status::Unreported))
            .field("lost", &count(Status::Lost))
            .field("received", &count(Status::Received))
            .finish()
    }
}

fn slot(seq: u64) -> usize {
    (seq % HISTORY_LEN as u64) as usize
}

/// The 64-bit number nearest to `reference` whose low 16 bits are `seq`.
fn extend(reference: u64, seq: u16) -> u64 {
    let delta = i64::from(seq.wrapping_sub(reference as u16) as i16);
    reference.saturating_add_signed(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_packets_across_the_16_bit_wrap_and_forgets_old_ones() {
        let mut h = SentHistory::new();
        let mut seq = 65_000u16;
        for i in 0..HISTORY_LEN as u64 + 10 {
            h.on_sent(seq, 1_000 + i as usize, 0, i);
            seq = seq.wrapping_add(1);
        }
        // The newest packets, past the wrap, are found with their own send times.
        let newest = seq.wrapping_sub(1);
        assert_eq!(h.get_mut(newest).map(|p| p.sent_us), Some(HISTORY_LEN as u64 + 9));
        let p = h.get_mut(5).expect("sent after the wrap");
        assert_eq!(p.sent_us, 541);
        // The first ten were overwritten; a number not sent yet is unknown.
        assert!(h.get_mut(65_000).is_none());
        assert!(h.get_mut(seq).is_none());
        assert_eq!(h.last_sent(), Some((h.last_seq.unwrap(), HISTORY_LEN as u64 + 9)));
    }

    #[test]
    fn nothing_is_known_before_the_first_packet() {
        let mut h = SentHistory::new();
        assert!(h.get_mut(0).is_none());
        assert!(h.last_sent().is_none());
    }
}
