//! Which shard a new session of a channel goes to (docs/cross-shard.md): its channel's home
//! shard while the channel has fewer than `CHANNEL_SHARD_BUDGET` sessions there and the shard is
//! not busy; otherwise the least busy shard with room, a shard already holding a part of the
//! channel first (every extra part is one more copy of each packet).

/// A shard whose thread was busier than this over the last sample takes no more sessions of a
/// channel spilling over from another shard, unless every shard is.
pub const BUSY: f64 = 0.7;

/// The state of the shards a placement looks at.
pub struct Shards<'a> {
    /// The channel's home shard.
    pub home: usize,
    /// The channel's sessions on each shard.
    pub sessions: &'a [usize],
    /// Each shard thread's CPU usage over the last sample (0–1).
    pub cpu: &'a [f64],
    /// The shards holding a part of the channel.
    pub parts: &'a [usize],
}

/// The shard for one more session; `budget` 0 keeps every channel on its home shard.
pub fn place(shards: &Shards, budget: usize) -> usize {
    let n = shards.sessions.len().min(shards.cpu.len());
    if budget == 0 || n <= 1 || shards.home >= n {
        return shards.home;
    }
    let cpu = |s: usize| shards.cpu[s];
    let has_room = |s: usize| shards.sessions[s] < budget && cpu(s) < BUSY;
    if has_room(shards.home) {
        return shards.home;
    }
    let least_busy = |candidates: &mut dyn Iterator<Item = usize>| {
        candidates.min_by(|a, b| cpu(*a).total_cmp(&cpu(*b)).then(shards.sessions[*a].cmp(&shards.sessions[*b])))
    };
    least_busy(&mut shards.parts.iter().copied().filter(|s| *s < n && has_room(*s)))
        .or_else(|| least_busy(&mut (0..n).filter(|s| has_room(*s))))
        .or_else(|| least_busy(&mut (0..n)))
        .unwrap_or(shards.home)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place_on(sessions: &[usize], cpu: &[f64], parts: &[usize], budget: usize) -> usize {
        place(&Shards { home: 0, sessions, cpu, parts }, budget)
    }

    #[test]
    fn a_channel_stays_home_while_it_fits() {
        assert_eq!(place_on(&[10, 0, 0], &[0.2, 0.1, 0.0], &[0], 200), 0);
        // Budget 0: never spread.
        assert_eq!(place_on(&[500, 0], &[0.9, 0.0], &[0], 0), 0);
        // One shard: nowhere else to go.
        assert_eq!(place_on(&[500], &[0.9], &[0], 200), 0);
    }

    #[test]
    fn past_the_budget_or_a_busy_home_it_spills_to_the_least_busy_shard_with_room() {
        assert_eq!(place_on(&[200, 0, 0], &[0.3, 0.5, 0.1], &[0], 200), 2);
        assert_eq!(place_on(&[10, 0, 0], &[0.8, 0.5, 0.1], &[0], 200), 2);
        // Equally busy: the one with fewer of the channel's sessions.
        assert_eq!(place_on(&[200, 5, 0], &[0.3, 0.2, 0.2], &[0, 1], 200), 1);
    }

    #[test]
    fn a_shard_already_holding_a_part_comes_first() {
        // Shard 2 is idler, but shard 1 already has a part with room.
        assert_eq!(place_on(&[200, 50, 0], &[0.3, 0.4, 0.0], &[0, 1], 200), 1);
        // Its part is full: a new part on the idlest shard.
        assert_eq!(place_on(&[200, 200, 0], &[0.3, 0.4, 0.0], &[0, 1], 200), 2);
    }

    #[test]
    fn when_every_shard_is_full_the_least_busy_takes_it() {
        assert_eq!(place_on(&[200, 200, 200], &[0.9, 0.75, 0.8], &[0, 1, 2], 200), 1);
    }
}
