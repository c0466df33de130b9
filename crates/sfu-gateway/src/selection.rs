//! Which SFU takes a new channel, as a ranked list: the first is tried first, the rest are the
//! failover order.
//!
//! Sans-IO: the caller describes each node (health, breaker, last load figures, assignments since
//! those figures) and supplies the randomness; nothing here reads a clock or a socket.
//!
//! 1. Drop nodes that cannot take a channel: unhealthy, circuit open, draining, full.
//! 2. Resolve the hint: a `region` names a region; a `country` becomes the region of the nearest
//!    eligible node with coordinates. Nodes of that region come first, then all the others, so a
//!    region with nothing left falls back to every healthy SFU.
//! 3. Within each group, order by score `(w1·sessions/max + w2·cpu + w3·memory) / weight`
//!    (lowest first), or rotate for round-robin. With power-of-two-choices, the better of two
//!    random nodes goes first, which keeps several gateways from herding onto the same SFU.

use super::geo::{self, Coordinates};
use rand::Rng;

/// Capacity assumed for the optimistic bump of a node that reports none and has none configured.
pub const ASSUMED_CAPACITY: f64 = 1000.0;

/// The load figures an SFU reports on `/v1/load`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub sessions: u64,
    /// Machine CPU in use, 0..1.
    pub cpu: f64,
    /// Machine memory in use, 0..1.
    pub memory: f64,
    /// Capacity the SFU reports (`maxSessions`), if any.
    pub max_sessions: Option<u64>,
    pub draining: bool,
}

/// What selection needs to know about one node.
#[derive(Debug, Clone)]
pub struct NodeView<'a> {
    pub region: Option<&'a str>,
    pub coordinates: Option<Coordinates>,
    pub healthy: bool,
    pub circuit_open: bool,
    /// Last figures from `/v1/load`; `None` when the SFU reports no load (upstream Node SFU).
    pub load: Option<Load>,
    /// Configured capacity; wins over the reported one.
    pub max_sessions: Option<u64>,
    /// Relative capacity: the score is divided by it.
    pub weight: f64,
    /// The fraction assumed for every load figure when the load is unknown.
    pub unknown_load: f64,
    /// Channels assigned since the last load figures were taken.
    pub pending: u64,
}

/// Why a node cannot take a new channel right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exclusion {
    Unhealthy,
    CircuitOpen,
    Draining,
    Full,
}

impl Exclusion {
    pub fn label(self) -> &'static str {
        match self {
            Exclusion::Unhealthy => "unhealthy",
            Exclusion::CircuitOpen => "circuit open",
            Exclusion::Draining => "draining",
            Exclusion::Full => "full",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub sessions: f64,
    pub cpu: f64,
    pub memory: f64,
}

impl Default for Weights {
    fn default() -> Weights {
        Weights { sessions: 0.5, cpu: 0.3, memory: 0.2 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Load,
    RoundRobin,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub strategy: Strategy,
    pub weights: Weights,
    pub power_of_two: bool,
    /// Sessions one new channel is expected to bring (the optimistic bump per assignment).
    pub sessions_per_channel: f64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { strategy: Strategy::Load, weights: Weights::default(), power_of_two: false, sessions_per_channel: 3.0 }
    }
}

/// The caller's placement hints (query parameters of `/v1/channel`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hint<'a> {
    pub region: Option<&'a str>,
    pub country: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// Node indices, best first.
    pub order: Vec<usize>,
    pub excluded: Vec<(usize, Exclusion)>,
    /// The region preferred after resolving the hint.
    pub region: Option<String>,
}

/// Ranks `nodes` for a new channel. `rotation` drives round-robin; `rng` power-of-two-choices.
pub fn rank(nodes: &[NodeView], hint: Hint, policy: &Policy, rotation: u64, rng: &mut impl Rng) -> Ranking {
    let mut excluded = Vec::new();
    let mut eligible = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        match exclusion(node) {
            Some(reason) => excluded.push((i, reason)),
            None => eligible.push(i),
        }
    }
    let region = target_region(nodes, &eligible, hint);
    let (preferred, others): (Vec<usize>, Vec<usize>) =
        eligible.into_iter().partition(|&i| region.is_some_and(|r| in_region(&nodes[i], r)));
    let mut order = arrange(nodes, preferred, policy, rotation, rng);
    order.extend(arrange(nodes, others, policy, rotation, rng));
    Ranking { order, excluded, region: region.map(str::to_string) }
}

/// Why `node` cannot take a channel, in order of precedence; `None` when it can.
pub fn exclusion(node: &NodeView) -> Option<Exclusion> {
    if !node.healthy {
        return Some(Exclusion::Unhealthy);
    }
    if node.circuit_open {
        return Some(Exclusion::CircuitOpen);
    }
    let load = node.load?;
    if load.draining {
        return Some(Exclusion::Draining);
    }
    // Only reported sessions make a node full: the bump is a guess and must not refuse channels.
    match capacity(node) {
        Some(max) if load.sessions >= max => Some(Exclusion::Full),
        _ => None,
    }
}

/// Lower is better.
pub fn score(node: &NodeView, policy: &Policy) -> f64 {
    let w = policy.weights;
    let bump_capacity = capacity(node).map_or(ASSUMED_CAPACITY, |m| m as f64);
    let bump = node.pending as f64 * policy.sessions_per_channel / bump_capacity;
    let raw = match node.load {
        // Unknown load: every figure is taken as `unknown_load` (half loaded by default).
        None => node.unknown_load * (w.sessions + w.cpu + w.memory) + w.sessions * bump,
        Some(load) => {
            let sessions = match capacity(node) {
                Some(max) => load.sessions as f64 / max as f64 + bump,
                None => node.unknown_load + bump,
            };
            w.sessions * sessions + w.cpu * load.cpu.clamp(0.0, 1.0) + w.memory * load.memory.clamp(0.0, 1.0)
        }
    };
    raw / node.weight.max(f64::MIN_POSITIVE)
}

/// The configured capacity, else the reported one; zero means unknown.
fn capacity(node: &NodeView) -> Option<u64> {
    node.max_sessions.or(node.load.and_then(|l| l.max_sessions)).filter(|&m| m > 0)
}

fn in_region(node: &NodeView, region: &str) -> bool {
    node.region.is_some_and(|r| r.eq_ignore_ascii_case(region))
}

/// The region to prefer: the hinted one if some node has it, else the region of the eligible node
/// nearest to the hinted country. An explicit region wins over a country.
fn target_region<'a>(nodes: &[NodeView<'a>], eligible: &[usize], hint: Hint) -> Option<&'a str> {
    if let Some(wanted) = hint.region.map(str::trim).filter(|r| !r.is_empty()) {
        return nodes.iter().find(|n| in_region(n, wanted)).and_then(|n| n.region);
    }
    let origin = geo::country(hint.country?)?;
    eligible
        .iter()
        .map(|&i| &nodes[i])
        .filter_map(|n| Some((n.region?, n.coordinates?.distance_km(origin))))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(region, _)| region)
}

fn arrange(
    nodes: &[NodeView],
    mut group: Vec<usize>,
    policy: &Policy,
    rotation: u64,
    rng: &mut impl Rng,
) -> Vec<usize> {
    if group.len() < 2 {
        return group;
    }
    if policy.strategy == Strategy::RoundRobin {
        let shift = (rotation % group.len() as u64) as usize;
        group.rotate_left(shift);
        return group;
    }
    let scores: Vec<f64> = group.iter().map(|&i| score(&nodes[i], policy)).collect();
    let mut positions: Vec<usize> = (0..group.len()).collect();
    // Stable: equal scores keep configuration order.
    positions.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    if policy.power_of_two {
        let a = rng.random_range(0..group.len());
        let mut b = rng.random_range(0..group.len() - 1);
        if b >= a {
            b += 1;
        }
        let winner = if scores[b] < scores[a] { b } else { a };
        positions.retain(|&p| p != winner);
        positions.insert(0, winner);
    }
    positions.into_iter().map(|p| group[p]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn node(region: &str, sessions: u64, cpu: f64) -> NodeView<'_> {
        NodeView {
            region: (!region.is_empty()).then_some(region),
            coordinates: geo::region(region),
            healthy: true,
            circuit_open: false,
            load: Some(Load { sessions, cpu, memory: 0.0, max_sessions: Some(100), draining: false }),
            max_sessions: None,
            weight: 1.0,
            unknown_load: 0.5,
            pending: 0,
        }
    }

    fn ranked(nodes: &[NodeView], hint: Hint, policy: &Policy) -> Vec<usize> {
        rank(nodes, hint, policy, 0, &mut StdRng::seed_from_u64(7)).order
    }

    /// Each row protects one term of the score: (node, expected score) with default weights.
    #[test]
    fn score_terms() {
        let base = node("eu-west", 0, 0.0);
        let rows: Vec<(NodeView, f64)> = vec![
            (base.clone(), 0.0),
            (node("", 50, 0.0), 0.25), // 0.5 · 50/100
            (node("", 0, 1.0), 0.3),   // 0.3 · cpu
            (NodeView { load: Some(Load { memory: 0.5, ..base.load.unwrap() }), ..base.clone() }, 0.1), // 0.2 · memory
            (NodeView { load: None, ..base.clone() }, 0.5), // unknown load: half loaded
            (NodeView { load: None, unknown_load: 0.8, ..base.clone() }, 0.8), // configured otherwise
            (NodeView { max_sessions: Some(10), ..node("", 5, 0.0) }, 0.25), // configured capacity wins
            (NodeView { pending: 10, ..base.clone() }, 0.15), // bump: 0.5 · 10·3/100
            (NodeView { weight: 2.0, ..node("", 0, 1.0) }, 0.15), // weight divides
            (NodeView { load: Some(Load { max_sessions: None, ..base.load.unwrap() }), ..base.clone() }, 0.25), // no capacity
            (node("", 0, 7.0), 0.3), // figures are clamped to 0..1
        ];
        for (n, expected) in rows {
            let got = score(&n, &Policy::default());
            assert!((got - expected).abs() < 1e-9, "{n:?}: {got} != {expected}");
        }
    }

    /// Each row: the node, why it is excluded (None = eligible).
    #[test]
    fn exclusion_rules() {
        let base = node("", 10, 0.1);
        let with_load = |f: fn(&mut Load)| {
            let mut l = base.load.unwrap();
            f(&mut l);
            NodeView { load: Some(l), ..base.clone() }
        };
        let rows: Vec<(NodeView, Option<Exclusion>)> = vec![
            (base.clone(), None),
            (NodeView { healthy: false, circuit_open: true, ..base.clone() }, Some(Exclusion::Unhealthy)),
            (NodeView { circuit_open: true, ..base.clone() }, Some(Exclusion::CircuitOpen)),
            (with_load(|l| l.draining = true), Some(Exclusion::Draining)),
            (with_load(|l| l.sessions = 100), Some(Exclusion::Full)),
            (with_load(|l| l.sessions = 99), None),
            (NodeView { max_sessions: Some(10), ..base.clone() }, Some(Exclusion::Full)), // configured max wins
            (NodeView { pending: 1000, ..base.clone() }, None), // the bump never makes a node full
            (NodeView { load: None, ..base.clone() }, None),    // unknown load is never full
            (with_load(|l| l.max_sessions = Some(0)), None),    // zero capacity means unknown
        ];
        for (n, expected) in rows {
            assert_eq!(exclusion(&n), expected, "{n:?}");
        }
    }

    #[test]
    fn lowest_score_goes_first_and_ties_keep_configuration_order() {
        let nodes = [node("", 30, 0.0), node("", 10, 0.0), node("", 20, 0.0), node("", 10, 0.0)];
        assert_eq!(ranked(&nodes, Hint::default(), &Policy::default()), vec![1, 3, 2, 0]);
    }

    /// Each row: hint, expected order. Nodes: 0 eu-west (busy), 1 us-east, 2 eu-west, 3 no region.
    #[test]
    fn region_and_country_hints() {
        let nodes = [node("eu-west", 50, 0.0), node("us-east", 0, 0.0), node("eu-west", 10, 0.0), node("", 5, 0.0)];
        let hint = |region, country| Hint { region, country };
        let rows: &[(Hint, &[usize])] = &[
            (hint(None, None), &[1, 3, 2, 0]),
            (hint(Some("eu-west"), None), &[2, 0, 1, 3]), // the region first, then the rest as fallback
            (hint(Some("EU-WEST"), None), &[2, 0, 1, 3]), // case-insensitive
            (hint(Some("mars"), None), &[1, 3, 2, 0]),    // unknown region: ignored
            (hint(None, Some("FR")), &[2, 0, 1, 3]),      // France is nearest eu-west
            (hint(None, Some("ca")), &[1, 3, 2, 0]),      // Canada is nearest us-east
            (hint(None, Some("XX")), &[1, 3, 2, 0]),      // unknown country: ignored
            (hint(Some("us-east"), Some("FR")), &[1, 3, 2, 0]), // region wins over country
        ];
        for (h, expected) in rows {
            assert_eq!(ranked(&nodes, *h, &Policy::default()), *expected, "{h:?}");
        }
    }

    #[test]
    fn a_region_with_no_eligible_node_falls_back_to_every_healthy_one() {
        let mut nodes = [node("eu-west", 0, 0.0), node("us-east", 20, 0.0), node("us-east", 10, 0.0)];
        nodes[0].healthy = false;
        let r = rank(&nodes, Hint { region: Some("eu-west"), country: None }, &Policy::default(), 0, &mut rand::rng());
        assert_eq!(r.order, vec![2, 1]);
        assert_eq!(r.excluded, vec![(0, Exclusion::Unhealthy)]);
        assert_eq!(r.region.as_deref(), Some("eu-west"));
        // A country hint only considers eligible nodes: FR resolves to us-east, the nearest one left.
        let r = rank(&nodes, Hint { region: None, country: Some("FR") }, &Policy::default(), 0, &mut rand::rng());
        assert_eq!(r.region.as_deref(), Some("us-east"));
    }

    #[test]
    fn nodes_without_coordinates_make_country_hints_moot() {
        let mut nodes = [node("a", 10, 0.0), node("b", 0, 0.0)];
        for n in &mut nodes {
            n.coordinates = None;
        }
        let r = rank(&nodes, Hint { region: None, country: Some("FR") }, &Policy::default(), 0, &mut rand::rng());
        assert_eq!((r.order, r.region), (vec![1, 0], None));
    }

    /// A burst between two polls: each assignment bumps the chosen node, so equal nodes alternate.
    #[test]
    fn the_optimistic_bump_spreads_a_burst() {
        let mut nodes = [node("", 0, 0.0), node("", 0, 0.0), node("", 0, 0.0)];
        let mut counts = [0; 3];
        for _ in 0..30 {
            let first = ranked(&nodes, Hint::default(), &Policy::default())[0];
            counts[first] += 1;
            nodes[first].pending += 1;
        }
        assert_eq!(counts, [10, 10, 10]);
    }

    #[test]
    fn round_robin_rotates_within_each_group() {
        let nodes = [node("a", 90, 0.0), node("a", 0, 0.0), node("b", 0, 0.0)];
        let policy = Policy { strategy: Strategy::RoundRobin, ..Policy::default() };
        let mut firsts = Vec::new();
        for rotation in 0..4 {
            let r = rank(&nodes, Hint { region: Some("a"), country: None }, &policy, rotation, &mut rand::rng());
            assert_eq!(r.order[2], 2, "the other region stays behind");
            firsts.push(r.order[0]);
        }
        assert_eq!(firsts, vec![0, 1, 0, 1]);
    }

    /// Power-of-two-choices: the first is never the worse of the two sampled, so the worst node of
    /// all is never first, and over many draws every other node is.
    #[test]
    fn power_of_two_choices_picks_the_better_of_two_random_nodes() {
        let nodes = [node("", 0, 0.0), node("", 10, 0.0), node("", 20, 0.0), node("", 30, 0.0)];
        let policy = Policy { power_of_two: true, ..Policy::default() };
        let mut rng = StdRng::seed_from_u64(42);
        let mut firsts = [0; 4];
        for _ in 0..600 {
            let order = rank(&nodes, Hint::default(), &policy, 0, &mut rng).order;
            firsts[order[0]] += 1;
            let mut rest = order[1..].to_vec();
            rest.sort_unstable();
            assert_eq!(order.len(), 4);
            assert!(!rest.contains(&order[0]));
        }
        assert_eq!(firsts[3], 0, "the worst node never wins a pair");
        assert!(firsts[0] > firsts[1] && firsts[1] > firsts[2] && firsts[2] > 0, "{firsts:?}");
    }
}
