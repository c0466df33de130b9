//! ICE-TCP for one shard (RFC 6544 passive candidates): a listener on the shard's UDP port
//! number, its connections, and their RFC 4571 framing (each datagram behind a 2-byte length).
//!
//! A connection is identified by its peer's address, and to the core it is just another remote
//! address of a transport: its frames go to `Shard::handle_datagram` with `Protocol::Tcp`, and
//! what the core sends to that address is framed onto the connection.
//!
//! Readiness comes from one edge-triggered epoll instance, whose descriptor the shard's io_uring
//! wait polls beside the doorbell and the UDP socket: the ring keeps a fixed set of descriptors
//! however many connections there are, and the kernel tracks their readiness without a re-armed
//! poll (a submission) per connection and wake-up.
//!
//! Nothing here blocks, and no peer costs another anything: reads take a bounded slice of each
//! connection per turn; the send queue is bounded in bytes (media is dropped past the soft bound;
//! a connection whose queue passes the hard bound is closed); connections over the shard's limit
//! are closed as they are accepted; a connection whose peer no transport routes (it never
//! completed an authenticated binding request, or its transport is gone) is closed after the
//! idle timeout.

use ringsfu_core::framing::{BadLength, Deframer};
use ringsfu_core::sfu::counters::TcpCounters;
use ringsfu_core::sfu::demux;
use smallvec::SmallVec;
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use str0m::net::DatagramSend;

/// Queued bytes past which RTP to a connection is dropped (its peer does not read fast enough).
pub const SOFT_QUEUE: usize = 256 << 10;
/// Queued bytes past which a connection is closed: signalling (STUN, DTLS, RTCP) is never dropped,
/// so a peer that stopped reading would otherwise hold memory without bound.
pub const HARD_QUEUE: usize = 1 << 20;
/// Bytes read from one connection per turn of the shard loop (the rest waits for the next turn).
const READ_BUDGET: usize = 64 << 10;
/// Connections accepted per turn.
const ACCEPTS_PER_TURN: usize = 64;
/// Readiness events taken from epoll per call.
const EVENTS: usize = 256;
/// Frames per `writev` (two slices each: length and datagram).
const FRAMES_PER_WRITE: usize = 64;
const LISTEN_BACKLOG: i32 = 1024;
/// The listener's epoll token; connections' are `generation << 32 | slot`.
const LISTENER: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
pub struct TcpSettings {
    /// Connections one shard keeps open; more are accepted and closed at once.
    pub max_connections: usize,
    /// How long a connection may stay without a transport routing its peer.
    pub idle_timeout: Duration,
}

/// What became of a datagram handed to [`IceTcp::queue`].
pub enum Queued {
    /// Framed onto the connection's send queue.
    Tcp,
    /// RTP for a connection whose queue is past [`SOFT_QUEUE`]: dropped (the buffer comes back).
    Dropped(DatagramSend),
    /// No connection has this peer: the datagram is for UDP.
    NotTcp(DatagramSend),
}

/// Frames waiting to be written, bounded by the caller in bytes.
#[derive(Default)]
struct SendQueue {
    frames: VecDeque<([u8; 2], DatagramSend)>,
    /// Bytes of the front frame (prefix included) already written.
    written: usize,
    /// Bytes queued and not yet written, prefixes included.
    bytes: usize,
}

impl SendQueue {
    fn push(&mut self, datagram: DatagramSend) {
        self.bytes += 2 + datagram.len();
        self.frames.push_back(((datagram.len() as u16).to_be_bytes(), datagram));
    }

    /// The unwritten bytes of the first frames, for one `writev`.
    fn slices(&self) -> SmallVec<[IoSlice<'_>; 2 * FRAMES_PER_WRITE]> {
        let mut slices = SmallVec::new();
        let mut skip = self.written;
        for (prefix, datagram) in self.frames.iter().take(FRAMES_PER_WRITE) {
            for part in [&prefix[..], &datagram[..]] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                slices.push(IoSlice::new(&part[skip..]));
                skip = 0;
            }
        }
        slices
    }

    /// Takes `n` written bytes off the front; each frame written whole goes to `done`.
    fn advance(&mut self, n: usize, mut done: impl FnMut(DatagramSend)) {
        self.bytes -= n;
        self.written += n;
        while let Some((_, datagram)) = self.frames.front() {
            let size = 2 + datagram.len();
            if self.written < size {
                break;
            }
            self.written -= size;
            let (_, datagram) = self.frames.pop_front().expect("checked above");
            done(datagram);
        }
    }
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    deframer: Deframer,
    queue: SendQueue,
    /// Accepted, or last seen routed by a transport: the idle timeout counts from here.
    since: Instant,
    /// The last read did not reach `WouldBlock`: there may be more to read.
    readable: bool,
    /// The last write did not reach `WouldBlock` (edge-triggered: an EPOLLOUT event sets it again).
    writable: bool,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    connection: Option<Connection>,
}

/// Why a connection was closed, for its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The peer closed it, or it failed.
    Gone,
    Idle,
    BadLength,
    Slow,
}

/// The listener and the connections of one shard.
pub struct IceTcp {
    listener: TcpListener,
    epoll: Epoll,
    settings: TcpSettings,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_peer: HashMap<SocketAddr, u32>,
    /// Slots that may have more to read.
    readable: Vec<u32>,
    /// Slots with frames queued since the last write.
    dirty: Vec<u32>,
    listener_ready: bool,
    /// Peers of connections closed since the last `poll_closed`.
    closed: Vec<SocketAddr>,
    next_sweep: Option<Instant>,
    scratch: Box<[u8]>,
    events: Vec<libc::epoll_event>,
    counters: TcpCounters,
}

impl IceTcp {
    /// Listens on `addr` (nonblocking, edge-triggered).
    pub fn bind(addr: SocketAddr, settings: TcpSettings) -> io::Result<IceTcp> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // A restarted server binds again while the last one's connections are in TIME_WAIT.
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener: TcpListener = socket.into();
        let epoll = Epoll::new()?;
        epoll.add(listener.as_raw_fd(), LISTENER)?;
        Ok(IceTcp {
            listener,
            epoll,
            settings,
            slots: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::new(),
            readable: Vec::new(),
            dirty: Vec::new(),
            listener_ready: true,
            closed: Vec::new(),
            next_sweep: None,
            scratch: vec![0; READ_BUDGET].into_boxed_slice(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            counters: TcpCounters::default(),
        })
    }

    /// The descriptor the shard's ring polls: readable when a connection or the listener is.
    pub fn fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }

    pub fn counters(&self) -> TcpCounters {
        TcpCounters { open: self.by_peer.len() as u64, ..self.counters }
    }

    /// Whether any connection is open (no lookup is needed for a transmit otherwise).
    pub fn has_connections(&self) -> bool {
        !self.by_peer.is_empty()
    }

    /// Whether there is reading or accepting left that the last turn did not finish.
    pub fn has_work(&self) -> bool {
        self.listener_ready || !self.readable.is_empty()
    }

    /// The next time `sweep` has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Takes the readiness epoll reports (without waiting): call when the ring says its
    /// descriptor is readable. Connections that became writable are written to at once; the
    /// caller recycles what was sent.
    pub fn poll_readiness(&mut self, mut recycle: impl FnMut(DatagramSend)) {
        let n = self.epoll.wait(&mut self.events);
        for i in 0..n {
            let libc::epoll_event { events, u64: token } = self.events[i];
            if token == LISTENER {
                self.listener_ready = true;
                continue;
            }
            let Some(index) = self.live_slot(token) else { continue };
            let c = self.slots[index as usize].connection.as_mut().expect("a live slot holds a connection");
            // Hang-ups and errors are seen by the next read.
            if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 && !c.readable
            {
                c.readable = true;
                self.readable.push(index);
            }
            if events & libc::EPOLLOUT as u32 != 0 {
                c.writable = true;
                if !c.queue.frames.is_empty() {
                    self.write(index, &mut recycle);
                }
            }
        }
    }

    /// Accepts waiting connections (up to a bound per turn); over the limit they are closed at once.
    pub fn accept(&mut self, now: Instant) {
        if !self.listener_ready {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                // ECONNABORTED and the like concern one connection; EMFILE would repeat: either way
                // try again next turn rather than spin.
                Err(e) => {
                    tracing::debug!(error = %e, "ICE-TCP accept failed");
                    self.listener_ready = false;
                    return;
                }
            };
            self.counters.accepted += 1;
            if self.by_peer.len() >= self.settings.max_connections {
                self.counters.refused += 1;
                continue; // dropped: closed
            }
            if let Err(e) = self.adopt(stream, normalize(peer), now) {
                tracing::debug!(error = %e, %peer, "ICE-TCP connection not set up");
            }
        }
    }

    fn adopt(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        // Frames are datagrams: each goes out as it is written, not held for coalescing.
        stream.set_nodelay(true)?;
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        let token = (slot.generation as u64) << 32 | index as u64;
        if let Err(e) = self.epoll.add(stream.as_raw_fd(), token) {
            self.free.push(index);
            return Err(e);
        }
        slot.connection = Some(Connection {
            stream,
            peer,
            deframer: Deframer::default(),
            queue: SendQueue::default(),
            since: now,
            // Whatever arrived before registration is reported by it (epoll_ctl looks once).
            readable: false,
            writable: true,
        });
        self.by_peer.insert(peer, index);
        self.next_sweep.get_or_insert(now + self.sweep_interval());
        Ok(())
    }

    /// Reads what the readable connections hold, up to [`READ_BUDGET`] each; `on_datagram` gets
    /// each frame with its connection's peer. Returns how many frames it delivered.
    pub fn receive(&mut self, mut on_datagram: impl FnMut(SocketAddr, &[u8])) -> usize {
        let mut delivered = 0;
        let readable = std::mem::take(&mut self.readable);
        let mut still = Vec::new();
        for &index in &readable {
            let Some(c) = self.slots[index as usize].connection.as_mut() else { continue };
            let mut budget = READ_BUDGET;
            let mut outcome = None;
            while budget > 0 {
                let n = match c.stream.read(&mut self.scratch[..budget]) {
                    Ok(0) => {
                        outcome = Some(Close::Gone);
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        c.readable = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        outcome = Some(Close::Gone);
                        break;
                    }
                };
                budget -= n;
                let peer = c.peer;
                let counters = &mut self.counters;
                let pushed = c.deframer.push(&self.scratch[..n], |frame| {
                    counters.datagrams_in += 1;
                    counters.bytes_in += frame.len() as u64;
                    delivered += 1;
                    on_datagram(peer, frame);
                });
                if let Err(BadLength(len)) = pushed {
                    tracing::debug!(%peer, len, "ICE-TCP frame length refused; closing the connection");
                    outcome = Some(Close::BadLength);
                    break;
                }
            }
            match outcome {
                Some(why) => self.close(index, why),
                None if c.readable => still.push(index),
                None => {}
            }
        }
        self.readable = still;
        delivered
    }

    /// Frames a datagram onto the connection whose peer is `dest`, if there is one.
    pub fn queue(&mut self, dest: SocketAddr, datagram: DatagramSend) -> Queued {
        let Some(&index) = self.by_peer.get(&dest) else { return Queued::NotTcp(datagram) };
        let c = self.slots[index as usize].connection.as_mut().expect("by_peer names live slots");
        if c.queue.bytes >= SOFT_QUEUE && demux::is_rtp(&datagram) {
            return Queued::Dropped(datagram);
        }
        if c.queue.bytes + 2 + datagram.len() > HARD_QUEUE {
            tracing::debug!(peer = %dest, "ICE-TCP peer does not read; closing the connection");
            self.close(index, Close::Slow);
            return Queued::Dropped(datagram);
        }
        if c.queue.frames.is_empty() {
            self.dirty.push(index);
        }
        c.queue.push(datagram);
        self.counters.datagrams_out += 1;
        Queued::Tcp
    }

    /// Writes what was queued since the last call (one `writev` per connection, unless the
    /// socket takes more); `recycle` gets each datagram written whole.
    pub fn write_queued(&mut self, mut recycle: impl FnMut(DatagramSend)) {
        let dirty = std::mem::take(&mut self.dirty);
        for &index in &dirty {
            self.write(index, &mut recycle);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn write(&mut self, index: u32, recycle: &mut impl FnMut(DatagramSend)) {
        let Some(c) = self.slots[index as usize].connection.as_mut() else { return };
        while c.writable && !c.queue.frames.is_empty() {
            let result = c.stream.write_vectored(&c.queue.slices());
            match result {
                Ok(0) => {
                    self.close(index, Close::Gone);
                    return;
                }
                Ok(n) => {
                    let mut payload = 0;
                    c.queue.advance(n, |d| {
                        payload += d.len() as u64;
                        recycle(d);
                    });
                    self.counters.bytes_out += payload;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(index, Close::Gone);
                    return;
                }
            }
        }
    }

    /// Closes the connections no transport has routed for the idle timeout (never bound, or their
    /// transport is gone). `routes` says whether the core routes a peer address.
    pub fn sweep(&mut self, now: Instant, routes: impl Fn(&SocketAddr) -> bool) {
        if self.next_sweep.is_none_or(|at| now < at) {
            return;
        }
        let timeout = self.settings.idle_timeout;
        let mut idle: SmallVec<[u32; 16]> = SmallVec::new();
        for &index in self.by_peer.values() {
            let c = self.slots[index as usize].connection.as_mut().expect("by_peer names live slots");
            if routes(&c.peer) {
                c.since = now;
            } else if now.saturating_duration_since(c.since) >= timeout {
                idle.push(index);
            }
        }
        for index in idle {
            self.close(index, Close::Idle);
        }
        self.next_sweep = (!self.by_peer.is_empty()).then(|| now + self.sweep_interval());
    }

    /// Idle connections are found at most this late.
    fn sweep_interval(&self) -> Duration {
        (self.settings.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// The peer of a connection closed since the last call (the core forgets its address).
    pub fn poll_closed(&mut self) -> Option<SocketAddr> {
        self.closed.pop()
    }

    fn live_slot(&self, token: u64) -> Option<u32> {
        let index = token as u32;
        let slot = self.slots.get(index as usize)?;
        (slot.generation == (token >> 32) as u32 && slot.connection.is_some()).then_some(index)
    }

    fn close(&mut self, index: u32, why: Close) {
        let slot = &mut self.slots[index as usize];
        let Some(c) = slot.connection.take() else { return };
        // Events already taken from epoll for this slot are recognised as stale by the generation.
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.by_peer.remove(&c.peer);
        self.readable.retain(|i| *i != index);
        self.closed.push(c.peer);
        match why {
            Close::Gone => {}
            Close::Idle => self.counters.closed_idle += 1,
            Close::BadLength => self.counters.closed_oversize += 1,
            Close::Slow => self.counters.closed_slow += 1,
        }
        // Dropping the stream closes it, which also takes it out of the epoll set.
        drop(c);
    }
}

/// A v4-mapped peer on a dual-stack listener is the IPv4 address it is, as on the UDP socket.
fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// An epoll instance; everything registered is edge-triggered.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: no memory preconditions; a non-negative result is a new descriptor.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let events = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
        let mut event = libc::epoll_event { events: events as u32, u64: token };
        // SAFETY: event is a live epoll_event; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Ready events, without waiting; 0 on any error (EINTR: the ring wakes the shard again).
    fn wait(&self, events: &mut [libc::epoll_event]) -> usize {
        // SAFETY: the kernel writes at most events.len() entries into the live buffer.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, 0) };
        n.max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for f in frames {
            ringsfu_core::framing::push_frame(&mut bytes, f);
        }
        bytes
    }

    #[test]
    fn a_partial_write_resumes_inside_a_frame_and_finished_frames_are_handed_back() {
        let mut q = SendQueue::default();
        q.push(vec![1; 10].into());
        q.push(vec![2; 5].into());
        assert_eq!(q.bytes, 19);
        let mut done = Vec::new();
        q.advance(1, |d| done.push(d.len())); // half of the first prefix
        let slices = q.slices();
        assert_eq!(slices.iter().map(|s| s.len()).collect::<Vec<_>>(), [1, 10, 2, 5]);
        drop(slices);
        q.advance(12, |d| done.push(d.len())); // the rest of the first frame, one byte of the second
        assert_eq!(done, [10]);
        assert_eq!(q.slices().iter().map(|s| s.len()).collect::<Vec<_>>(), [1, 5]);
        q.advance(6, |d| done.push(d.len()));
        assert_eq!((done, q.bytes, q.frames.len(), q.written), (vec![10, 5], 0, 0, 0));
    }

    fn settings(max_connections: usize) -> TcpSettings {
        TcpSettings { max_connections, idle_timeout: Duration::from_millis(200) }
    }

    fn listening(max_connections: usize) -> (IceTcp, SocketAddr) {
        let tcp = IceTcp::bind("127.0.0.1:0".parse().unwrap(), settings(max_connections)).unwrap();
        let addr = tcp.listener.local_addr().unwrap();
        (tcp, addr)
    }

    /// Turns of a shard loop (readiness, accept, read) until `done` or 5 s.
    fn turn_until(tcp: &mut IceTcp, frames: &mut Vec<(SocketAddr, Vec<u8>)>, done: impl Fn(&IceTcp, usize) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(tcp, frames.len()) {
            assert!(Instant::now() < deadline, "not done within 5 s");
            tcp.poll_readiness(drop);
            tcp.accept(Instant::now());
            tcp.receive(|peer, f| frames.push((peer, f.to_vec())));
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn frames_from_a_real_connection_arrive_with_its_peer_and_an_oversized_prefix_closes_only_it() {
        let (mut tcp, addr) = listening(16);
        let mut good = TcpStream::connect(addr).unwrap();
        let mut bad = TcpStream::connect(addr).unwrap();
        let mut frames = Vec::new();
        turn_until(&mut tcp, &mut frames, |t, _| t.by_peer.len() == 2);
        good.write_all(&framed(&[b"\x00one", b"\x80two"])[..5]).unwrap();
        bad.write_all(&[0x20, 0x00, 0x80]).unwrap(); // 8192: not a WebRTC datagram
        good.write_all(&framed(&[b"\x00one", b"\x80two"])[5..]).unwrap();
        turn_until(&mut tcp, &mut frames, |t, n| n == 2 && t.by_peer.len() == 1);
        let me = good.local_addr().unwrap();
        assert_eq!(frames, [(me, b"\x00one".to_vec()), (me, b"\x80two".to_vec())]);
        assert_eq!(tcp.poll_closed(), Some(bad.local_addr().unwrap()));
        let c = tcp.counters();
        assert_eq!((c.open, c.accepted, c.closed_oversize, c.datagrams_in, c.bytes_in), (1, 2, 1, 2, 8));
        let mut buf = [0u8; 8];
        assert_eq!(bad.read(&mut buf).unwrap(), 0, "the bad connection is closed");

        // And what is queued for the good peer arrives framed; other destinations are not TCP's.
        assert!(matches!(tcp.queue(me, b"\x80reply".to_vec().into()), Queued::Tcp));
        assert!(matches!(tcp.queue("127.0.0.1:9".parse().unwrap(), vec![0x80].into()), Queued::NotTcp(_)));
        let mut written = 0;
        tcp.write_queued(|_| written += 1);
        assert_eq!(written, 1);
        let mut got = [0u8; 8];
        good.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\x00\x06\x80reply");
        assert_eq!((tcp.counters().datagrams_out, tcp.counters().bytes_out), (1, 6));
    }

    #[test]
    fn connections_over_the_limit_are_closed_as_they_arrive() {
        let (mut tcp, addr) = listening(2);
        let mut clients: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut frames = Vec::new();
        turn_until(&mut tcp, &mut frames, |t, _| t.counters().accepted == 5);
        let c = tcp.counters();
        assert_eq!((c.open, c.refused), (2, 3));
        let mut closed = 0;
        for client in &mut clients {
            client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut buf = [0u8; 1];
            match client.read(&mut buf) {
                Ok(0) => closed += 1,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => closed += 1,
                _ => {}
            }
        }
        assert_eq!(closed, 3, "the first two stay open");
    }

    #[test]
    fn a_connection_no_transport_routes_is_closed_after_the_idle_timeout() {
        let (mut tcp, addr) = listening(16);
        let _bound = TcpStream::connect(addr).unwrap();
        let _silent = TcpStream::connect(addr).unwrap();
        let mut frames = Vec::new();
        turn_until(&mut tcp, &mut frames, |t, _| t.by_peer.len() == 2);
        let bound = _bound.local_addr().unwrap();
        let start = Instant::now();
        // Before the timeout nothing goes, routed or not.
        tcp.next_sweep = Some(start);
        tcp.sweep(start + Duration::from_millis(100), |peer| *peer == bound);
        assert_eq!(tcp.counters().open, 2);
        tcp.sweep(start + Duration::from_millis(400), |peer| *peer == bound);
        assert_eq!((tcp.counters().open, tcp.counters().closed_idle), (1, 1));
        assert_eq!(tcp.poll_closed(), Some(_silent.local_addr().unwrap()));
        // The routed one counts its idle time from when it was last routed.
        tcp.sweep(start + Duration::from_millis(500), |_| false);
        assert_eq!(tcp.counters().open, 1);
        tcp.sweep(start + Duration::from_millis(600), |_| false);
        assert_eq!(tcp.counters().open, 0);
        assert_eq!(tcp.next_deadline(), None, "no sweeps without connections");
    }

    #[test]
    fn a_peer_that_stops_reading_loses_media_past_the_soft_bound_and_is_closed_past_the_hard_one() {
        let (mut tcp, addr) = listening(16);
        // A small receive window that nobody empties.
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        client.connect(&addr.into()).unwrap();
        let me = client.local_addr().unwrap().as_socket().unwrap();
        let mut frames = Vec::new();
        turn_until(&mut tcp, &mut frames, |t, _| t.by_peer.len() == 1);
        let rtp = || DatagramSend::from(vec![0x80; 1200]);
        let mut queued = 0;
        let dropped = loop {
            match tcp.queue(me, rtp()) {
                Queued::Tcp => queued += 1,
                Queued::Dropped(_) => break true,
                Queued::NotTcp(_) => break false,
            }
            tcp.write_queued(drop);
            assert!(queued < 100_000, "the queue never filled");
        };
        assert!(dropped);
        let c = &tcp.slots[tcp.by_peer[&me] as usize].connection.as_ref().unwrap().queue;
        assert!(c.bytes >= SOFT_QUEUE && c.bytes < SOFT_QUEUE + 1202, "{} queued", c.bytes);
        // Signalling is still queued, until the hard bound closes the connection.
        let stun = || DatagramSend::from(vec![0x00; 1200]);
        let mut signalling = 0;
        while let Queued::Tcp = tcp.queue(me, stun()) {
            signalling += 1;
            assert!(signalling < 10_000, "never closed");
        }
        assert!(signalling >= (HARD_QUEUE - SOFT_QUEUE) / 1202 - 1, "{signalling} signalling frames queued");
        let c = tcp.counters();
        assert_eq!((c.open, c.closed_slow), (0, 1));
        assert_eq!(tcp.poll_closed(), Some(me));
        assert!(matches!(tcp.queue(me, rtp()), Queued::NotTcp(_)), "forgotten");
    }
}
