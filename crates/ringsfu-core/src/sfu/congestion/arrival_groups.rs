//! Packets acknowledged by feedback, grouped as they were sent (draft-ietf-rmcat-gcc-02 §5.2:
//! a group is the packets sent within 5 ms of its first), with libwebrtc's InterArrival rule that
//! a packet arriving right behind a group, earlier than its send spacing says it should, joins
//! it (a queue released them together). Each completed group yields the change in one-way delay
//! from the group before it.
//!
//! Unlike the draft, a group is timed by its first packet, not its last: ringsfu forwards each
//! frame as a burst, unpaced, and a burst's last packet waits behind the burst itself, so every
//! rise of the rate would look like a queue building. The first packet of a frame waits only
//! behind what earlier frames left in the queue, which is the congestion signal.

/// Packets sent within this of a group's first belong to it.
const GROUP_SPAN_US: i64 = 5_000;
/// A packet arriving within this of the group's last, ahead of its send spacing, joins it.
const BURST_GAP_US: i64 = 5_000;
/// ... as long as the group has not been arriving for longer than this.
const MAX_BURST_US: i64 = 100_000;
/// A jump in arrival against send times beyond this is a clock change: start over.
const MAX_OFFSET_US: i64 = 3_000_000;

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send_us: i64,
    last_send_us: i64,
    first_arrival_us: i64,
    last_arrival_us: i64,
}

impl Group {
    fn new(send_us: i64, arrival_us: i64) -> Group {
        Group {
            first_send_us: send_us,
            last_send_us: send_us,
            first_arrival_us: arrival_us,
            last_arrival_us: arrival_us,
        }
    }
}

/// The delay variation between two consecutive groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupDelta {
    pub send_delta_us: i64,
    pub arrival_delta_us: i64,
    /// When the later group's first packet arrived (receiver's clock).
    pub arrival_us: i64,
}

#[derive(Debug, Default)]
pub struct ArrivalGroups {
    current: Option<Group>,
    previous: Option<Group>,
}

impl ArrivalGroups {
    /// One acknowledged packet, in feedback order; the delta of the group it completes, if any.
    /// Times: send on the sender's clock, arrival on the receiver's, both µs.
    pub fn on_packet(&mut self, send_us: i64, arrival_us: i64) -> Option<GroupDelta> {
        let Some(current) = self.current.as_mut() else {
            self.current = Some(Group::new(send_us, arrival_us));
            return None;
        };
        if send_us < current.first_send_us {
            // Sent before the group being built: reordered, says nothing new.
            return None;
        }
        if joins(current, send_us, arrival_us) {
            current.last_send_us = current.last_send_us.max(send_us);
            current.last_arrival_us = current.last_arrival_us.max(arrival_us);
            return None;
        }
        let done = std::mem::replace(current, Group::new(send_us, arrival_us));
        let previous = self.previous.replace(done)?;
        let send_delta_us = done.first_send_us - previous.first_send_us;
        let arrival_delta_us = done.first_arrival_us - previous.first_arrival_us;
        if (arrival_delta_us - send_delta_us).abs() > MAX_OFFSET_US {
            self.previous = None;
            return None;
        }
        if arrival_delta_us < 0 {
            return None;
        }
        Some(GroupDelta { send_delta_us, arrival_delta_us, arrival_us: done.first_arrival_us })
    }
}

fn joins(group: &Group, send_us: i64, arrival_us: i64) -> bool {
    if send_us - group.first_send_us <= GROUP_SPAN_US {
        return true;
    }
    let arrival_gap = arrival_us - group.last_arrival_us;
    let send_gap = send_us - group.last_send_us;
    arrival_gap <= BURST_GAP_US && arrival_gap < send_gap && arrival_us - group.first_arrival_us < MAX_BURST_US
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_send_time_and_reports_delay_variation() {
        let mut g = ArrivalGroups::default();
        // Frame 1 at 0 ms (3 packets), frame 2 at 33 ms, frame 3 at 66 ms, 4 at 99 ms.
        assert_eq!(g.on_packet(0, 20_000), None);
        assert_eq!(g.on_packet(0, 21_000), None);
        assert_eq!(g.on_packet(1_000, 22_000), None);
        assert_eq!(g.on_packet(33_000, 53_000), None); // completes group 1; no group before it
        // Group 2 completes: sent and arrived 33 ms after group 1 (its first packet).
        assert_eq!(
            g.on_packet(66_000, 90_000),
            Some(GroupDelta { send_delta_us: 33_000, arrival_delta_us: 33_000, arrival_us: 53_000 })
        );
        // Group 3 completes: it arrived 37 ms after group 2, sent 33 ms after: +4 ms.
        assert_eq!(
            g.on_packet(99_000, 120_000),
            Some(GroupDelta { send_delta_us: 33_000, arrival_delta_us: 37_000, arrival_us: 90_000 })
        );
    }

    #[test]
    fn a_burst_released_by_a_queue_joins_the_group() {
        let mut g = ArrivalGroups::default();
        g.on_packet(0, 50_000);
        // Sent 10 ms later but arriving 1 ms behind: same group.
        assert_eq!(g.on_packet(10_000, 51_000), None);
        g.on_packet(40_000, 90_000);
        let d = g.on_packet(80_000, 130_000).expect("two groups complete");
        assert_eq!(d.send_delta_us, 40_000);
        assert_eq!(d.arrival_delta_us, 40_000);
    }

    #[test]
    fn skips_reordered_and_starts_over_after_a_clock_jump() {
        let mut g = ArrivalGroups::default();
        g.on_packet(0, 50_000);
        g.on_packet(20_000, 70_000);
        assert!(g.on_packet(40_000, 90_000).is_some());
        // Sent before the current group: ignored.
        assert_eq!(g.on_packet(30_000, 95_000), None);
        // The arrival clock jumps 10 s: no delta from across the jump, then a fresh start.
        assert!(g.on_packet(60_000, 10_110_000).is_some());
        assert_eq!(g.on_packet(80_000, 10_130_000), None);
        assert_eq!(g.on_packet(100_000, 10_150_000), None);
        assert!(g.on_packet(120_000, 10_170_000).is_some());
    }
}
