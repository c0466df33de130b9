//! The shard driver: one thread pinned to one core, one UDP socket (and an ICE-TCP listener on the
//! same port number), one sans-IO [`Shard`] core. Everything the core wants done is done here and
//! nowhere else: datagrams in (batched `recvmmsg`, and RFC 4571 frames from TCP connections),
//! datagrams out (batched `sendmmsg`, or framed onto the TCP connection whose peer they are
//! for), its one timer, the command queue from the control plane, and session events back to
//! it. It sleeps in io_uring ([`Ring`]).

use super::cpu;
use super::outbox::{Outbox, Refused};
use super::relay;
use super::ring::{Doorbell, Ring};
use super::shard_load::{ShardLoad, SharedLoad};
pub use super::tcp::TcpSettings;
use super::tcp::{IceTcp, Queued};
use super::udp::{RecvBatch, SendBatch};
use ringsfu_core::sfu::counters::{DelayHistogram, DropReason};
use ringsfu_core::sfu::{Command, Reply, SessionEvent, SessionRef, SfuSettings, Shard, ShardEvent};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::net::{DatagramSend, Protocol};
use tokio::sync::{mpsc, oneshot};

/// Datagrams per `recvmmsg` / `sendmmsg`.
const BATCH: usize = 32;
/// Queued datagrams past which a receive batch is sent out before the rest of it is handled: a
/// packet fanned out to hundreds of subscribers would otherwise wait for the whole batch's
/// fan-out (tens of milliseconds at a fan-out of 300), and the send buffers would outgrow the
/// shard's pool of them.
const FLUSH_AT: usize = 8 * BATCH;
/// Per turn of the loop at most this many receive batches and control messages, so that a flood
/// of either leaves room for the other and for due timers.
const BATCHES_PER_TURN: usize = 8;
const MESSAGES_PER_TURN: usize = 64;
/// How long the shard pauses after a failed `recvmmsg`.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Socket buffers: a shard absorbs bursts of several hundred packets without loss.
const SOCKET_BUFFER: usize = 8 << 20;
/// How often counters are published for `/v1/load` and `/metrics`.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// The grid future deadlines are rounded up to: a timer fires at most this late (packets due now
/// never wait). Not coarser: str0m paces its bandwidth probes on its timers, and a 5 ms grid
/// bunched them enough to slow the estimate's climb (simulcast_e2e then missed the top layer).
const TIMER_GRID: Duration = Duration::from_millis(1);
/// Below this RLIMIT_MEMLOCK an unexplained io_uring failure is blamed on it (kernels before 5.12
/// count the rings against it).
const RING_MEMLOCK: u64 = 32 << 10;
/// Relay messages from other shards handled per turn at most (then datagrams and timers).
const RELAY_PER_TURN: usize = 1024;

/// A message to a shard thread.
pub enum ShardMessage {
    Command {
        command: Command,
        reply: Option<oneshot::Sender<Reply>>,
    },
    /// Routes a session's events to its WebSocket; sent before `Command::Join`.
    Register {
        session: SessionRef,
        outbox: Outbox,
    },
    /// This shard's links to the others (sent once, after every shard started).
    Links(Box<relay::Links>),
    Stop,
}

/// Events that are not for one session.
#[derive(Debug)]
pub enum ControlEvent {
    /// The channel's part on `shard` closed.
    ChannelClosed { channel: ringsfu_core::sfu::ChannelId, shard: usize },
}

/// The control plane's handle on one shard.
#[derive(Clone, Debug)]
pub struct ShardHandle {
    pub index: usize,
    mailbox: Mailbox,
    pub load: SharedLoad,
    /// The UDP address the shard is bound to.
    pub bound: SocketAddr,
    /// The address it announces in ICE candidates.
    pub announced: SocketAddr,
}

/// The queue into a shard and the doorbell that wakes it.
#[derive(Clone, Debug)]
struct Mailbox {
    sender: flume::Sender<ShardMessage>,
    doorbell: Arc<Doorbell>,
}

impl ShardHandle {
    /// What wakes the shard (other shards ring it after relaying to it).
    pub fn doorbell(&self) -> Arc<Doorbell> {
        self.mailbox.doorbell.clone()
    }

    /// Sends a command and waits for its reply; `None` if the shard is gone.
    pub async fn request(&self, command: Command) -> Option<Reply> {
        self.submit(command).await?.await.ok()
    }

    /// Queues a command; its reply comes on the receiver. The shard handles commands in the
    /// order they were queued, so whatever is queued after this returns sees its effect.
    pub async fn submit(&self, command: Command) -> Option<oneshot::Receiver<Reply>> {
        let (tx, rx) = oneshot::channel();
        self.post(ShardMessage::Command { command, reply: Some(tx) }).then_some(rx)
    }

    /// Sends a command without waiting.
    pub fn tell(&self, command: Command) {
        self.post(ShardMessage::Command { command, reply: None });
    }

    /// Queues a message (the queue is unbounded: the control plane bounds what it asks) and
    /// wakes the shard; false if the shard is gone.
    pub fn post(&self, message: ShardMessage) -> bool {
        if self.mailbox.sender.send(message).is_err() {
            return false;
        }
        self.mailbox.doorbell.ring();
        true
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "RTC port {port} on {interface} is not available for shard {shard}: {source} (choose another RTC_MIN_PORT or stop what holds it)"
    )]
    Bind { shard: usize, interface: std::net::IpAddr, port: u16, source: std::io::Error },
    #[error(
        "RTC port {port} on {interface} is not available over TCP for shard {shard}: {source} (ICE-TCP listens on each shard's UDP port number; free it, choose another RTC_MIN_PORT, or set RTC_TCP=false)"
    )]
    BindTcp { shard: usize, interface: std::net::IpAddr, port: u16, source: std::io::Error },
    #[error("{0}")]
    IoUring(String),
    #[error("shard {0} failed to start: {1}")]
    Thread(usize, String),
}

pub struct ShardSpec {
    pub index: usize,
    pub bind: SocketAddr,
    pub public_ip: std::net::IpAddr,
    pub cpu: Option<usize>,
    /// ICE-TCP on the UDP socket's port number (`RTC_TCP`), or none.
    pub tcp: Option<TcpSettings>,
}

/// Tries for a port free for both UDP and TCP when the OS picks it (`RTC_MIN_PORT=0`).
const FREE_PORT_ATTEMPTS: usize = 16;

/// Binds the socket, starts the thread, and returns once the shard runs.
pub fn start(
    spec: ShardSpec,
    settings: Arc<SfuSettings>,
    control: mpsc::UnboundedSender<ControlEvent>,
) -> Result<(ShardHandle, std::thread::JoinHandle<()>), StartError> {
    let (socket, tcp) = bind_rtc(&spec)?;
    let bound = socket.local_addr().ok().and_then(|a| a.as_socket()).expect("a bound UDP socket has an address");
    let announced = SocketAddr::new(spec.public_ip, bound.port());
    let (sender, receiver) = flume::unbounded();
    let doorbell = Doorbell::new().map_err(|e| StartError::Thread(spec.index, format!("eventfd: {e}")))?;
    let mailbox = Mailbox { sender, doorbell: Arc::new(doorbell) };
    let load = ShardLoad::shared();
    let index = spec.index;
    // Made here, not on the thread, so that a machine without io_uring fails start-up with a reason.
    let mut watched = vec![mailbox.doorbell.as_raw_fd(), socket.as_raw_fd()];
    watched.extend(tcp.as_ref().map(IceTcp::fd));
    let ring = Ring::new(&watched).map_err(|e| StartError::IoUring(io_uring_error(&e.to_string())))?;
    let thread_load = load.clone();
    let thread_doorbell = mailbox.doorbell.clone();
    let thread = std::thread::Builder::new()
        .name(format!("ringsfu-shard-{index}"))
        .spawn(move || {
            if let Some(core) = spec.cpu
                && let Err(e) = cpu::pin_current_thread(core)
            {
                tracing::warn!(shard = index, cpu = core, error = %e, "could not pin the shard thread");
            }
            let shard = Shard::new(index, settings, announced, Instant::now(), rand::random());
            if let Err(e) = run(shard, socket, tcp, ring, receiver, thread_doorbell, control, thread_load) {
                tracing::error!(shard = index, error = %e, "the shard stopped: waiting in io_uring failed");
            }
        })
        .map_err(|e| StartError::Thread(index, e.to_string()))?;
    Ok((ShardHandle { index, mailbox, load, bound, announced }, thread))
}

/// The shard's UDP socket, and its ICE-TCP listener on the same port number.
fn bind_rtc(spec: &ShardSpec) -> Result<(socket2::Socket, Option<IceTcp>), StartError> {
    let udp_error =
        |source| StartError::Bind { shard: spec.index, interface: spec.bind.ip(), port: spec.bind.port(), source };
    let mut attempts = 0;
    loop {
        let socket = bind_udp(spec.bind).map_err(udp_error)?;
        let Some(settings) = spec.tcp else { return Ok((socket, None)) };
        let port = socket.local_addr().ok().and_then(|a| a.as_socket()).map_or(0, |a| a.port());
        match IceTcp::bind(SocketAddr::new(spec.bind.ip(), port), settings) {
            Ok(tcp) => return Ok((socket, Some(tcp))),
            // The OS chose a UDP port whose TCP twin is taken: let it choose again.
            Err(e) if spec.bind.port() == 0 && attempts + 1 < FREE_PORT_ATTEMPTS => {
                tracing::debug!(port, error = %e, "TCP port taken; choosing another RTC port");
                attempts += 1;
            }
            Err(source) => {
                return Err(StartError::BindTcp { shard: spec.index, interface: spec.bind.ip(), port, source });
            }
        }
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// One line naming why io_uring cannot be used, and the fix.
fn io_uring_error(detail: &str) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let memlock = {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: r is a valid out-pointer.
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
        r.rlim_cur
    };
    explain_io_uring_error(detail, disabled, memlock)
}

/// [`io_uring_error`] given what it reads from the system: the `kernel.io_uring_disabled` sysctl
/// and the RLIMIT_MEMLOCK soft limit in bytes.
fn explain_io_uring_error(detail: &str, disabled: u32, memlock: u64) -> String {
    let lower = detail.to_ascii_lowercase();
    if disabled != 0 {
        format!(
            "io_uring is unavailable: the kernel has it disabled (kernel.io_uring_disabled={disabled}); fix: sysctl -w kernel.io_uring_disabled=0 ({detail})"
        )
    } else if lower.contains("function not implemented") || lower.contains("enosys") {
        format!(
            "io_uring is unavailable: the kernel lacks it or a seccomp filter blocks it (ENOSYS); fix: run on Linux 5.11+ and allow io_uring_setup/io_uring_enter in the container's seccomp profile ({detail})"
        )
    } else if lower.contains("operation not permitted") || lower.contains("permission denied") {
        format!(
            "io_uring is unavailable: a seccomp filter or security policy forbids it (EPERM); fix: allow io_uring in the container (e.g. docker --security-opt seccomp=unconfined) ({detail})"
        )
    } else if lower.contains("cannot allocate memory") || lower.contains("locked memory") || memlock < RING_MEMLOCK {
        format!(
            "io_uring is unavailable: RLIMIT_MEMLOCK is {memlock} bytes; fix: raise it (ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit) ({detail})"
        )
    } else {
        format!("io_uring is unavailable ({detail}); ringsfu needs io_uring (Linux 5.11+)")
    }
}

struct Driver {
    core: Shard,
    /// The rings to and from the other shards (none until `Links`).
    links: Option<Box<relay::Links>>,
    fd: RawFd,
    tcp: Option<IceTcp>,
    outboxes: HashMap<SessionRef, Outbox>,
    control: mpsc::UnboundedSender<ControlEvent>,
    send: SendBatch<DatagramSend>,
    send_dropped: u64,
    busy: Duration,
    delays: DelayHistogram,
}

impl Driver {
    /// Sends what the core produced and routes its events; call after every input.
    fn flush(&mut self) {
        let Driver { core, send, fd, send_dropped, tcp, .. } = self;
        while let Some((dest, contents)) = core.poll_transmit() {
            // A destination that is an ICE-TCP connection's peer gets the datagram framed on it.
            let contents = match tcp {
                Some(tcp) if tcp.has_connections() => match tcp.queue(dest, contents) {
                    Queued::NotTcp(contents) => contents,
                    Queued::Tcp => continue,
                    Queued::Dropped(contents) => {
                        core.count_drop(DropReason::TcpQueueFull);
                        core.recycle(contents.into());
                        continue;
                    }
                },
                _ => contents,
            };
            if send.is_full() {
                *send_dropped += send.flush_recycling(*fd, |b| core.recycle(b.into())).dropped as u64;
            }
            send.push(dest, contents);
        }
        if !send.is_empty() {
            *send_dropped += send.flush_recycling(*fd, |b| core.recycle(b.into())).dropped as u64;
        }
        if let Some(tcp) = tcp {
            tcp.write_queued(|b| core.recycle(b.into()));
            forget_closed(tcp, core);
        }
        self.relay();
        while let Some(event) = self.core.poll_event() {
            match event {
                ShardEvent::ToSession(session, event) => self.deliver(session, event),
                ShardEvent::ChannelClosed(channel) => {
                    let _ = self.control.send(ControlEvent::ChannelClosed { channel, shard: self.core.index() });
                }
            }
        }
    }

    /// Hands the core's relay messages to their shards' rings, and rings each of those shards
    /// once. A packet that finds no room is dropped and counted; a channel whose messages find no
    /// room for long gives up the part on that shard.
    fn relay(&mut self) {
        let Some(links) = self.links.as_mut() else {
            while self.core.poll_relay().is_some() {}
            return;
        };
        while let Some((to, relay)) = self.core.poll_relay() {
            match links.send(to, relay) {
                relay::Sent::Queued => {}
                relay::Sent::PacketDropped | relay::Sent::NoLink => self.core.count_drop(DropReason::RelayFull),
                relay::Sent::Cut(channel) => {
                    self.core.count_drop(DropReason::RelayFull);
                    self.core.lost_relay(Instant::now(), to, channel);
                }
            }
        }
        links.flush();
    }

    /// Handles the messages other shards relayed (up to [`RELAY_PER_TURN`]); returns whether
    /// more wait in the rings. Messages waiting in this shard's own overflow go at its next
    /// flush (every wake-up has one): a receiver that stays full must not make this shard spin.
    fn receive_relayed(&mut self) -> bool {
        let Some(links) = self.links.as_mut() else { return false };
        let started = Instant::now();
        let core = &mut self.core;
        let (handled, more) = links.receive(RELAY_PER_TURN, |from, relay| core.handle_relay(started, from, relay));
        if handled > 0 {
            self.core.settle(started);
            self.flush();
            self.busy += started.elapsed();
        }
        more
    }

    fn deliver(&mut self, session: SessionRef, event: SessionEvent) {
        let closing = matches!(event, SessionEvent::Close { .. });
        let Some(outbox) = self.outboxes.get(&session) else { return };
        match outbox.try_send(event) {
            Ok(()) => {}
            Err(Refused::Full) => {
                // The WebSocket does not keep up: drop it rather than queue without bound. Its
                // task sees the closed queue and closes the connection.
                tracing::warn!(connection = %session, "session event queue full; dropping the session");
                self.outboxes.remove(&session);
                let now = Instant::now();
                self.core.handle_command(now, Command::Leave { session });
                return;
            }
            Err(Refused::Closed) => {
                self.outboxes.remove(&session);
                return;
            }
        }
        if closing {
            self.outboxes.remove(&session);
        }
    }

    /// Handles one message from the control plane; false for `Stop`.
    fn handle_message(&mut self, message: ShardMessage) -> bool {
        let started = Instant::now();
        match message {
            ShardMessage::Command { command, reply } => {
                let (joining, leaving) = match &command {
                    Command::Join { session, .. } => (Some(*session), None),
                    Command::Leave { session } => (None, Some(*session)),
                    _ => (None, None),
                };
                let result = self.core.handle_command(started, command);
                if let (Some(session), Reply::JoinRefused(_)) = (joining, &result) {
                    self.outboxes.remove(&session);
                }
                if let Some(session) = leaving {
                    self.outboxes.remove(&session);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            ShardMessage::Register { session, outbox } => {
                self.outboxes.insert(session, outbox);
            }
            ShardMessage::Links(links) => self.links = Some(links),
            ShardMessage::Stop => return false,
        }
        self.flush();
        self.busy += started.elapsed();
        true
    }

    /// Reads and handles one `recvmmsg` batch; returns how many datagrams it held.
    fn receive(&mut self, batch: &mut RecvBatch) -> usize {
        let n = match batch.receive(self.fd) {
            Ok(n) => n,
            Err(e) => {
                // Not expected on an unconnected UDP socket; if it persists, the socket would poll
                // ready again at once, so pause rather than spin (commands and timers wait too).
                tracing::warn!(error = %e, "UDP receive failed");
                std::thread::sleep(RECEIVE_ERROR_PAUSE);
                return 0;
            }
        };
        if n == 0 {
            return 0;
        }
        let started = Instant::now();
        let mut forwarded_before = self.core.rtp_forwarded();
        for i in 0..n {
            if batch.truncated(i) {
                self.core.count_drop(DropReason::Oversized);
                continue;
            }
            let Some((source, data)) = batch.datagram(i) else { continue };
            self.core.handle_datagram(started, Protocol::Udp, source, data);
            if self.core.queued_transmits() >= FLUSH_AT {
                self.flush();
                forwarded_before = self.record_delay(started, forwarded_before);
            }
        }
        self.core.settle(started);
        self.flush();
        self.record_delay(started, forwarded_before);
        self.busy += started.elapsed();
        n
    }

    /// Counts the packets forwarded since `before` (a counter value) as having waited from
    /// `started` until now; returns the counter's value now.
    fn record_delay(&mut self, started: Instant, before: u64) -> u64 {
        let now = self.core.rtp_forwarded();
        if now > before {
            self.delays.record(started.elapsed().as_micros() as u64, now - before);
        }
        now
    }

    /// Accepts ICE-TCP connections and handles the frames the readable ones hold; returns
    /// whether some were left for the next turn.
    fn receive_tcp(&mut self) -> bool {
        let started = Instant::now();
        let Driver { core, tcp, .. } = self;
        let Some(tcp) = tcp.as_mut() else { return false };
        tcp.accept(started);
        let forwarded_before = core.rtp_forwarded();
        let frames = tcp.receive(|peer, frame| core.handle_datagram(started, Protocol::Tcp, peer, frame));
        forget_closed(tcp, core);
        let more = tcp.has_work();
        if frames > 0 {
            self.core.settle(started);
            self.flush();
            let forwarded = self.core.rtp_forwarded() - forwarded_before;
            if forwarded > 0 {
                self.delays.record(started.elapsed().as_micros() as u64, forwarded);
            }
        }
        self.busy += started.elapsed();
        more
    }

    /// Takes epoll's readiness (writes to connections that became writable).
    fn poll_tcp_readiness(&mut self) {
        let Driver { core, tcp, .. } = self;
        if let Some(tcp) = tcp.as_mut() {
            tcp.poll_readiness(|b| core.recycle(b.into()));
            forget_closed(tcp, core);
        }
    }

    /// Closes the ICE-TCP connections no transport routes any more.
    fn sweep_tcp(&mut self, now: Instant) {
        let Driver { core, tcp, .. } = self;
        if let Some(tcp) = tcp.as_mut() {
            tcp.sweep(now, |peer| core.routes_address(peer));
            forget_closed(tcp, core);
        }
    }

    fn handle_timeout(&mut self) {
        let started = Instant::now();
        self.core.handle_timeout(started);
        self.flush();
        self.busy += started.elapsed();
    }
}

/// The core forgets the peers of closed ICE-TCP connections.
fn forget_closed(tcp: &mut IceTcp, core: &mut Shard) {
    while let Some(peer) = tcp.poll_closed() {
        core.forget_address(peer);
    }
}

/// The shard loop: handle what is there (commands, datagrams, due timers), then sleep in one
/// `io_uring_enter` until the next datagram, connection, command or deadline.
#[allow(clippy::too_many_arguments)]
fn run(
    core: Shard,
    socket: socket2::Socket,
    tcp: Option<IceTcp>,
    mut ring: Ring,
    receiver: flume::Receiver<ShardMessage>,
    doorbell: Arc<Doorbell>,
    control: mpsc::UnboundedSender<ControlEvent>,
    load: SharedLoad,
) -> std::io::Result<()> {
    // The ring's descriptors, in the order `start` passed them.
    const DOORBELL: usize = 0;
    const SOCKET: usize = 1;
    const EPOLL: usize = 2;
    let fd = socket.as_raw_fd();
    load.set_tid(cpu::thread_id());
    let epoch = Instant::now();
    let mut d = Driver {
        core,
        links: None,
        fd,
        tcp,
        outboxes: HashMap::new(),
        control,
        send: SendBatch::new(BATCH),
        send_dropped: 0,
        busy: Duration::ZERO,
        delays: DelayHistogram::default(),
    };
    let mut batch = RecvBatch::new(BATCH);
    let mut next_publish = epoch + PUBLISH_INTERVAL;
    // Whether the socket may hold more than the last batch took: then look again before sleeping.
    let mut more = true;
    // The same for the ICE-TCP connections, and whether epoll has readiness to report.
    let mut more_tcp = d.tcp.is_some();
    let mut tcp_ready = false;
    loop {
        let mut handled = 0;
        while handled < MESSAGES_PER_TURN {
            match receiver.try_recv() {
                Ok(message) => {
                    if !d.handle_message(message) {
                        publish(&d, &load);
                        return Ok(());
                    }
                    handled += 1;
                }
                Err(flume::TryRecvError::Empty) => break,
                // Every handle is gone: the server is shutting down without a Stop.
                Err(flume::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        let more_relayed = d.receive_relayed();
        if more {
            more = false;
            for _ in 0..BATCHES_PER_TURN {
                if d.receive(&mut batch) < BATCH {
                    break;
                }
                more = true;
            }
        }
        if tcp_ready {
            tcp_ready = false;
            d.poll_tcp_readiness();
            more_tcp = true;
        }
        if more_tcp {
            more_tcp = d.receive_tcp();
        }
        let now = Instant::now();
        if d.core.next_timeout().is_some_and(|at| at <= now) {
            d.handle_timeout();
        }
        d.sweep_tcp(now);
        if now >= next_publish {
            publish(&d, &load);
            next_publish = now + PUBLISH_INTERVAL;
        }
        // Sleep until the earlier of the core's next deadline (on the grid) and the next
        // publication, unless there is work waiting already.
        let now = Instant::now();
        let mut wake_at = next_publish;
        if let Some(at) = d.core.next_timeout() {
            wake_at = wake_at.min(if at <= now { at } else { on_grid(at, epoch) });
        }
        if let Some(at) = d.tcp.as_ref().and_then(IceTcp::next_deadline) {
            wake_at = wake_at.min(at);
        }
        let pending = more || more_tcp || more_relayed || handled == MESSAGES_PER_TURN;
        let timeout = if pending { Duration::ZERO } else { wake_at.saturating_duration_since(now) };
        let ready = ring.wait(Some(timeout))?;
        if ready.contains(DOORBELL) {
            // Cleared before the queue is read: a message sent after this rings again.
            doorbell.clear();
        }
        more |= ready.contains(SOCKET);
        tcp_ready |= ready.contains(EPOLL);
    }
}

/// The first grid point at or after `at`: future deadlines wake the shard only on a shard-wide
/// grid, so the timers of many transports (str0m's pacer alone wants every transport every
/// 40 ms) share wake-ups instead of taking one each.
fn on_grid(at: Instant, epoch: Instant) -> Instant {
    let grid = TIMER_GRID.as_nanos();
    let steps = at.saturating_duration_since(epoch).as_nanos().div_ceil(grid);
    epoch + Duration::from_nanos((steps * grid) as u64)
}

fn publish(d: &Driver, load: &ShardLoad) {
    let mut counters = d.core.counters();
    counters.dropped[DropReason::SendFailed as usize] += d.send_dropped;
    if let Some(tcp) = &d.tcp {
        counters.tcp = tcp.counters();
    }
    load.publish(&counters, cpu::thread_cpu_time().as_nanos() as u64, d.busy.as_nanos() as u64);
    load.publish_delays(&d.delays);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_uring_failure_is_explained_in_one_line_with_its_fix() {
        let cases = [
            ("Operation not permitted (os error 1)", 2, u64::MAX, "kernel.io_uring_disabled=2"),
            ("Function not implemented (os error 38)", 0, u64::MAX, "seccomp"),
            ("Operation not permitted (os error 1)", 0, u64::MAX, "seccomp=unconfined"),
            ("Cannot allocate memory (os error 12)", 0, 65536, "RLIMIT_MEMLOCK is 65536"),
            ("Invalid argument (os error 22)", 0, 8192, "RLIMIT_MEMLOCK"),
            ("Invalid argument (os error 22)", 0, u64::MAX, "Linux 5.11+"),
        ];
        for (detail, disabled, memlock, says) in cases {
            let line = explain_io_uring_error(detail, disabled, memlock);
            assert!(line.contains(says) && line.contains(detail) && !line.contains('\n'), "{detail}: {line}");
        }
    }
}
