//! The ceiling of this machine, measured in the same run as ringsfu: how many UDP datagrams one
//! core can push through loopback with plain `sendto`, with batched `sendmmsg`, and with UDP GSO
//! where the kernel has it; and how many 1200-byte AES-128-GCM encryptions one core can do.
//! Rates are per CPU-second of the measuring thread, like ringsfu's figures.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ringsfu::runtime::cpu::thread_cpu_time;
use ringsfu::runtime::udp::SendBatch;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 1200;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ceiling {
    pub sendto_per_cpu_second: f64,
    pub sendmmsg_per_cpu_second: f64,
    /// Datagrams (of 1200 bytes) per CPU-second sent as GSO super-datagrams; `None` without GSO.
    pub gso_per_cpu_second: Option<f64>,
    /// `sendmmsg` as an SFU's fan-out uses it: round-robin over [`FANOUT`] sockets that another
    /// core reads through epoll, so each datagram is delivered (queued, charged, its reader woken)
    /// rather than dropped at a full queue. From the shards' core when the load generator moved off
    /// it. `None` in files written before it was measured.
    #[serde(default)]
    pub sendmmsg_fanout_per_cpu_second: Option<f64>,
    pub aes128gcm_1200b_per_cpu_second: f64,
    pub seconds_each: f64,
}

/// A receiver nobody reads: the kernel delivers into its queue and drops once full, which is the
/// work a loopback send costs the sender's core.
fn sockets() -> (UdpSocket, UdpSocket) {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    tx.set_nonblocking(true).expect("nonblocking");
    (rx, tx)
}

/// Runs `step` (which returns datagrams handled) for `seconds` of wall time; rate per CPU-second.
fn measure(seconds: f64, mut step: impl FnMut() -> u64) -> f64 {
    let cpu0 = thread_cpu_time();
    let wall0 = Instant::now();
    let mut done = 0u64;
    while wall0.elapsed() < Duration::from_secs_f64(seconds) {
        done += step();
    }
    let cpu = (thread_cpu_time() - cpu0).as_secs_f64().max(1e-9);
    done as f64 / cpu
}

pub fn measure_all(seconds: f64) -> Ceiling {
    let payload = vec![0xabu8; PAYLOAD];
    let (rx, tx) = sockets();
    let dest = rx.local_addr().expect("bound");
    let sendto = measure(seconds, || {
        for _ in 0..64 {
            let _ = tx.send_to(&payload, dest);
        }
        64
    });
    let sendmmsg = sendmmsg_rate(&tx, dest, seconds);
    let gso = gso_rate(&tx, dest, seconds);
    let fanout = sendmmsg_fanout_rate(seconds);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7u8; 16]).expect("a 16-byte key"));
    let mut buf = vec![0u8; PAYLOAD];
    let mut counter = 0u64;
    let aes = measure(seconds, || {
        for _ in 0..64 {
            counter += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&[0u8; 12]), &mut buf)
                .expect("encryption of a valid buffer");
            let _ = std::hint::black_box(tag);
        }
        64
    });
    drop(rx);
    Ceiling {
        sendto_per_cpu_second: sendto,
        sendmmsg_per_cpu_second: sendmmsg,
        gso_per_cpu_second: gso,
        sendmmsg_fanout_per_cpu_second: fanout,
        aes128gcm_1200b_per_cpu_second: aes,
        seconds_each: seconds,
    }
}

/// 1200-byte datagrams in batches of 32 per `sendmmsg`.
fn sendmmsg_rate(tx: &UdpSocket, dest: std::net::SocketAddr, seconds: f64) -> f64 {
    let payload = vec![0xabu8; PAYLOAD];
    let mut batch: SendBatch<&[u8]> = SendBatch::new(32);
    let fd = tx.as_raw_fd();
    measure(seconds, || {
        for _ in 0..32 {
            batch.push(dest, &payload);
        }
        let f = batch.flush(fd);
        (f.sent + f.dropped) as u64
    })
}

/// Receivers of the fan-out ceiling: as many as the listeners of `bench`'s scenarios.
pub const FANOUT: usize = 300;

/// 1200-byte datagrams in batches of 32 per `sendmmsg`, round-robin to [`FANOUT`] sockets that a
/// reader thread drains (epoll, then `recvmmsg` until empty), sent from the first shard core when
/// there is one. `None` if the sockets or the epoll instance cannot be made.
fn sendmmsg_fanout_rate(seconds: f64) -> Option<f64> {
    let receivers: Vec<UdpSocket> = (0..FANOUT)
        .map(|_| UdpSocket::bind("127.0.0.1:0").and_then(|s| s.set_nonblocking(true).map(|_| s)))
        .collect::<Result<_, _>>()
        .ok()?;
    let dests: Vec<std::net::SocketAddr> = receivers.iter().filter_map(|r| r.local_addr().ok()).collect();
    // SAFETY: epoll_create1 has no preconditions; the descriptor is closed below.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return None;
    }
    for (i, r) in receivers.iter().enumerate() {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        // SAFETY: valid descriptors and event.
        unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, r.as_raw_fd(), &mut event) };
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut batch = ringsfu::runtime::udp::RecvBatch::new(32);
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: events has room for its length.
                let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 10) };
                for e in &events[..n.max(0) as usize] {
                    let fd = receivers[e.u64 as usize].as_raw_fd();
                    while batch.receive(fd).is_ok_and(|got| got == 32) {}
                }
            }
            receivers
        })
    };
    let sender = std::thread::spawn(move || {
        if let Some(&cpu) = crate::run::cpus_left_to_shards().first() {
            let _ = ringsfu::runtime::cpu::pin_current_thread(cpu);
        }
        let tx = UdpSocket::bind("127.0.0.1:0").ok()?;
        tx.set_nonblocking(true).ok()?;
        let payload = vec![0xabu8; PAYLOAD];
        let mut batch: SendBatch<&[u8]> = SendBatch::new(32);
        let mut next = 0;
        Some(measure(seconds, || {
            for _ in 0..32 {
                batch.push(dests[next], &payload);
                next = (next + 1) % dests.len();
            }
            let f = batch.flush(tx.as_raw_fd());
            (f.sent + f.dropped) as u64
        }))
    });
    let rate = sender.join().ok().flatten();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = reader.join();
    // SAFETY: the reader, the descriptor's only other user, has stopped.
    unsafe { libc::close(epoll) };
    rate
}

/// The ceiling a run's figures are read against: `sendmmsg` at least (a forwarded packet costs
/// at least one batched send), and every figure of [`Ceiling`] when a full measurement was at hand.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunCeiling {
    /// Where it came from: measured in this run, taken by `bench` before it, or a file.
    pub source: String,
    pub sendmmsg_per_cpu_second: f64,
    /// See [`Ceiling::sendmmsg_fanout_per_cpu_second`].
    #[serde(default)]
    pub sendmmsg_fanout_per_cpu_second: Option<f64>,
    pub seconds: f64,
    #[serde(default)]
    pub full: Option<Ceiling>,
}

impl RunCeiling {
    /// A short `sendmmsg`-only measurement, enough for the ratio a report gives.
    pub fn measure(seconds: f64) -> RunCeiling {
        let (rx, tx) = sockets();
        let dest = rx.local_addr().expect("bound");
        let rate = sendmmsg_rate(&tx, dest, seconds);
        RunCeiling {
            source: format!("measured before this run (sendmmsg and its fan-out, {seconds} s each)"),
            sendmmsg_per_cpu_second: rate,
            sendmmsg_fanout_per_cpu_second: sendmmsg_fanout_rate(seconds),
            seconds,
            full: None,
        }
    }

    pub fn of(full: Ceiling, source: &str) -> RunCeiling {
        RunCeiling {
            source: source.to_string(),
            sendmmsg_per_cpu_second: full.sendmmsg_per_cpu_second,
            sendmmsg_fanout_per_cpu_second: full.sendmmsg_fanout_per_cpu_second,
            seconds: full.seconds_each,
            full: Some(full),
        }
    }

    /// Reads a ceiling from the output of `ringsfu-loadtest ceiling`, a run report or a
    /// `bench-summary.json` (both hold one under `ceiling`).
    pub fn from_file(path: &std::path::Path) -> Result<RunCeiling, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        let inner = value.get("ceiling").filter(|c| c.is_object()).unwrap_or(&value);
        let source = format!("from {}", path.display());
        if let Ok(full) = serde_json::from_value::<Ceiling>(inner.clone()) {
            return Ok(RunCeiling::of(full, &source));
        }
        match serde_json::from_value::<RunCeiling>(inner.clone()) {
            Ok(c) => Ok(RunCeiling { source: format!("{source} ({})", c.source), ..c }),
            Err(_) => Err(format!(
                "{}: no ceiling in it (neither the output of `ringsfu-loadtest ceiling` nor a report with one)",
                path.display()
            )),
        }
    }

    /// Each ratio of `per_cpu_second` to the ceiling's figures this ceiling has.
    pub fn ratios(&self, per_cpu_second: f64) -> serde_json::Value {
        let mut ratios = serde_json::json!({"sendmmsg": per_cpu_second / self.sendmmsg_per_cpu_second});
        if let Some(d) = self.sendmmsg_fanout_per_cpu_second {
            ratios["sendmmsgFanout"] = (per_cpu_second / d).into();
        }
        if let Some(f) = &self.full {
            ratios["sendto"] = (per_cpu_second / f.sendto_per_cpu_second).into();
            ratios["aes128gcm"] = (per_cpu_second / f.aes128gcm_1200b_per_cpu_second).into();
            if let Some(g) = f.gso_per_cpu_second {
                ratios["gso"] = (per_cpu_second / g).into();
            }
        }
        ratios
    }
}

/// UDP GSO (Linux 4.18+): one `sendmsg` carrying 32 segments of 1200 bytes.
fn gso_rate(tx: &UdpSocket, dest: std::net::SocketAddr, seconds: f64) -> Option<f64> {
    const SEGMENTS: usize = 32;
    let fd = tx.as_raw_fd();
    // The kernel reads UDP_SEGMENT as an int (a u16-sized value is refused with EINVAL).
    let segment = PAYLOAD as libc::c_int;
    // SAFETY: setsockopt with a valid fd and an int-sized option value.
    let ok = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&segment as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    } == 0;
    if !ok {
        return None;
    }
    let buffer = vec![0xcdu8; PAYLOAD * SEGMENTS];
    let std::net::SocketAddr::V4(v4) = dest else { return None };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
        sin_zero: [0; 8],
    };
    let mut sent = 0u64;
    let rate = measure(seconds, || {
        // SAFETY: valid fd, buffer and address for the duration of the call.
        let r = unsafe {
            libc::sendto(
                fd,
                buffer.as_ptr().cast(),
                buffer.len(),
                libc::MSG_DONTWAIT,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if r < 0 {
            return 0;
        }
        sent += 1;
        SEGMENTS as u64
    });
    // SAFETY: as above; turn GSO off again for the socket.
    let off: libc::c_int = 0;
    let len = std::mem::size_of::<libc::c_int>() as u32;
    unsafe { libc::setsockopt(fd, libc::SOL_UDP, libc::UDP_SEGMENT, (&off as *const libc::c_int).cast(), len) };
    (sent > 0).then_some(rate)
}
