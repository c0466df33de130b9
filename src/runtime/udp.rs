//! Batched UDP I/O on a raw socket: `recvmmsg` in, `sendmmsg` out.
//!
//! Buffers and message headers are allocated once per shard; a batch costs one syscall whatever
//! its size and allocates nothing. Both calls use `MSG_DONTWAIT`: the shard never blocks on the
//! socket (waiting for readability is the shard loop's job, and a full send buffer drops, as UDP may).

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Largest datagram we accept; larger ones are truncated by the kernel and then dropped by str0m.
pub const MAX_DATAGRAM: usize = 2048;

/// Receive side of a batch: `capacity` buffers filled by one `recvmmsg`.
pub struct RecvBatch {
    buffers: Box<[u8]>,
    names: Box<[libc::sockaddr_storage]>,
    /// Only read by the kernel, through `headers`.
    _iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    filled: usize,
}

// The raw pointers inside the headers point into the boxes above, which never move or grow.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(capacity: usize) -> RecvBatch {
        assert!(capacity > 0, "a batch holds at least one datagram");
        let mut buffers = vec![0u8; capacity * MAX_DATAGRAM].into_boxed_slice();
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero is valid.
        let mut names: Box<[libc::sockaddr_storage]> = (0..capacity).map(|_| unsafe { mem::zeroed() }).collect();
        let mut iovecs: Box<[libc::iovec]> = (0..capacity)
            .map(|i| libc::iovec { iov_base: buffers[i * MAX_DATAGRAM..].as_mut_ptr().cast(), iov_len: MAX_DATAGRAM })
            .collect();
        let headers: Box<[libc::mmsghdr]> = (0..capacity)
            .map(|i| {
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as u32;
                h.msg_hdr.msg_iov = &mut iovecs[i];
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        RecvBatch { buffers, names, _iovecs: iovecs, headers, filled: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.headers.len()
    }

    /// Receives up to `capacity` datagrams without blocking. `Ok(0)` means nothing was waiting.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in self.headers.iter_mut() {
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_len = 0;
        }
        // SAFETY: headers point to live buffers owned by self; the kernel writes within their lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            self.filled = 0;
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        self.filled = n as usize;
        Ok(self.filled)
    }

    /// The `i`-th datagram of the last `receive`, with its source. `None` for an address family
    /// we do not speak (never for a UDP socket).
    pub fn datagram(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        debug_assert!(i < self.filled);
        let len = (self.headers[i].msg_len as usize).min(MAX_DATAGRAM);
        let source = from_sockaddr(&self.names[i])?;
        Some((source, &self.buffers[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len]))
    }

    /// Whether the kernel truncated datagram `i` (it was larger than `MAX_DATAGRAM`).
    pub fn truncated(&self, i: usize) -> bool {
        self.headers[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }
}

/// Send side: datagrams queued with their destination, flushed by one `sendmmsg`.
pub struct SendBatch<B> {
    queued: Vec<(SocketAddr, B)>,
    names: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
}

unsafe impl<B: Send> Send for SendBatch<B> {}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    pub bytes: usize,
    /// Datagrams the kernel refused (full send buffer, unreachable destination): dropped.
    pub dropped: usize,
}

impl<B: std::ops::Deref<Target = [u8]>> SendBatch<B> {
    pub fn new(capacity: usize) -> SendBatch<B> {
        assert!(capacity > 0, "a batch holds at least one datagram");
        SendBatch {
            queued: Vec::with_capacity(capacity),
            names: (0..capacity).map(|_| unsafe { mem::zeroed() }).collect(),
            iovecs: (0..capacity).map(|_| libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }).collect(),
            headers: (0..capacity).map(|_| unsafe { mem::zeroed() }).collect(),
        }
    }

    pub fn is_full(&self) -> bool {
        self.queued.len() == self.headers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Queues one datagram. The caller flushes when `is_full`.
    pub fn push(&mut self, destination: SocketAddr, contents: B) {
        debug_assert!(!self.is_full(), "flush before pushing into a full batch");
        self.queued.push((destination, contents));
    }

    /// Sends everything queued, retrying the rest after partial sends; never blocks.
    pub fn flush(&mut self, fd: RawFd) -> Flushed {
        self.flush_recycling(fd, drop)
    }

    /// `flush`, handing each datagram's buffer to `recycle` afterwards.
    pub fn flush_recycling(&mut self, fd: RawFd, recycle: impl FnMut(B)) -> Flushed {
        let mut result = Flushed::default();
        let n = self.queued.len();
        for (i, (dest, contents)) in self.queued.iter().enumerate() {
            let name_len = to_sockaddr(dest, &mut self.names[i]);
            let bytes: &[u8] = contents;
            self.iovecs[i] = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = name_len;
            h.msg_iov = &mut self.iovecs[i];
            h.msg_iovlen = 1;
        }
        let mut start = 0;
        while start < n {
            // SAFETY: headers[start..n] point to buffers owned by `queued`, alive until the clear below.
            let r = unsafe {
                libc::sendmmsg(fd, self.headers[start..].as_mut_ptr(), (n - start) as u32, libc::MSG_DONTWAIT)
            };
            if r > 0 {
                for (_, c) in &self.queued[start..start + r as usize] {
                    result.bytes += c.len();
                }
                result.sent += r as usize;
                start += r as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if r < 0 && err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first remaining datagram cannot go (buffer full, unreachable, ...): drop it and go on.
            result.dropped += 1;
            start += 1;
        }
        self.queued.drain(..).map(|(_, contents)| contents).for_each(recycle);
        result
    }
}

fn to_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // A v4-mapped source on a dual-stack socket is reported as the IPv4 address it is.
            if let Some(v4) = ip.to_ipv4_mapped() {
                return Some(SocketAddr::V4(SocketAddrV4::new(v4, u16::from_be(sin6.sin6_port))));
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = rx.local_addr().unwrap();
        let mut send: SendBatch<Vec<u8>> = SendBatch::new(8);
        for i in 0..5u8 {
            send.push(dest, vec![i; 100 + i as usize]);
        }
        let flushed = send.flush(tx.as_raw_fd());
        assert_eq!(flushed, Flushed { sent: 5, bytes: 510, dropped: 0 });
        assert!(send.is_empty());

        let mut recv = RecvBatch::new(16);
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = recv.receive(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                let (src, data) = recv.datagram(i).unwrap();
                assert_eq!(src, tx.local_addr().unwrap());
                got.push(data.to_vec());
            }
            if got.len() == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got.len(), 5);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 100 + i]);
        }
        // Nothing left: a non-blocking receive reports zero instead of waiting.
        assert_eq!(recv.receive(rx.as_raw_fd()).unwrap(), 0);
    }
}
