//! The gateway's picture of its fleet: each SFU's health, breaker and recent assignments, and
//! where channels were placed. Drivers feed it poll results and attempt outcomes and ask it what
//! to do; it never does IO and takes the time as an argument.
//!
//! A `/v1/channel` is: [`Registry::plan`] (candidates, best first) → for each candidate
//! [`Registry::begin_attempt`] (the breaker may refuse) → the HTTP call →
//! [`Registry::finish_attempt`] (or [`Registry::abandon_attempt`] when the caller went away).

use super::breaker::{Breaker, BreakerPolicy, BreakerState};
use super::config::{BalancingSettings, FailoverSettings, Fleet, HealthSettings, NodeConfig};
use super::health::{NodeHealth, PollOutcome, Transition};
use super::placement::Snapshot;
use super::placement::{NodeKey, Placements};
use super::selection::{self, Exclusion, Hint, Load, NodeView};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the fleet is watched and chosen (the reloadable sections).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub health: HealthSettings,
    pub balancing: BalancingSettings,
    pub failover: FailoverSettings,
    pub breaker: BreakerPolicy,
}

#[derive(Debug)]
struct Node {
    config: Arc<NodeConfig>,
    health: NodeHealth,
    breaker: Breaker,
    /// Channels created here, ever.
    assignments: u64,
    /// `assignments` when the last successful poll started: the ones after it are not in its figures.
    assignments_at_load: u64,
    /// Set for an SFU that registered itself (`POST /v1/register`), not listed in the configuration.
    registered: Option<Registered>,
    /// Channels assigned here by every gateway, as last read from the shared store.
    shared_assigned: Option<u64>,
    /// The shared count when this gateway's last successful poll started.
    shared_at_load: u64,
}

/// What a self-registered SFU last announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The SFU process (a new one after each restart).
    pub id: String,
    /// It leaves the fleet when its registration is not renewed by then.
    pub expires: Instant,
    /// It said it is draining: no new channels, at once.
    pub draining: bool,
}

/// What [`Registry::register`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Added,
    Renewed,
    /// The address is configured statically: the configuration wins, the announcement is ignored.
    Static,
}

impl Node {
    fn new(config: NodeConfig) -> Node {
        Node {
            config: Arc::new(config),
            health: NodeHealth::new(),
            breaker: Breaker::new(),
            assignments: 0,
            assignments_at_load: 0,
            registered: None,
            shared_assigned: None,
            shared_at_load: 0,
        }
    }

    /// Takes back the bump of an attempt that created nothing.
    fn unbump(&mut self, ticket: Ticket) {
        if ticket.bumped {
            self.assignments = self.assignments.saturating_sub(1);
            self.assignments_at_load = self.assignments_at_load.min(self.assignments);
        }
    }

    fn view(&self, now: Instant, breaker: &BreakerPolicy) -> NodeView<'_> {
        let announced_draining = self.registered.as_ref().is_some_and(|r| r.draining);
        let local_pending = self.assignments.saturating_sub(self.assignments_at_load);
        let shared_pending = self.shared_assigned.map_or(0, |n| n.saturating_sub(self.shared_at_load));
        NodeView {
            region: self.config.region.as_deref(),
            coordinates: self.config.coordinates,
            healthy: self.health.is_healthy(),
            circuit_open: !self.breaker.allows(now, breaker),
            load: self.health.last_load().map(|l| Load { draining: l.draining || announced_draining, ..l }),
            max_sessions: self.config.max_sessions,
            weight: self.config.weight,
            unknown_load: self.config.unknown_load,
            // Other gateways' assignments count too; this gateway's own are in both figures.
            pending: local_pending.max(shared_pending),
        }
    }
}

/// An attempt let through by [`Registry::begin_attempt`], to hand back when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Ticket {
    /// The attempt bumped the node's load (a new channel, not a repeat).
    bumped: bool,
}

/// What to try for one `/v1/channel`.
#[derive(Debug)]
pub struct Plan {
    /// Best first; the rest is the failover order.
    pub candidates: Vec<Arc<NodeConfig>>,
    /// The first candidate is where this `iss` already is.
    pub sticky: bool,
    pub excluded: Vec<(NodeKey, Exclusion)>,
}

/// What the end of an attempt changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Finished {
    /// The breaker opened, for this cool-down.
    pub tripped: Option<Duration>,
    /// The SFU answered with a channel the gateway did not know it to hold (not a repeat).
    pub new_channel: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The SFU answered with a channel.
    Created { channel: String },
    /// The SFU answered sanely but refused (a 4xx passed back to the caller).
    Answered,
    /// Timeout, connection error, 5xx, unusable answer.
    Failed,
}

/// One SFU's share of a `/v1/disconnect`.
#[derive(Debug)]
pub struct DisconnectRoute {
    pub node: Arc<NodeConfig>,
    pub channels: Map<String, Value>,
    /// Whether the node is known to hold one of these channels (else it only gets unknown ones).
    pub holder: bool,
}

/// What a reload changed.
#[derive(Debug, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: usize,
    pub removed: usize,
    pub kept: usize,
}

/// One node's figures for `/metrics`.
#[derive(Debug)]
pub struct NodeFigures {
    pub address: NodeKey,
    pub region: String,
    pub healthy: bool,
    pub breaker: BreakerState,
    pub sessions: Option<u64>,
    /// The capacity selection uses: the configured one, else the one the SFU reports.
    pub max_sessions: Option<u64>,
    /// The SFU said it is draining (SIGTERM): it takes no new channels.
    pub draining: bool,
    pub response_time: Option<Duration>,
    pub placements: usize,
    pub score: f64,
}

#[derive(Debug)]
pub struct Registry {
    nodes: Vec<Node>,
    tuning: Tuning,
    placements: Placements,
    rotation: u64,
    rng: StdRng,
}

impl Registry {
    pub fn new(fleet: Fleet) -> Registry {
        Registry::with_rng(fleet, StdRng::from_rng(&mut rand::rng()))
    }

    pub fn with_rng(fleet: Fleet, rng: StdRng) -> Registry {
        let tuning = tuning_of(&fleet);
        Registry {
            nodes: fleet.nodes.into_iter().map(Node::new).collect(),
            placements: Placements::new(tuning.balancing.sticky_ttl, tuning.balancing.channel_ttl),
            tuning,
            rotation: 0,
            rng,
        }
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// Swaps in a re-read fleet. Nodes whose address is unchanged keep their health, breaker and
    /// placements (their other settings, such as the key, are replaced); new ones start unknown.
    pub fn replace_fleet(&mut self, fleet: Fleet) -> ReloadSummary {
        self.tuning = tuning_of(&fleet);
        self.placements.set_ttls(self.tuning.balancing.sticky_ttl, self.tuning.balancing.channel_ttl);
        let (registered, mut old): (Vec<Node>, Vec<Node>) =
            std::mem::take(&mut self.nodes).into_iter().partition(|n| n.registered.is_some());
        let before = old.len();
        let mut kept = 0;
        for config in fleet.nodes {
            match old.iter().position(|n| n.config.address == config.address) {
                Some(i) => {
                    let mut node = old.swap_remove(i);
                    node.config = Arc::new(config);
                    self.nodes.push(node);
                    kept += 1;
                }
                None => self.nodes.push(Node::new(config)),
            }
        }
        let added = self.nodes.len() - kept;
        // Self-registered SFUs are not in the file: they stay, unless the file now lists them.
        for node in registered {
            if self.index_of(&node.config.address).is_none() {
                self.nodes.push(node);
            }
        }
        ReloadSummary { added, removed: before - kept, kept }
    }

    /// Candidates for a channel of `issuer`: where it already is (if that SFU can still serve
    /// it), then the ranking.
    pub fn plan(&mut self, issuer: &str, hint: Hint, now: Instant) -> Plan {
        let breaker = self.tuning.breaker;
        let views: Vec<NodeView> = self.nodes.iter().map(|n| n.view(now, &breaker)).collect();
        let ranking = selection::rank(&views, hint, &self.tuning.balancing.policy, self.rotation, &mut self.rng);
        self.rotation = self.rotation.wrapping_add(1);

        // A full SFU still serves the channel it holds; an unhealthy, open or draining one does not.
        let sticky = self.placements.sticky(issuer, now).and_then(|key| self.index_of(key)).filter(|&i| {
            let v = &views[i];
            v.healthy && !v.circuit_open && !v.load.is_some_and(|l| l.draining)
        });
        let mut order: Vec<usize> = sticky.into_iter().collect();
        order.extend(ranking.order.iter().copied().filter(|&i| Some(i) != sticky));
        Plan {
            candidates: order.into_iter().map(|i| self.nodes[i].config.clone()).collect(),
            sticky: sticky.is_some(),
            excluded: ranking
                .excluded
                .iter()
                .filter(|(i, _)| Some(*i) != sticky)
                .map(|&(i, reason)| (self.nodes[i].config.address.clone(), reason))
                .collect(),
        }
    }

    /// About to send `issuer`'s request to `address`: `None` when its breaker says no (or it was
    /// removed by a reload meanwhile). Reserves the placement and, for a new channel, bumps the
    /// node's load at once, so a burst planned before any answer still spreads.
    pub fn begin_attempt(&mut self, address: &NodeKey, issuer: &str, now: Instant) -> Option<Ticket> {
        let breaker = self.tuning.breaker;
        let node = self.nodes.iter_mut().find(|n| n.config.address == *address)?;
        if !node.breaker.try_acquire(now, &breaker) {
            return None;
        }
        let repeat = self.placements.reserve(issuer, address, now);
        if !repeat {
            node.assignments += 1;
        }
        Some(Ticket { bumped: !repeat })
    }

    /// The attempt ended. Returns the cool-down when this failure opened the node's breaker.
    pub fn finish_attempt(
        &mut self,
        address: &NodeKey,
        issuer: &str,
        ticket: Ticket,
        outcome: &AttemptOutcome,
        now: Instant,
    ) -> Finished {
        let breaker = self.tuning.breaker;
        let Some(node) = self.nodes.iter_mut().find(|n| n.config.address == *address) else {
            return Finished::default();
        };
        match outcome {
            AttemptOutcome::Created { channel } => {
                node.breaker.on_success(now);
                let new_channel = self.placements.confirm(issuer, address, channel, now);
                Finished { tripped: None, new_channel }
            }
            AttemptOutcome::Answered => {
                node.breaker.on_success(now);
                node.unbump(ticket);
                self.placements.release(issuer, address);
                Finished::default()
            }
            AttemptOutcome::Failed => {
                let tripped = node.breaker.on_failure(now, &breaker);
                node.unbump(ticket);
                self.placements.release(issuer, address);
                Finished { tripped, new_channel: false }
            }
        }
    }

    /// The attempt ended without an outcome (the caller went away).
    pub fn abandon_attempt(&mut self, address: &NodeKey, issuer: &str, ticket: Ticket) {
        if let Some(node) = self.node_mut(address) {
            node.breaker.on_abandoned();
            node.unbump(ticket);
        }
        self.placements.release(issuer, address);
    }

    /// The nodes to poll, each with its assignment count at the start of the poll.
    pub fn poll_targets(&self) -> Vec<(Arc<NodeConfig>, u64)> {
        self.nodes.iter().map(|n| (n.config.clone(), n.assignments)).collect()
    }

    /// A poll of `address`, started when the node had `assignments_then`, ended with `outcome`.
    pub fn handle_poll(
        &mut self,
        address: &NodeKey,
        assignments_then: u64,
        outcome: PollOutcome,
        response_time: Duration,
        now: Instant,
    ) -> Option<Transition> {
        let policy = self.tuning.health.policy;
        let node = self.node_mut(address)?;
        if !matches!(outcome, PollOutcome::Failed(_)) {
            node.assignments_at_load = node.assignments_at_load.max(assignments_then);
        }
        node.health.handle_poll(outcome, response_time, now, &policy)
    }

    /// Splits a disconnect's `sessionIdsByChannel` by the SFU holding each channel; channels
    /// whose SFU is unknown go to every healthy SFU (they skip channels they do not have).
    pub fn disconnect_routes(&self, by_channel: &Map<String, Value>, now: Instant) -> Vec<DisconnectRoute> {
        let mut known: Vec<Map<String, Value>> = vec![Map::new(); self.nodes.len()];
        let mut unknown = Map::new();
        for (channel, sessions) in by_channel {
            match self.placements.holder(channel, now).and_then(|key| self.index_of(key)) {
                Some(i) => known[i].insert(channel.clone(), sessions.clone()),
                None => unknown.insert(channel.clone(), sessions.clone()),
            };
        }
        let mut routes = Vec::new();
        for (node, mut channels) in self.nodes.iter().zip(known) {
            let holder = !channels.is_empty();
            if !unknown.is_empty() && node.health.is_healthy() {
                channels.extend(unknown.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            if !channels.is_empty() {
                routes.push(DisconnectRoute { node: node.config.clone(), channels, holder });
            }
        }
        routes
    }

    /// How long a refused caller should wait: until the first breaker probe, at most one health
    /// interval (a node may come back on the next poll), at least a second.
    pub fn retry_after(&self, now: Instant) -> Duration {
        let probe =
            self.nodes.iter().filter_map(|n| n.breaker.retry_at()).map(|t| t.saturating_duration_since(now)).min();
        let wait = probe.map_or(self.tuning.health.interval, |p| p.min(self.tuning.health.interval));
        Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Ready when at least one SFU is healthy.
    pub fn is_ready(&self) -> bool {
        self.nodes.iter().any(|n| n.health.is_healthy())
    }

    pub fn sweep(&mut self, now: Instant) {
        self.placements.sweep(now);
    }

    pub fn figures(&self, now: Instant) -> Vec<NodeFigures> {
        let placements = self.placements.count_by_node(now);
        let breaker = self.tuning.breaker;
        self.nodes
            .iter()
            .map(|n| NodeFigures {
                address: n.config.address.clone(),
                region: n.config.region.clone().unwrap_or_default(),
                healthy: n.health.is_healthy(),
                breaker: n.breaker.state(now),
                sessions: n.health.last_load().map(|l| l.sessions),
                max_sessions: n
                    .config
                    .max_sessions
                    .or(n.health.last_load().and_then(|l| l.max_sessions))
                    .filter(|&m| m > 0),
                draining: n.view(now, &breaker).load.is_some_and(|l| l.draining),
                response_time: n.health.response_time(),
                placements: placements.get(&n.config.address).copied().unwrap_or(0),
                score: selection::score(&n.view(now, &breaker), &self.tuning.balancing.policy),
            })
            .collect()
    }

    /// `/v1/health`: every SFU with what the gateway knows of it.
    pub fn report(&self, now: Instant) -> Value {
        let placements = self.placements.count_by_node(now);
        let breaker = self.tuning.breaker;
        let policy = self.tuning.balancing.policy;
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                let view = n.view(now, &breaker);
                let load = n.health.last_load().map(|l| {
                    json!({
                        "sessions": l.sessions,
                        "cpuUsage": l.cpu,
                        "memoryUsage": l.memory,
                        "maxSessions": l.max_sessions,
                        "draining": l.draining,
                    })
                });
                json!({
                    "address": &*n.config.address,
                    "region": n.config.region,
                    "state": n.health.state().label(),
                    "available": selection::exclusion(&view).is_none(),
                    "excluded": selection::exclusion(&view).map(Exclusion::label),
                    "load": load,
                    "loadKnown": load.is_some(),
                    "maxSessions": n.config.max_sessions,
                    "score": selection::score(&view, &policy),
                    "pendingAssignments": view.pending,
                    "responseTimeMs": n.health.response_time().map(ms),
                    "lastPollMsAgo": n.health.last_poll().map(|t| ms(now.saturating_duration_since(t))),
                    "lastError": n.health.last_error(),
                    "consecutiveFailures": n.health.consecutive_failures(),
                    "consecutiveSuccesses": n.health.consecutive_successes(),
                    "breaker": {
                        "state": n.breaker.state(now).label(),
                        "failures": n.breaker.failures(),
                        "trips": n.breaker.trips(),
                        "retryInMs": n.breaker.retry_at().map(|t| ms(t.saturating_duration_since(now))),
                    },
                    "placements": placements.get(&n.config.address).copied().unwrap_or(0),
                    "origin": if n.registered.is_some() { "registered" } else { "configured" },
                    "registration": n.registered.as_ref().map(|r| json!({
                        "id": r.id,
                        "draining": r.draining,
                        "expiresInMs": ms(r.expires.saturating_duration_since(now)),
                    })),
                    "sharedAssignments": n.shared_assigned,
                })
            })
            .collect();
        let healthy = self.nodes.iter().filter(|n| n.health.is_healthy()).count();
        let status = match healthy {
            0 => "unavailable",
            h if h == self.nodes.len() => "ok",
            _ => "degraded",
        };
        let (issuers, channels) = self.placements.len();
        json!({
            "status": status,
            "healthy": healthy,
            "total": self.nodes.len(),
            "placements": {"issuers": issuers, "channels": channels},
            "nodes": nodes,
        })
    }

    /// An SFU announced itself (directly or through the shared store). A new process at a known
    /// address starts over: it must pass a poll before it gets channels.
    pub fn register(&mut self, config: NodeConfig, id: &str, draining: bool, expires: Instant) -> Registration {
        let Some(node) = self.node_mut(&config.address) else {
            let mut node = Node::new(config);
            node.registered = Some(Registered { id: id.to_string(), expires, draining });
            self.nodes.push(node);
            return Registration::Added;
        };
        let Some(registered) = &mut node.registered else { return Registration::Static };
        if registered.id != id {
            *node = Node::new(config);
            node.registered = Some(Registered { id: id.to_string(), expires, draining });
            return Registration::Added;
        }
        registered.expires = registered.expires.max(expires);
        registered.draining = draining;
        node.config = Arc::new(config);
        Registration::Renewed
    }

    /// Whether the registered SFU at `address` announced it is draining (`None`: not registered).
    pub fn announced_draining(&self, address: &NodeKey) -> Option<bool> {
        self.nodes.iter().find(|n| n.config.address == *address)?.registered.as_ref().map(|r| r.draining)
    }

    /// What the shared store says before a `/v1/channel`: where `issuer` is (placed by any
    /// gateway) and how many channels each SFU was given by all gateways.
    pub fn apply_shared(&mut self, issuer: &str, holder: Option<&NodeKey>, assigned: &[(NodeKey, u64)], now: Instant) {
        if let Some(holder) = holder.filter(|h| self.index_of(h).is_some()) {
            self.placements.adopt(issuer, holder, now);
        }
        self.set_shared_assigned(assigned);
    }

    pub fn set_shared_assigned(&mut self, assigned: &[(NodeKey, u64)]) {
        for (address, count) in assigned {
            if let Some(node) = self.node_mut(address) {
                node.shared_assigned = Some(*count);
            }
        }
    }

    /// A successful poll of `address` started when the shared count was `count`.
    pub fn shared_polled(&mut self, address: &NodeKey, count: u64) {
        if let Some(node) = self.node_mut(address) {
            node.shared_at_load = count;
        }
    }

    /// Another gateway placed `issuer` on `address` (the shared store won a race or a reconciliation).
    pub fn adopt(&mut self, issuer: &str, address: &NodeKey, now: Instant) {
        self.placements.adopt(issuer, address, now);
    }

    /// Channels whose holder another gateway learned.
    pub fn adopt_channels(&mut self, holders: &[(String, NodeKey)], now: Instant) {
        for (channel, node) in holders {
            self.placements.adopt_channel(channel, node, now);
        }
    }

    /// The channels of `channels` whose holder this gateway does not know.
    pub fn unknown_channels<'a>(&self, channels: impl Iterator<Item = &'a String>, now: Instant) -> Vec<String> {
        channels.filter(|c| self.placements.holder(c, now).is_none()).cloned().collect()
    }

    pub fn placements_snapshot(&self, now: Instant) -> Snapshot {
        self.placements.snapshot(now)
    }

    pub fn config_of(&self, address: &NodeKey) -> Option<Arc<NodeConfig>> {
        self.nodes.iter().find(|n| n.config.address == *address).map(|n| n.config.clone())
    }

    pub fn addresses(&self) -> Vec<NodeKey> {
        self.nodes.iter().map(|n| n.config.address.clone()).collect()
    }

    /// Drops self-registered SFUs whose registration ran out; returns their addresses.
    pub fn expire_registrations(&mut self, now: Instant) -> Vec<NodeKey> {
        let mut gone = Vec::new();
        self.nodes.retain(|n| match &n.registered {
            Some(r) if r.expires <= now => {
                gone.push(n.config.address.clone());
                false
            }
            _ => true,
        });
        gone
    }

    fn index_of(&self, address: &NodeKey) -> Option<usize> {
        self.nodes.iter().position(|n| n.config.address == *address)
    }

    fn node_mut(&mut self, address: &NodeKey) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.config.address == *address)
    }
}

fn tuning_of(fleet: &Fleet) -> Tuning {
    Tuning { health: fleet.health, balancing: fleet.balancing, failover: fleet.failover, breaker: fleet.breaker }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FleetSources;
    use crate::selection::Load;
    use ringsfu_common::auth::Key;

    fn fleet(nodes: &[(&str, &str)]) -> Fleet {
        let list: Vec<Value> = nodes
            .iter()
            .map(|(address, region)| json!({"address": address, "region": region, "key": "a2V5"}))
            .collect();
        let doc = json!({"sfu": list, "circuit_breaker": {"failure_threshold": 2, "cooldown_seconds": 5}});
        FleetSources { secrets: None, nodes_json: Some(doc.to_string()), allow_empty: false }.load().unwrap().0
    }

    fn registry(nodes: &[(&str, &str)]) -> Registry {
        Registry::with_rng(fleet(nodes), StdRng::seed_from_u64(1))
    }

    fn load(sessions: u64) -> PollOutcome {
        PollOutcome::Load(Load { sessions, cpu: 0.0, memory: 0.0, max_sessions: Some(100), draining: false })
    }

    fn key(s: &str) -> NodeKey {
        Arc::from(s)
    }

    fn addresses(plan: &Plan) -> Vec<&str> {
        plan.candidates.iter().map(|c| &*c.address).collect()
    }

    /// One whole attempt; panics if the breaker refuses it. Returns the cool-down if it tripped.
    fn attempt(
        r: &mut Registry,
        address: &str,
        issuer: &str,
        outcome: AttemptOutcome,
        now: Instant,
    ) -> Option<Duration> {
        let ticket = r.begin_attempt(&key(address), issuer, now).expect("the breaker lets it through");
        r.finish_attempt(&key(address), issuer, ticket, &outcome, now).tripped
    }

    fn created(channel: &str) -> AttemptOutcome {
        AttemptOutcome::Created { channel: channel.into() }
    }

    /// Each node's load bump not yet cleared by a poll, in configuration order.
    fn pending_assignments(r: &Registry, now: Instant) -> Vec<u64> {
        r.report(now)["nodes"].as_array().unwrap().iter().map(|n| n["pendingAssignments"].as_u64().unwrap()).collect()
    }

    fn poll_all(r: &mut Registry, sessions: &[u64], now: Instant) {
        for ((config, assignments), s) in r.poll_targets().into_iter().zip(sessions) {
            r.handle_poll(&config.address, assignments, load(*s), Duration::from_millis(1), now);
        }
    }

    #[test]
    fn nothing_is_a_candidate_before_its_first_successful_poll() {
        let mut r = registry(&[("http://a", "x")]);
        let now = Instant::now();
        let plan = r.plan("iss", Hint::default(), now);
        assert!(plan.candidates.is_empty());
        assert_eq!(plan.excluded, vec![(key("http://a"), Exclusion::Unhealthy)]);
        assert!(!r.is_ready());
        poll_all(&mut r, &[0], now);
        assert!(r.is_ready());
        assert_eq!(addresses(&r.plan("iss", Hint::default(), now)), vec!["http://a"]);
    }

    #[test]
    fn an_issuer_sticks_to_its_sfu_even_when_another_is_now_better() {
        let mut r = registry(&[("http://a", "x"), ("http://b", "x")]);
        let now = Instant::now();
        poll_all(&mut r, &[0, 10], now);
        let plan = r.plan("iss", Hint::default(), now);
        assert_eq!(addresses(&plan), vec!["http://a", "http://b"]);
        attempt(&mut r, "http://a", "iss", created("c1"), now);

        poll_all(&mut r, &[50, 0], now);
        let plan = r.plan("iss", Hint::default(), now);
        assert!(plan.sticky);
        assert_eq!(addresses(&plan), vec!["http://a", "http://b"], "sticky first, the ranking as failover");
        assert_eq!(addresses(&r.plan("other", Hint::default(), now)), vec!["http://b", "http://a"]);

        // An unhealthy holder loses its stickiness.
        for _ in 0..3 {
            r.handle_poll(&key("http://a"), 0, PollOutcome::Failed("down".into()), Duration::ZERO, now);
        }
        let plan = r.plan("iss", Hint::default(), now);
        assert!(!plan.sticky);
        assert_eq!(addresses(&plan), vec!["http://b"]);
    }

    #[test]
    fn a_request_in_flight_reserves_the_issuer_for_its_sfu() {
        let mut r = registry(&[("http://a", "x"), ("http://b", "x")]);
        let now = Instant::now();
        poll_all(&mut r, &[0, 0], now);
        let ticket = r.begin_attempt(&key("http://b"), "iss", now).unwrap();
        let plan = r.plan("iss", Hint::default(), now);
        assert!(plan.sticky, "a concurrent request for the same issuer follows the first");
        assert_eq!(addresses(&plan)[0], "http://b");
        r.finish_attempt(&key("http://b"), "iss", ticket, &AttemptOutcome::Failed, now);
        assert!(!r.plan("iss", Hint::default(), now).sticky, "a failure releases the reservation");
        let ticket = r.begin_attempt(&key("http://a"), "iss", now).unwrap();
        r.abandon_attempt(&key("http://a"), "iss", ticket);
        assert!(!r.plan("iss", Hint::default(), now).sticky, "so does a caller going away");
        let pending = pending_assignments(&r, now);
        assert_eq!(pending, vec![0, 0], "attempts that created nothing take their bump back");
    }

    #[test]
    fn failures_open_the_breaker_which_removes_the_node_until_its_probe() {
        let mut r = registry(&[("http://a", "x"), ("http://b", "x")]);
        let now = Instant::now();
        poll_all(&mut r, &[0, 10], now);
        let a = key("http://a");
        for i in 0..2 {
            let tripped = attempt(&mut r, "http://a", &format!("iss{i}"), AttemptOutcome::Failed, now);
            assert_eq!(tripped.is_some(), i == 1);
        }
        let plan = r.plan("iss", Hint::default(), now);
        assert_eq!(addresses(&plan), vec!["http://b"]);
        assert_eq!(plan.excluded, vec![(a.clone(), Exclusion::CircuitOpen)]);
        assert_eq!(r.retry_after(now), Duration::from_secs(2), "capped by the health interval");

        let later = now + Duration::from_secs(5);
        assert_eq!(addresses(&r.plan("iss", Hint::default(), later))[0], "http://a", "half-open: probe it");
        let probe = r.begin_attempt(&a, "probe", later).expect("half-open lets the probe through");
        assert_eq!(r.begin_attempt(&a, "second", later), None, "one probe at a time");
        r.finish_attempt(&a, "probe", probe, &created("c"), later);
        assert!(r.begin_attempt(&a, "second", later).is_some(), "closed again");
    }

    #[test]
    fn assignments_bump_the_load_until_a_poll_that_started_after_them() {
        let mut r = registry(&[("http://a", "x"), ("http://b", "x")]);
        let now = Instant::now();
        poll_all(&mut r, &[0, 0], now);
        // A burst: every request is planned and sent before any answer comes back.
        let mut in_flight = Vec::new();
        for i in 0..4 {
            let iss = format!("iss{i}");
            let first = r.plan(&iss, Hint::default(), now).candidates[0].address.clone();
            let ticket = r.begin_attempt(&first, &iss, now).unwrap();
            in_flight.push((first, iss, ticket));
        }
        let firsts: Vec<&str> = in_flight.iter().map(|(a, _, _)| &**a).collect();
        assert_eq!(firsts, ["http://a", "http://b", "http://a", "http://b"]);
        for (i, (address, iss, ticket)) in in_flight.into_iter().enumerate() {
            r.finish_attempt(&address, &iss, ticket, &created(&format!("c{i}")), now);
        }
        // A repeat of a known channel is no new load.
        attempt(&mut r, "http://a", "iss0", created("c0"), now);
        let pending = pending_assignments(&r, now);
        assert_eq!(pending, vec![2, 2]);
        poll_all(&mut r, &[0, 0], now);
        assert_eq!(r.report(now)["nodes"][0]["pendingAssignments"], 0);
    }

    #[test]
    fn disconnects_go_to_holders_and_unknown_channels_to_every_healthy_sfu() {
        let mut r = registry(&[("http://a", "x"), ("http://b", "x"), ("http://c", "x")]);
        let now = Instant::now();
        poll_all(&mut r, &[0, 0], now); // c is never polled: not healthy
        attempt(&mut r, "http://a", "i1", created("on-a"), now);
        attempt(&mut r, "http://c", "i2", created("on-c"), now);

        let request = json!({"on-a": [1], "on-c": [2], "lost": [3]});
        let routes = r.disconnect_routes(request.as_object().unwrap(), now);
        let summary: Vec<(&str, Vec<&str>, bool)> = routes
            .iter()
            .map(|r| {
                let mut channels: Vec<&str> = r.channels.keys().map(String::as_str).collect();
                channels.sort_unstable();
                (&*r.node.address, channels, r.holder)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("http://a", vec!["lost", "on-a"], true),
                ("http://b", vec!["lost"], false),
                ("http://c", vec!["on-c"], true), // a holder gets its channels even when not healthy
            ]
        );
    }

    fn registered_config(address: &str) -> NodeConfig {
        let mut config = fleet(&[(address, "r")]).nodes.remove(0);
        config.key = Key::from_bytes(b"derived");
        config
    }

    #[test]
    fn a_registered_sfu_serves_after_its_first_poll_until_it_drains_or_its_registration_runs_out() {
        let mut r = registry(&[("http://a", "x")]);
        let now = Instant::now();
        let ttl = Duration::from_secs(15);
        assert_eq!(r.register(registered_config("http://reg"), "p1", false, now + ttl), Registration::Added);
        assert_eq!(r.register(registered_config("http://a"), "p2", false, now + ttl), Registration::Static);
        poll_all(&mut r, &[50], now); // only a is polled
        assert_eq!(addresses(&r.plan("iss", Hint::default(), now)), vec!["http://a"], "not polled yet");
        poll_all(&mut r, &[50, 0], now);
        assert_eq!(addresses(&r.plan("iss", Hint::default(), now)), vec!["http://reg", "http://a"]);

        // A heartbeat that says draining removes it from selection at once, before any poll.
        let later = now + Duration::from_secs(5);
        assert_eq!(r.register(registered_config("http://reg"), "p1", true, later + ttl), Registration::Renewed);
        let plan = r.plan("iss2", Hint::default(), later);
        assert_eq!(addresses(&plan), vec!["http://a"]);
        assert_eq!(plan.excluded, vec![(key("http://reg"), Exclusion::Draining)]);

        // A reload keeps it; its registration running out removes it.
        r.replace_fleet(fleet(&[("http://a", "x")]));
        assert_eq!(r.addresses().len(), 2);
        assert_eq!(r.expire_registrations(later + ttl - Duration::from_millis(1)), Vec::<NodeKey>::new());
        assert_eq!(r.expire_registrations(later + ttl), vec![key("http://reg")]);
        assert_eq!(r.addresses(), vec![key("http://a")]);

        // A restarted process at the same address starts unknown again.
        r.register(registered_config("http://reg"), "p1", false, later + 2 * ttl);
        poll_all(&mut r, &[0, 0], later);
        r.register(registered_config("http://reg"), "p3", false, later + 2 * ttl);
        assert_eq!(r.report(later)["nodes"][1]["state"], "unknown");
    }

    #[test]
    fn other_gateways_assignments_and_placements_count() {
        let mut r = registry(&[("http://a", "x"), ("http://b", "x")]);
        let now = Instant::now();
        poll_all(&mut r, &[0, 0], now);
        r.shared_polled(&key("http://a"), 10);
        r.shared_polled(&key("http://b"), 4);
        // Other gateways gave a five channels since this gateway's poll, b one.
        r.apply_shared("placed-elsewhere", Some(&key("http://b")), &[(key("http://a"), 15), (key("http://b"), 5)], now);
        assert_eq!(pending_assignments(&r, now), vec![5, 1]);
        let plan = r.plan("placed-elsewhere", Hint::default(), now);
        assert!(plan.sticky, "an issuer another gateway placed sticks to its SFU");
        assert_eq!(addresses(&plan), vec!["http://b", "http://a"]);
        assert_eq!(addresses(&r.plan("new", Hint::default(), now))[0], "http://b", "the less bumped");
        // A repeat of a channel placed elsewhere is no new load.
        let ticket = r.begin_attempt(&key("http://b"), "placed-elsewhere", now).unwrap();
        assert_eq!(ticket, Ticket { bumped: false });
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_addresses() {
        let mut r = registry(&[("http://a", "x"), ("http://b", "x")]);
        let now = Instant::now();
        poll_all(&mut r, &[0, 0], now);
        let mut next = fleet(&[("http://b", "y"), ("http://c", "y")]);
        next.nodes[0].key = Key::from_bytes(b"rotated");
        let summary = r.replace_fleet(next);
        assert_eq!(summary, ReloadSummary { added: 1, removed: 1, kept: 1 });
        let report = r.report(now);
        assert_eq!(report["nodes"][0]["address"], "http://b");
        assert_eq!(report["nodes"][0]["state"], "healthy", "b keeps its health");
        assert_eq!(report["nodes"][0]["region"], "y", "and takes its new settings");
        assert_eq!(report["nodes"][1]["state"], "unknown");
        assert_eq!(r.begin_attempt(&key("http://a"), "iss", now), None, "a is gone");
    }
}
