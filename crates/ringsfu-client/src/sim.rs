//! An in-memory world: shard cores (one, or several for channels spread over shards) and
//! synthetic participants on a virtual network with a virtual clock. The bus between them is the real envelope format; datagrams are the real
//! ICE/DTLS/SRTP bytes. Used by deterministic tests, the allocation test and benchmarks.

use super::link::Bottleneck;
pub use super::link::{Link, MAX_QUEUE};
use super::participant::Participant;
use ringsfu_core::protocol::messages::ClientMessage;
use ringsfu_core::sfu::{
    ChannelId, Command, Limits, Reply, RequestFailed, SessionEvent, SessionRef, SfuSettings, Shard, ShardEvent,
};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::net::Protocol;

/// The shard's seed in every simulation: its choices (SSRCs, ICE credentials, ids) are the same
/// run after run.
pub const SIM_SEED: u64 = 0x5eed_f00d;

pub struct Member {
    pub session: SessionRef,
    /// The shard its session lives on (0: `Sim::shard`).
    pub shard: usize,
    pub participant: Participant,
    pub closed: Option<u16>,
    /// Its UDP path is dead both ways (its bus still works).
    pub offline: bool,
    /// Our requests the participant has not answered: envelope id → shard token.
    open: HashMap<String, u64>,
}

pub struct Sim {
    pub now: Instant,
    pub shard: Shard,
    pub shard_addr: SocketAddr,
    /// Shards 1, 2, … with their addresses (`Sim::with_shards`).
    pub more: Vec<(Shard, SocketAddr)>,
    /// The shards holding a part of each channel, and whether it has media.
    parts: HashMap<ChannelId, (bool, Vec<usize>)>,
    pub members: Vec<Member>,
    network: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    latency: Duration,
    links: HashMap<SocketAddr, Bottleneck>,
    /// Conditions on what participants send (by their local address).
    uplinks: HashMap<SocketAddr, Bottleneck>,
    next_session: u64,
    pub dropped_by_links: u64,
    /// NAT rebindings: a participant's local address → the address the server sees instead.
    nat: HashMap<SocketAddr, SocketAddr>,
    /// Called with `true` before and `false` after every call into the shard core, so a test can
    /// attribute work (allocations, time) to the server alone.
    pub shard_probe: Option<fn(bool)>,
    /// Sees every datagram the shard sends (its destination, its bytes), before the links.
    pub shard_tap: Option<ShardTap>,
}

/// What a test watches the shard send with: each datagram's destination and bytes.
pub type ShardTap = Box<dyn FnMut(SocketAddr, &[u8])>;

pub fn default_limits() -> Limits {
    Limits::default()
}

impl Sim {
    pub fn new() -> Sim {
        Sim::with_limits(default_limits())
    }

    pub fn with_limits(limits: Limits) -> Sim {
        let now = Instant::now();
        let shard_addr: SocketAddr = "10.0.0.1:40000".parse().expect("a literal address");
        let settings = Arc::new(SfuSettings::new(&limits));
        Sim {
            now,
            shard: Shard::new(0, settings, shard_addr, now, SIM_SEED),
            shard_addr,
            more: Vec::new(),
            parts: HashMap::new(),
            members: Vec::new(),
            network: VecDeque::new(),
            latency: Duration::from_millis(1),
            links: HashMap::new(),
            uplinks: HashMap::new(),
            next_session: 1,
            dropped_by_links: 0,
            shard_probe: None,
            shard_tap: None,
            nat: HashMap::new(),
        }
    }

    /// `n` shards (at least one), each with its own address; channels are created on shard 0.
    pub fn with_shards(n: usize) -> Sim {
        let mut sim = Sim::new();
        let settings = Arc::new(SfuSettings::new(&default_limits()));
        for i in 1..n {
            let addr: SocketAddr = format!("10.0.0.{}:40000", i + 1).parse().expect("a valid address");
            let shard = Shard::new(i, settings.clone(), addr, sim.now, SIM_SEED + i as u64);
            sim.more.push((shard, addr));
        }
        sim
    }

    /// Shard `i` (0 is `shard`).
    pub fn shard_at(&mut self, i: usize) -> &mut Shard {
        if i == 0 { &mut self.shard } else { &mut self.more[i - 1].0 }
    }

    fn shard_count(&self) -> usize {
        1 + self.more.len()
    }

    fn address_of(&self, i: usize) -> SocketAddr {
        if i == 0 { self.shard_addr } else { self.more[i - 1].1 }
    }

    pub fn create_channel(&mut self, webrtc: bool) -> ChannelId {
        let channel = ChannelId::random();
        self.shard.handle_command(self.now, Command::CreateChannel { channel, webrtc });
        self.parts.insert(channel, (webrtc, vec![0]));
        self.pump_bus();
        channel
    }

    /// Joins a new participant; returns its index in `members`.
    pub fn join(&mut self, channel: ChannelId, session_id: Value) -> usize {
        self.join_on(channel, session_id, 0)
    }

    /// Joins a new participant on shard `shard`, whose part of the channel meets the others
    /// first if it is new.
    pub fn join_on(&mut self, channel: ChannelId, session_id: Value, shard: usize) -> usize {
        let (webrtc, parts) = self.parts.get(&channel).cloned().unwrap_or((true, vec![0]));
        if !parts.contains(&shard) {
            let now = self.now;
            self.shard_at(shard).handle_command(now, Command::Meet { channel, webrtc, shards: parts });
            self.parts.entry(channel).or_insert((webrtc, Vec::new())).1.push(shard);
            self.pump_bus();
        }
        let n = self.next_session;
        self.next_session += 1;
        let session = SessionRef(n);
        let cts: SocketAddr = format!("10.1.{}.{}:5000", n / 250, n % 250 + 1).parse().expect("valid");
        let stc: SocketAddr = format!("10.1.{}.{}:5001", n / 250, n % 250 + 1).parse().expect("valid");
        let id = ringsfu_core::protocol::SessionId::from_value(&session_id).expect("a valid session id");
        self.members.push(Member {
            session,
            shard,
            participant: Participant::new(session_id, cts, stc),
            closed: None,
            open: HashMap::new(),
            offline: false,
        });
        let now = self.now;
        let reply = self.shard_at(shard).handle_command(now, Command::Join { channel, session, session_id: id });
        assert!(matches!(reply, Reply::Joined), "join refused: {reply:?}");
        self.pump_bus();
        self.members.len() - 1
    }

    pub fn leave(&mut self, index: usize) {
        let session = self.members[index].session;
        self.members[index].closed = Some(1000);
        let (now, shard) = (self.now, self.members[index].shard);
        self.shard_at(shard).handle_command(now, Command::Leave { session });
        self.pump_bus();
    }

    /// Conditions the downlink of participant `index` (both its addresses).
    pub fn set_link(&mut self, index: usize, link: Link) {
        for addr in self.members[index].participant.locals() {
            self.links.insert(addr, Bottleneck::new(link));
        }
    }

    /// Conditions the uplink of participant `index` (what it sends, from both its addresses).
    pub fn set_uplink(&mut self, index: usize, link: Link) {
        for addr in self.members[index].participant.locals() {
            self.uplinks.insert(addr, Bottleneck::new(link));
        }
    }

    /// Kills (or restores) participant `index`'s UDP path both ways; its bus keeps working.
    pub fn set_offline(&mut self, index: usize, offline: bool) {
        self.members[index].offline = offline;
        let link = if offline { Link { loss: 1.0, rate_bps: None } } else { Link::default() };
        self.set_link(index, link);
    }

    /// From now on the server sees participant `index`'s receiving address as `public` (a NAT
    /// rebinding or a network change the client's ICE agent does not notice).
    pub fn rebind(&mut self, index: usize, public: SocketAddr) {
        let [_, stc] = self.members[index].participant.locals();
        self.nat.insert(stc, public);
    }

    pub fn participant(&mut self, index: usize) -> &mut Participant {
        &mut self.members[index].participant
    }

    /// Moves bus traffic both ways until quiet.
    pub fn pump_bus(&mut self) {
        loop {
            let mut moved = false;
            // Relay messages go to their shard at once, in the order they were sent.
            for i in 0..self.shard_count() {
                while let Some((to, relay)) = self.shard_at(i).poll_relay() {
                    moved = true;
                    let now = self.now;
                    if to < self.shard_count() {
                        self.shard_at(to).handle_relay(now, i, relay);
                    }
                }
            }
            let mut events = Vec::new();
            for i in 0..self.shard_count() {
                let shard = self.shard_at(i);
                events.extend(std::iter::from_fn(|| shard.poll_event()).map(|e| (i, e)));
            }
            for (shard, event) in events {
                moved = true;
                let (session, event) = match event {
                    ShardEvent::ToSession(session, event) => (session, event),
                    ShardEvent::ChannelClosed(channel) => {
                        // That shard's part is gone: a later join there makes a new one.
                        if let Some((_, parts)) = self.parts.get_mut(&channel) {
                            parts.retain(|p| *p != shard);
                        }
                        continue;
                    }
                };
                let Some(m) = self.members.iter_mut().find(|m| m.session == session) else { continue };
                let envelope = match event {
                    SessionEvent::Send { name, payload, .. } => json!({"message": {"name": name, "payload": payload}}),
                    SessionEvent::Broadcast { payload } => {
                        let payload: Value = serde_json::from_str(&payload).expect("the shard writes JSON");
                        json!({"message": {"name": "BROADCAST", "payload": payload}})
                    }
                    SessionEvent::Request { token, name, payload, .. } => {
                        let id = format!("s_{}_{token}", session.0);
                        m.open.insert(id.clone(), token);
                        json!({"message": {"name": name, "payload": payload}, "needResponse": id})
                    }
                    SessionEvent::Reply { id, result } => match result {
                        Ok(Some(message)) => json!({"message": message, "responseTo": id}),
                        Ok(None) => json!({"responseTo": id}),
                        Err(error) => json!({"error": error, "responseTo": id}),
                    },
                    SessionEvent::Close { code, .. } => {
                        m.closed = Some(code.code());
                        continue;
                    }
                };
                if m.closed.is_none() {
                    m.participant.handle_envelope(self.now, &envelope);
                }
            }
            for i in 0..self.members.len() {
                while let Some(env) = self.members[i].participant.poll_envelope() {
                    moved = true;
                    if self.members[i].closed.is_some() {
                        continue;
                    }
                    self.deliver_to_shard(i, env);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver_to_shard(&mut self, i: usize, env: Value) {
        let (session, shard, now) = (self.members[i].session, self.members[i].shard, self.now);
        if let Some(id) = env.get("responseTo").and_then(Value::as_str) {
            if let Some(token) = self.members[i].open.remove(id) {
                let result = Ok(env.get("message").cloned().unwrap_or(Value::Null));
                self.shard_at(shard).handle_command(now, Command::ClientReply { session, token, result });
            }
            return;
        }
        let name = env["message"]["name"].as_str().unwrap_or_default();
        let payload = env["message"].get("payload").cloned().unwrap_or(Value::Null);
        let request = env.get("needResponse").cloned();
        match ClientMessage::parse(name, payload) {
            Ok(message) => {
                self.shard_at(shard).handle_command(now, Command::FromClient { session, request, message });
            }
            Err(e) => {
                if let Some(id) = request {
                    let reply = json!({"error": e, "responseTo": id});
                    self.members[i].participant.handle_envelope(self.now, &reply);
                }
            }
        }
    }

    /// Fails every open request of `index` as if it timed out (what the WebSocket driver does).
    pub fn time_out_requests(&mut self, index: usize) {
        let (session, shard, now) = (self.members[index].session, self.members[index].shard, self.now);
        let open: Vec<u64> = self.members[index].open.drain().map(|(_, t)| t).collect();
        for token in open {
            let timed_out = Command::ClientReply { session, token, result: Err(RequestFailed::TimedOut) };
            self.shard_at(shard).handle_command(now, timed_out);
        }
        self.pump_bus();
    }

    fn probe(&self, inside: bool) {
        if let Some(probe) = self.shard_probe {
            probe(inside);
        }
    }

    fn route_datagrams(&mut self) {
        for i in 0..self.shard_count() {
            self.route_shard_datagrams(i);
        }
        self.route_participant_datagrams();
    }

    fn route_shard_datagrams(&mut self, i: usize) {
        let from = self.address_of(i);
        loop {
            self.probe(true);
            let next = self.shard_at(i).poll_transmit();
            self.probe(false);
            let Some((to, sent)) = next else { break };
            // The wire gets a copy; the buffer goes back to the shard, as the real driver's
            // does after `sendmmsg`.
            let data = sent.to_vec();
            if let Some(tap) = self.shard_tap.as_mut() {
                tap(to, &data);
            }
            self.probe(true);
            self.shard_at(i).recycle(sent.into());
            self.probe(false);
            let leaves = match self.links.get_mut(&to) {
                Some(b) => b.admit(self.now, data.len()),
                None => Some(self.now),
            };
            let Some(leaves) = leaves else {
                self.dropped_by_links += 1;
                continue;
            };
            self.network.push_back((leaves + self.latency, from, to, data));
        }
    }

    fn route_participant_datagrams(&mut self) {
        let now = self.now;
        for m in &mut self.members {
            if m.closed.is_some() {
                continue;
            }
            while let Some((from, to, data)) = m.participant.poll_transmit() {
                if m.offline {
                    continue;
                }
                let leaves = match self.uplinks.get_mut(&from) {
                    Some(b) => b.admit(now, data.len()),
                    None => Some(now),
                };
                let Some(leaves) = leaves else {
                    self.dropped_by_links += 1;
                    continue;
                };
                let from = self.nat.get(&from).copied().unwrap_or(from);
                self.network.push_back((leaves + self.latency, from, to, data));
            }
        }
    }

    /// The next moment anything happens.
    fn next_time(&self) -> Option<Instant> {
        let network = self.network.iter().map(|(at, ..)| *at).min();
        let shard =
            std::iter::once(&self.shard).chain(self.more.iter().map(|(s, _)| s)).filter_map(Shard::next_timeout).min();
        let members =
            self.members.iter().filter(|m| m.closed.is_none()).filter_map(|m| m.participant.next_timeout()).min();
        [network, shard, members].into_iter().flatten().min()
    }

    /// Advances the clock to `until`, processing everything due on the way.
    pub fn run_until_time(&mut self, until: Instant) {
        loop {
            self.pump_bus();
            self.route_datagrams();
            let next = self.next_time().map(|t| t.max(self.now));
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = until;
                return;
            };
            self.now = next;
            self.step();
        }
    }

    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.run_until_time(until);
    }

    /// Runs until `done` holds (checked every 10 ms of virtual time) or `limit` passes.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            let step = (self.now + Duration::from_millis(10)).min(end);
            self.run_until_time(step);
        }
        done(self)
    }

    fn step(&mut self) {
        let now = self.now;
        // Deliver what arrived.
        let mut due = Vec::new();
        let mut rest = VecDeque::with_capacity(self.network.len());
        for d in self.network.drain(..) {
            if d.0 <= now { due.push(d) } else { rest.push_back(d) }
        }
        self.network = rest;
        let mut to_shard = vec![false; self.shard_count()];
        for (_, from, to, data) in due {
            // A NAT maps its public address back to the participant behind it.
            let to = self.nat.iter().find(|(_, public)| **public == to).map_or(to, |(local, _)| *local);
            if let Some(i) = (0..self.shard_count()).find(|i| self.address_of(*i) == to) {
                self.probe(true);
                self.shard_at(i).handle_datagram(now, Protocol::Udp, from, &data);
                self.probe(false);
                to_shard[i] = true;
            } else if let Some(m) =
                self.members.iter_mut().find(|m| m.closed.is_none() && m.participant.locals().contains(&to))
            {
                m.participant.handle_datagram(now, to, from, &data);
            }
        }
        self.probe(true);
        for (i, touched) in to_shard.into_iter().enumerate() {
            let shard = self.shard_at(i);
            if touched {
                shard.settle(now);
            }
            if shard.next_timeout().is_some_and(|t| t <= now) {
                shard.handle_timeout(now);
            }
        }
        self.probe(false);
        for m in &mut self.members {
            if m.closed.is_none() && m.participant.next_timeout().is_some_and(|t| t <= now) {
                m.participant.handle_timeout(now);
            }
        }
        self.pump_bus();
    }
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}
