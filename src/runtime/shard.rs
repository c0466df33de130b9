//! The shard driver: one thread, one glommio (io_uring) executor pinned to one core, one UDP
//! socket, one sans-IO [`Shard`] core. Everything the core wants done is done here and nowhere
//! else: datagrams in (batched `recvmmsg`), datagrams out (batched `sendmmsg`), the one timer,
//! the command queue from the control plane, and session events back to it.

use super::cpu;
use super::load::{DelayHistogram, DropReason, ShardLoad, SharedLoad};
use super::outbox::{Outbox, Refused};
use super::udp::{RecvBatch, SendBatch};
use crate::sfu::{Command, Reply, SessionEvent, SessionRef, SfuSettings, Shard, ShardEvent};
use futures_lite::future;
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::net::DatagramSend;
use tokio::sync::{mpsc, oneshot};

/// Datagrams per `recvmmsg` / `sendmmsg`.
const BATCH: usize = 32;
/// Socket buffers: a shard absorbs bursts of several hundred packets without loss.
const SOCKET_BUFFER: usize = 8 << 20;
/// How often counters are published for `/v1/load` and `/metrics`.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// The grid future deadlines are rounded up to: a timer fires at most this late (packets due now
/// never wait). Not coarser: str0m paces its bandwidth probes on its timers, and a 5 ms grid
/// bunched them enough to slow the estimate's climb (simulcast_e2e then missed the top layer).
const TIMER_GRID: Duration = Duration::from_millis(1);
/// glommio's buffer pool; a UDP-only shard needs little, and it counts against RLIMIT_MEMLOCK.
const IO_MEMORY: usize = 256 << 10;

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
    Stop,
}

/// Events that are not for one session.
#[derive(Debug)]
pub enum ControlEvent {
    ChannelClosed(crate::sfu::ChannelId),
}

/// The control plane's handle on one shard.
#[derive(Clone, Debug)]
pub struct ShardHandle {
    pub index: usize,
    pub sender: flume::Sender<ShardMessage>,
    pub load: SharedLoad,
    /// The UDP address the shard is bound to.
    pub bound: SocketAddr,
    /// The address it announces in ICE candidates.
    pub announced: SocketAddr,
}

impl ShardHandle {
    /// Sends a command and waits for its reply; `None` if the shard is gone.
    pub async fn request(&self, command: Command) -> Option<Reply> {
        self.submit(command).await?.await.ok()
    }

    /// Queues a command; its reply comes on the receiver. The shard handles commands in the
    /// order they were queued, so whatever is queued after this returns sees its effect.
    pub async fn submit(&self, command: Command) -> Option<oneshot::Receiver<Reply>> {
        let (tx, rx) = oneshot::channel();
        self.sender.send_async(ShardMessage::Command { command, reply: Some(tx) }).await.ok()?;
        Some(rx)
    }

    /// Sends a command without waiting.
    pub fn tell(&self, command: Command) {
        let _ = self.sender.send(ShardMessage::Command { command, reply: None });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "RTC port {port} on {interface} is not available for shard {shard}: {source} (choose another RTC_MIN_PORT or stop what holds it)"
    )]
    Bind { shard: usize, interface: std::net::IpAddr, port: u16, source: std::io::Error },
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
}

/// Binds the socket, starts the thread and its executor, and returns once the shard runs.
pub fn start(
    spec: ShardSpec,
    settings: Arc<SfuSettings>,
    control: mpsc::UnboundedSender<ControlEvent>,
) -> Result<(ShardHandle, std::thread::JoinHandle<()>), StartError> {
    let socket = bind_udp(spec.bind).map_err(|source| StartError::Bind {
        shard: spec.index,
        interface: spec.bind.ip(),
        port: spec.bind.port(),
        source,
    })?;
    let bound = socket.local_addr().ok().and_then(|a| a.as_socket()).expect("a bound UDP socket has an address");
    let announced = SocketAddr::new(spec.public_ip, bound.port());
    let (sender, receiver) = flume::unbounded();
    let load = ShardLoad::shared();
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    let thread_load = load.clone();
    let index = spec.index;
    let fd = socket.into_raw_fd();
    let thread = std::thread::Builder::new()
        .name(format!("ringsfu-shard-{index}"))
        .spawn(move || {
            let placement = spec.cpu.map(Placement::Fixed).unwrap_or(Placement::Unbound);
            let executor = match LocalExecutorBuilder::new(placement).name("shard").io_memory(IO_MEMORY).make() {
                Ok(e) => e,
                Err(e) => {
                    // SAFETY: fd came from into_raw_fd above and is owned by nobody else.
                    drop(unsafe { socket2::Socket::from_raw_fd(fd) });
                    let _ = started_tx.send(Err(io_uring_error(&e.to_string())));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            executor.run(run(index, fd, announced, settings, receiver, control, thread_load));
        })
        .map_err(|e| StartError::Thread(index, e.to_string()))?;
    match started_rx.recv() {
        Ok(Ok(())) => Ok((ShardHandle { index, sender, load, bound, announced }, thread)),
        Ok(Err(message)) => {
            let _ = thread.join();
            Err(StartError::IoUring(message))
        }
        Err(_) => Err(StartError::Thread(index, "the shard thread exited during start-up".into())),
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
    let lower = detail.to_ascii_lowercase();
    if disabled != 0 {
        format!(
            "io_uring is unavailable: the kernel has it disabled (kernel.io_uring_disabled={disabled}); fix: sysctl -w kernel.io_uring_disabled=0 ({detail})"
        )
    } else if lower.contains("function not implemented") || lower.contains("enosys") {
        format!(
            "io_uring is unavailable: the kernel lacks it or a seccomp filter blocks it (ENOSYS); fix: run on Linux 5.8+ and allow io_uring_setup/io_uring_enter in the container's seccomp profile ({detail})"
        )
    } else if lower.contains("operation not permitted") || lower.contains("permission denied") {
        format!(
            "io_uring is unavailable: a seccomp filter or security policy forbids it (EPERM); fix: allow io_uring in the container (e.g. docker --security-opt seccomp=unconfined) ({detail})"
        )
    } else if lower.contains("cannot allocate memory")
        || lower.contains("locked memory")
        || memlock < (IO_MEMORY as u64) * 2
    {
        format!(
            "io_uring is unavailable: RLIMIT_MEMLOCK is {memlock} bytes; fix: raise it (ulimit -l unlimited, or LimitMEMLOCK=infinity in the systemd unit) ({detail})"
        )
    } else {
        format!("io_uring is unavailable ({detail}); ringsfu needs io_uring (Linux 5.8+)")
    }
}

struct Driver {
    core: Shard,
    fd: RawFd,
    outboxes: HashMap<SessionRef, Outbox>,
    control: mpsc::UnboundedSender<ControlEvent>,
    send: SendBatch<DatagramSend>,
    send_dropped: u64,
    busy: Duration,
    /// The deadline the timer task sleeps until.
    armed: Option<Instant>,
    delays: DelayHistogram,
}

impl Driver {
    /// Sends what the core produced and routes its events; call after every input.
    fn flush(&mut self) {
        let Driver { core, send, fd, send_dropped, .. } = self;
        while let Some((dest, contents)) = core.poll_transmit() {
            if send.is_full() {
                *send_dropped += send.flush_recycling(*fd, |b| core.out.recycle(b.into())).dropped as u64;
            }
            send.push(dest, contents);
        }
        if !send.is_empty() {
            *send_dropped += send.flush_recycling(*fd, |b| core.out.recycle(b.into())).dropped as u64;
        }
        while let Some(event) = self.core.poll_event() {
            match event {
                ShardEvent::ToSession(session, event) => self.deliver(session, event),
                ShardEvent::ChannelClosed(id) => {
                    let _ = self.control.send(ControlEvent::ChannelClosed(id));
                }
            }
        }
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
}

type Shared = Rc<RefCell<Driver>>;

async fn run(
    index: usize,
    fd: RawFd,
    announced: SocketAddr,
    settings: Arc<SfuSettings>,
    receiver: flume::Receiver<ShardMessage>,
    control: mpsc::UnboundedSender<ControlEvent>,
    load: SharedLoad,
) {
    load.set_tid(cpu::thread_id());
    // SAFETY: fd is the bound socket handed over by `start`; from here glommio owns it.
    let socket = unsafe { glommio::net::UdpSocket::from_raw_fd(fd) };
    let fd = socket.as_raw_fd();
    let now = Instant::now();
    let driver: Shared = Rc::new(RefCell::new(Driver {
        core: Shard::new(index, settings, announced, now),
        fd,
        outboxes: HashMap::new(),
        control,
        send: SendBatch::new(BATCH),
        send_dropped: 0,
        busy: Duration::ZERO,
        armed: None,
        delays: DelayHistogram::default(),
    }));
    let (wake_tx, wake_rx) = glommio::channels::local_channel::new_bounded::<()>(1);
    let wake = Rc::new(wake_tx);

    let rx = glommio::spawn_local(receive_loop(driver.clone(), socket, wake.clone())).detach();
    let timers = glommio::spawn_local(timer_loop(driver.clone(), wake_rx)).detach();
    let publisher = glommio::spawn_local(publish_loop(driver.clone(), load.clone())).detach();

    // The command loop runs here; `Stop` ends the shard.
    while let Ok(message) = receiver.recv_async().await {
        let started = Instant::now();
        let mut d = driver.borrow_mut();
        match message {
            ShardMessage::Command { command, reply } => {
                let (joining, leaving) = match &command {
                    Command::Join { session, .. } => (Some(*session), None),
                    Command::Leave { session } => (None, Some(*session)),
                    _ => (None, None),
                };
                let result = d.core.handle_command(started, command);
                if let (Some(session), Reply::JoinRefused(_)) = (joining, &result) {
                    d.outboxes.remove(&session);
                }
                if let Some(session) = leaving {
                    d.outboxes.remove(&session);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            ShardMessage::Register { session, outbox } => {
                d.outboxes.insert(session, outbox);
            }
            ShardMessage::Stop => break,
        }
        d.flush();
        d.busy += started.elapsed();
        rearm(&mut d, &wake);
    }
    rx.cancel();
    timers.cancel();
    publisher.cancel();
    let d = driver.borrow();
    publish(&d, &load);
}

/// Wakes the timer task if the core now wants to run earlier than it sleeps.
fn rearm(d: &mut Driver, wake: &glommio::channels::local_channel::LocalSender<()>) {
    if let Some(next) = d.core.next_timeout()
        && d.armed.is_none_or(|armed| next < armed)
    {
        d.armed = Some(next);
        let _ = wake.try_send(());
    }
}

async fn receive_loop(
    driver: Shared,
    socket: glommio::net::UdpSocket,
    wake: Rc<glommio::channels::local_channel::LocalSender<()>>,
) {
    let mut batch = RecvBatch::new(BATCH);
    let fd = socket.as_raw_fd();
    let mut probe = [0u8; 1];
    loop {
        let n = match batch.receive(fd) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "UDP receive failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if n == 0 {
            // Nothing waiting: let io_uring tell us when something is (a peek consumes nothing).
            let _ = socket.peek_from(&mut probe).await;
            continue;
        }
        {
            let started = Instant::now();
            let mut d = driver.borrow_mut();
            let forwarded_before = d.core.out.counters.rtp_forwarded;
            for i in 0..n {
                if batch.truncated(i) {
                    d.core.out.counters.drop(DropReason::Oversized);
                    continue;
                }
                let Some((source, data)) = batch.datagram(i) else { continue };
                d.core.handle_datagram(started, source, data);
            }
            d.core.settle(started);
            d.flush();
            let elapsed = started.elapsed();
            let forwarded = d.core.out.counters.rtp_forwarded - forwarded_before;
            if forwarded > 0 {
                d.delays.record(elapsed.as_micros() as u64, forwarded);
            }
            d.busy += elapsed;
            rearm(&mut d, &wake);
        }
        glommio::yield_if_needed().await;
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

async fn timer_loop(driver: Shared, wake: glommio::channels::local_channel::LocalReceiver<()>) {
    let epoch = Instant::now();
    loop {
        let deadline = {
            let mut d = driver.borrow_mut();
            let next = d.core.next_timeout();
            d.armed = next;
            next
        };
        let now = Instant::now();
        let sleep = match deadline {
            Some(at) if at <= now => Duration::ZERO,
            Some(at) => on_grid(at, epoch) - now,
            None => Duration::from_secs(1),
        };
        if !sleep.is_zero() {
            future::or(
                async {
                    glommio::timer::sleep(sleep).await;
                },
                async {
                    let _ = wake.recv().await;
                },
            )
            .await;
        }
        {
            let started = Instant::now();
            let mut d = driver.borrow_mut();
            d.core.handle_timeout(started);
            d.flush();
            d.busy += started.elapsed();
        }
        glommio::yield_if_needed().await;
    }
}

async fn publish_loop(driver: Shared, load: SharedLoad) {
    loop {
        glommio::timer::sleep(PUBLISH_INTERVAL).await;
        publish(&driver.borrow(), &load);
    }
}

fn publish(d: &Driver, load: &ShardLoad) {
    let mut counters = d.core.counters();
    counters.dropped[DropReason::SendFailed as usize] += d.send_dropped;
    load.publish(&counters, cpu::thread_cpu_time().as_nanos() as u64, d.busy.as_nanos() as u64);
    load.publish_delays(&d.delays);
}
