//! An in-memory world: one shard core and synthetic participants on a virtual network with a
//! virtual clock. The bus between them is the real envelope format; datagrams are the real
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

    pub fn create_channel(&mut self, webrtc: bool) -> ChannelId {
        let channel = ChannelId::random();
        self.shard.handle_command(self.now, Command::CreateChannel { channel, webrtc });
        self.pump_bus();
        channel
    }

    /// Joins a new participant; returns its index in `members`.
    pub fn join(&mut self, channel: ChannelId, session_id: Value) -> usize {
        let n = self.next_session;
        self.next_session += 1;
        let session = SessionRef(n);
        let cts: SocketAddr = format!("10.1.{}.{}:5000", n / 250, n % 250 + 1).parse().expect("valid");
        let stc: SocketAddr = format!("10.1.{}.{}:5001", n / 250, n % 250 + 1).parse().expect("valid");
        let id = ringsfu_core::protocol::SessionId::from_value(&session_id).expect("a valid session id");
        self.members.push(Member {
            session,
            participant: Participant::new(session_id, cts, stc),
            closed: None,
            open: HashMap::new(),
            offline: false,
        });
        let reply = self.shard.handle_command(self.now, Command::Join { channel, session, session_id: id });
        assert!(matches!(reply, Reply::Joined), "join refused: {reply:?}");
        self.pump_bus();
        self.members.len() - 1
    }

    pub fn leave(&mut self, index: usize) {
        let session = self.members[index].session;
        self.members[index].closed = Some(1000);
        self.shard.handle_command(self.now, Command::Leave { session });
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
            while let Some(event) = self.shard.poll_event() {
                moved = true;
                let ShardEvent::ToSession(session, event) = event else { continue };
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
        let session = self.members[i].session;
        if let Some(id) = env.get("responseTo").and_then(Value::as_str) {
            if let Some(token) = self.members[i].open.remove(id) {
                let result = Ok(env.get("message").cloned().unwrap_or(Value::Null));
                self.shard.handle_command(self.now, Command::ClientReply { session, token, result });
            }
            return;
        }
        let name = env["message"]["name"].as_str().unwrap_or_default();
        let payload = env["message"].get("payload").cloned().unwrap_or(Value::Null);
        let request = env.get("needResponse").cloned();
        match ClientMessage::parse(name, payload) {
            Ok(message) => {
                self.shard.handle_command(self.now, Command::FromClient { session, request, message });
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
        let session = self.members[index].session;
        let open: Vec<u64> = self.members[index].open.drain().map(|(_, t)| t).collect();
        for token in open {
            self.shard.handle_command(
                self.now,
                Command::ClientReply { session, token, result: Err(RequestFailed::TimedOut) },
            );
        }
        self.pump_bus();
    }

    fn probe(&self, inside: bool) {
        if let Some(probe) = self.shard_probe {
            probe(inside);
        }
    }

    fn route_datagrams(&mut self) {
        loop {
            self.probe(true);
            let next = self.shard.poll_transmit();
            self.probe(false);
            let Some((to, sent)) = next else { break };
            // The wire gets a copy; the buffer goes back to the shard, as the real driver's
            // does after `sendmmsg`.
            let data = sent.to_vec();
            if let Some(tap) = self.shard_tap.as_mut() {
                tap(to, &data);
            }
            self.probe(true);
            self.shard.recycle(sent.into());
            self.probe(false);
            let leaves = match self.links.get_mut(&to) {
                Some(b) => b.admit(self.now, data.len()),
                None => Some(self.now),
            };
            let Some(leaves) = leaves else {
                self.dropped_by_links += 1;
                continue;
            };
            self.network.push_back((leaves + self.latency, self.shard_addr, to, data));
        }
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
        let shard = self.shard.next_timeout();
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
        let mut to_shard = false;
        for (_, from, to, data) in due {
            // A NAT maps its public address back to the participant behind it.
            let to = self.nat.iter().find(|(_, public)| **public == to).map_or(to, |(local, _)| *local);
            if to == self.shard_addr {
                self.probe(true);
                self.shard.handle_datagram(now, Protocol::Udp, from, &data);
                self.probe(false);
                to_shard = true;
            } else if let Some(m) =
                self.members.iter_mut().find(|m| m.closed.is_none() && m.participant.locals().contains(&to))
            {
                m.participant.handle_datagram(now, to, from, &data);
            }
        }
        self.probe(true);
        if to_shard {
            self.shard.settle(now);
        }
        if self.shard.next_timeout().is_some_and(|t| t <= now) {
            self.shard.handle_timeout(now);
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
