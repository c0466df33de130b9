//! The shard's one blocking point: sleep until a watched descriptor is readable or a deadline
//! passes, in a single `io_uring_enter`.
//!
//! Why not an executor: a shard has exactly four reasons to wake (datagrams, ICE-TCP connections, a
//! command from the control plane, its next timer), and a general executor pays for more. glommio, which drove
//! the shards before, took 8–10 `io_uring_enter`s, a `membarrier` (an IPI to every core running
//! a thread of the process) and a sync `recvmsg` peek per wake-up; at light load, where nearly
//! every datagram is a wake-up, that was most of a forwarded packet's cost (docs/forwarding.md).
//! Here a wake-up is one `io_uring_enter` that submits the re-armed polls and waits with the
//! deadline as its timeout (`IORING_ENTER_EXT_ARG`, Linux 5.11).

use io_uring::{IoUring, opcode, types};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Submission and completion entries: [`MAX_WATCHED`] polls in flight at most.
const ENTRIES: u32 = 8;

/// Waits for readability of up to [`MAX_WATCHED`] descriptors, or a timeout.
pub struct Ring {
    ring: IoUring,
    watched: [Watched; MAX_WATCHED],
    count: usize,
}

/// The doorbell, the UDP socket and the epoll instance of the ICE-TCP connections.
pub const MAX_WATCHED: usize = 3;

#[derive(Clone, Copy, Default)]
struct Watched {
    fd: RawFd,
    /// A poll for it is in the kernel.
    armed: bool,
}

/// Which watched descriptors became readable: bit `i` for the `i`-th passed to [`Ring::new`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready(u32);

impl Ready {
    pub fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }
}

impl Ring {
    pub fn new(fds: &[RawFd]) -> io::Result<Ring> {
        assert!(fds.len() <= MAX_WATCHED, "a ring watches at most {MAX_WATCHED} descriptors");
        let ring = IoUring::new(ENTRIES)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks IORING_FEAT_EXT_ARG (wait with a timeout); Linux 5.11+ is needed",
            ));
        }
        let mut watched = [Watched::default(); MAX_WATCHED];
        for (w, fd) in watched.iter_mut().zip(fds) {
            w.fd = *fd;
        }
        Ok(Ring { ring, watched, count: fds.len() })
    }

    /// Arms a one-shot poll for every watched descriptor that has none, submits them and waits
    /// until one is readable or `timeout` passes (`None`: no limit; zero: only look). A poll on
    /// an already readable descriptor completes at once, so nothing that arrived before the call
    /// is missed.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Ready> {
        let mut armed = 0;
        for (index, w) in self.watched[..self.count].iter_mut().enumerate() {
            if w.armed {
                continue;
            }
            let poll = opcode::PollAdd::new(types::Fd(w.fd), libc::POLLIN as u32).build().user_data(index as u64);
            // SAFETY: the descriptor outlives the ring's use of it (the shard owns both and drops
            // the ring first), and the entry holds no pointers.
            unsafe { self.ring.submission().push(&poll) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            w.armed = true;
            armed += 1;
        }
        let result = match timeout {
            // A busy shard looks without waiting: no system call unless there is a poll to submit.
            Some(d) if d.is_zero() && armed == 0 => Ok(0),
            Some(d) if d.is_zero() => self.ring.submit(),
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match result {
            Ok(_) => {}
            // The timeout passed, or a signal came: look at what completed either way.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        let mut ready = 0u32;
        for cqe in self.ring.completion() {
            let index = cqe.user_data() as usize;
            if let Some(w) = self.watched.get_mut(index) {
                w.armed = false;
                // An error (the descriptor went away) also wakes the caller, whose read then fails.
                ready |= 1 << index;
            }
        }
        Ok(Ready(ready))
    }
}

/// An `eventfd`: how other threads wake a sleeping shard after queueing it a message.
#[derive(Debug)]
pub struct Doorbell(OwnedFd);

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd has no memory preconditions; a non-negative result is a new descriptor.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nobody else.
        Ok(Doorbell(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. It cannot fail short of the
        // counter reaching u64::MAX - 1, which would take centuries of unanswered rings.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter, so the next poll waits for the next ring.
    pub fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (nothing rung) is fine.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_ring_wakes_for_a_rung_doorbell_and_times_out_otherwise() {
        let bell = Doorbell::new().unwrap();
        let mut ring = Ring::new(&[bell.as_raw_fd()]).unwrap();
        let started = Instant::now();
        assert_eq!(ring.wait(Some(Duration::from_millis(30))).unwrap(), Ready(0));
        assert!(started.elapsed() >= Duration::from_millis(25), "returned before its timeout");
        bell.ring();
        assert!(ring.wait(Some(Duration::from_secs(5))).unwrap().contains(0));
        // Not cleared: the re-armed poll completes at once.
        assert!(ring.wait(Some(Duration::from_secs(5))).unwrap().contains(0));
        bell.clear();
        assert_eq!(ring.wait(Some(Duration::ZERO)).unwrap(), Ready(0));
    }

    #[test]
    fn a_datagram_that_arrived_before_the_wait_is_seen() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let bell = Doorbell::new().unwrap();
        let mut ring = Ring::new(&[bell.as_raw_fd(), socket.as_raw_fd()]).unwrap();
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"x", socket.local_addr().unwrap()).unwrap();
        let ready = ring.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(ready.contains(1) && !ready.contains(0), "{ready:?}");
    }
}
