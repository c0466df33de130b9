//! Which transport a datagram belongs to: a known 5-tuple, else the local ICE username of a STUN
//! binding request, else nobody. Also cheap peeks into plaintext RTP headers (SRTP leaves the
//! header and its extensions unencrypted): they bind simulcast SSRCs to their `rid`, and on
//! ringsfu's own ingress they are the only parse a publisher's packet gets.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

/// FxHash-style hasher: remote addresses are short, fixed-size keys, and only peers that passed
/// ICE authentication are ever inserted, so a keyed hash buys nothing on this per-packet lookup.
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }

    fn write_u16(&mut self, v: u16) {
        self.write_u64(v as u64);
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(v as u64);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<AddrHasher>>;

/// The shard's routing tables.
pub struct Demux<T: Copy> {
    by_ufrag: HashMap<String, T>,
    by_addr: FastMap<SocketAddr, T>,
}

impl<T: Copy + PartialEq> Default for Demux<T> {
    fn default() -> Self {
        Demux { by_ufrag: HashMap::new(), by_addr: FastMap::default() }
    }
}

impl<T: Copy + PartialEq> Demux<T> {
    pub fn register_ufrag(&mut self, ufrag: &str, owner: T) {
        self.by_ufrag.insert(ufrag.to_string(), owner);
    }

    pub fn unregister_ufrag(&mut self, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
    }

    pub fn by_addr(&self, addr: &SocketAddr) -> Option<T> {
        self.by_addr.get(addr).copied()
    }

    pub fn by_ufrag(&self, ufrag: &str) -> Option<T> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// Binds `addr` to `owner`; returns the previous owner if it changes hands.
    pub fn learn(&mut self, addr: SocketAddr, owner: T) -> Option<T> {
        self.by_addr.insert(addr, owner).filter(|prev| *prev != owner)
    }

    pub fn forget_addr(&mut self, addr: &SocketAddr, owner: T) {
        if self.by_addr.get(addr) == Some(&owner) {
            self.by_addr.remove(addr);
        }
    }

    /// Entries in both tables (for the leak checks of the tests and the metrics).
    pub fn len(&self) -> usize {
        self.by_ufrag.len() + self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_BINDING_REQUEST: u16 = 0x0001;
const STUN_ATTR_USERNAME: u16 = 0x0006;

/// Whether the first byte is one WebRTC uses on this socket (RFC 7983): STUN 0–3, DTLS 20–63,
/// RTP/RTCP 128–191. Anything else (ZRTP, TURN channels, garbage) is dropped before any lookup.
pub fn is_webrtc(data: &[u8]) -> bool {
    matches!(data.first(), Some(0..=3 | 20..=63 | 128..=191))
}

/// Whether the datagram looks like STUN (RFC 7983 demultiplexing plus the magic cookie).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 2 && data[4..8] == STUN_MAGIC
}

/// The attributes of a STUN binding request, (type, value), up to the first that does not fit;
/// nothing for any other datagram.
fn binding_request_attributes(data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let body = (is_stun(data) && u16::from_be_bytes([data[0], data[1]]) == STUN_BINDING_REQUEST)
        .then(|| data.get(20..20 + u16::from_be_bytes([data[2], data[3]]) as usize))
        .flatten()
        .unwrap_or_default();
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = body.get(at..at + 4)?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let value = body.get(at + 4..at + 4 + len)?;
        at += 4 + len.div_ceil(4) * 4;
        Some((kind, value))
    })
}

/// The local part (ours) of the USERNAME of a STUN binding request: `<local>:<remote>`.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    let (_, username) = binding_request_attributes(data).find(|(kind, _)| *kind == STUN_ATTR_USERNAME)?;
    std::str::from_utf8(username).ok()?.split(':').next()
}

/// Whether a STUN binding request carries USE-CANDIDATE: the controlling agent nominates the
/// pair it came on (RFC 8445 §7.1.2).
pub fn stun_nominates(data: &[u8]) -> bool {
    const USE_CANDIDATE: u16 = 0x0025;
    binding_request_attributes(data).any(|(kind, _)| kind == USE_CANDIDATE)
}

/// Whether the datagram is RTP (not RTCP, STUN or DTLS), by RFC 7983 and RFC 5761.
pub fn is_rtp(data: &[u8]) -> bool {
    data.len() >= 12 && (128..192).contains(&data[0]) && !(64..96).contains(&(data[1] & 0x7f))
}

/// The SSRC of an RTP datagram, read before anything else: the hot path needs only this to find
/// a known stream, and walks the header extensions only for an SSRC it has not seen.
pub fn rtp_ssrc(data: &[u8]) -> Option<u32> {
    is_rtp(data).then(|| u32::from_be_bytes([data[8], data[9], data[10], data[11]]))
}

/// What an RTP header says: the fixed fields, where the payload starts, and the values of the
/// header extensions asked for by id (one-byte and two-byte forms).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RtpPeek<'a> {
    pub ssrc: u32,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    /// The P bit: the (encrypted) payload ends in padding whose last byte counts it.
    pub padding: bool,
    /// Fixed header, CSRCs and extensions: the SRTP AAD, and where the payload starts.
    pub header_len: usize,
    pub mid: Option<&'a [u8]>,
    pub rid: Option<&'a [u8]>,
    pub rrid: Option<&'a [u8]>,
    /// Transport-wide sequence number.
    pub twcc: Option<u16>,
    /// RFC 6464: level in -dBov, and the voice activity bit.
    pub audio_level: Option<(u8, bool)>,
    /// The coordination of video orientation byte, as sent.
    pub video_orientation: Option<u8>,
}

/// Extension ids to look for in [`peek_rtp`] (those of the transport's negotiation).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PeekIds {
    pub mid: Option<u8>,
    pub rid: Option<u8>,
    pub rrid: Option<u8>,
    pub twcc: Option<u8>,
    pub audio_level: Option<u8>,
    pub video_orientation: Option<u8>,
}

/// Reads an RTP header without copying; `None` when it is not a well-formed RTP header.
pub fn peek_rtp<'a>(data: &'a [u8], ids: PeekIds) -> Option<RtpPeek<'a>> {
    if !is_rtp(data) {
        return None;
    }
    let csrc_count = (data[0] & 0x0f) as usize;
    let has_extension = data[0] & 0x10 != 0;
    let ext_start = 12 + 4 * csrc_count;
    let mut peek = RtpPeek {
        payload_type: data[1] & 0x7f,
        marker: data[1] & 0x80 != 0,
        padding: data[0] & 0x20 != 0,
        seq: u16::from_be_bytes([data[2], data[3]]),
        timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        header_len: ext_start,
        ..Default::default()
    };
    if !has_extension {
        return (data.len() >= ext_start).then_some(peek);
    }
    let profile = u16::from_be_bytes([*data.get(ext_start)?, *data.get(ext_start + 1)?]);
    let words = u16::from_be_bytes([*data.get(ext_start + 2)?, *data.get(ext_start + 3)?]) as usize;
    let ext = data.get(ext_start + 4..ext_start + 4 + words * 4)?;
    peek.header_len = ext_start + 4 + words * 4;
    let mut visit = |id: u8, value: &'a [u8]| {
        let id = Some(id);
        if id == ids.mid {
            peek.mid = Some(value);
        } else if id == ids.rid {
            peek.rid = Some(value);
        } else if id == ids.rrid {
            peek.rrid = Some(value);
        } else if id == ids.twcc {
            if let [hi, lo, ..] = *value {
                peek.twcc = Some(u16::from_be_bytes([hi, lo]));
            }
        } else if id == ids.audio_level {
            if let Some(&b) = value.first() {
                peek.audio_level = Some((b & 0x7f, b & 0x80 != 0));
            }
        } else if id == ids.video_orientation {
            peek.video_orientation = value.first().copied();
        }
    };
    let mut at = 0;
    if profile == 0xbede {
        // One-byte header: 4 bits id, 4 bits (length - 1); id 0 is padding, 15 ends the list.
        while at < ext.len() {
            let id = ext[at] >> 4;
            if id == 0 {
                at += 1;
                continue;
            }
            if id == 15 {
                break;
            }
            let len = (ext[at] & 0x0f) as usize + 1;
            // A malformed element ends the walk; the header fields are still good.
            let Some(value) = ext.get(at + 1..at + 1 + len) else { break };
            visit(id, value);
            at += 1 + len;
        }
    } else if profile & 0xfff0 == 0x1000 {
        // Two-byte header: 8 bits id, 8 bits length.
        while at + 1 < ext.len() {
            let id = ext[at];
            if id == 0 {
                at += 1;
                continue;
            }
            let len = ext[at + 1] as usize;
            let Some(value) = ext.get(at + 2..at + 2 + len) else { break };
            visit(id, value);
            at += 2 + len;
        }
    }
    Some(peek)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp_with_extensions(ssrc: u32, ext: &[u8]) -> Vec<u8> {
        let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 1];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xbe, 0xde]);
        let mut body = ext.to_vec();
        while body.len() % 4 != 0 {
            body.push(0);
        }
        p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(&body);
        p.extend_from_slice(b"payload");
        p
    }

    #[test]
    fn peeks_mid_and_rid_from_one_byte_extensions() {
        // mid (id 4) = "1", rid (id 10) = "r2", with a padding byte between.
        let p = rtp_with_extensions(0xdeadbeef, &[0x40, b'1', 0x00, 0xa1, b'r', b'2']);
        let ids = PeekIds { mid: Some(4), rid: Some(10), rrid: Some(11), ..Default::default() };
        let peek = peek_rtp(&p, ids).unwrap();
        assert_eq!(peek.ssrc, 0xdeadbeef);
        assert_eq!(peek.payload_type, 96);
        assert_eq!(peek.mid, Some(&b"1"[..]));
        assert_eq!(peek.rid, Some(&b"r2"[..]));
        assert_eq!(peek.rrid, None);
    }

    #[test]
    fn first_bytes_tell_webrtc_from_garbage() {
        for first in [0u8, 3, 20, 22, 63, 128, 0x90, 191] {
            assert!(is_webrtc(&[first, 0, 0]), "{first}");
        }
        for first in [4u8, 16, 19, 64, 79, 100, 127, 192, 255] {
            assert!(!is_webrtc(&[first, 0, 0]), "{first}");
        }
        assert!(!is_webrtc(&[]));
    }

    #[test]
    fn truncated_or_foreign_datagrams_are_not_rtp() {
        let p = rtp_with_extensions(1, &[0x40, b'1']);
        let ids = PeekIds { mid: Some(4), ..Default::default() };
        assert!(peek_rtp(&p[..15], ids).is_none());
        let mut rtcp = p.clone();
        rtcp[1] = 200; // RTCP SR
        assert!(peek_rtp(&rtcp, ids).is_none());
        assert!(peek_rtp(&[0x16, 0xfe, 0xfd], ids).is_none());
        assert!(peek_rtp(&[], ids).is_none());
    }

    #[test]
    fn reads_the_local_ufrag_of_a_binding_request() {
        let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[7; 12]);
        let username = b"abcd:wxyz";
        let mut attrs = vec![0x00, 0x06, 0x00, username.len() as u8];
        attrs.extend_from_slice(username);
        attrs.extend_from_slice(&[0, 0, 0]); // pad to 4
        m[2..4].copy_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&attrs);
        assert_eq!(stun_local_ufrag(&m), Some("abcd"));
        assert!(!stun_nominates(&m));
        // USE-CANDIDATE (empty) after the username: the same walk finds both.
        let mut nominating = m.clone();
        nominating.extend_from_slice(&[0x00, 0x25, 0x00, 0x00]);
        nominating[2..4].copy_from_slice(&((attrs.len() + 4) as u16).to_be_bytes());
        assert!(stun_nominates(&nominating));
        assert_eq!(stun_local_ufrag(&nominating), Some("abcd"));
        // An attribute that overruns the message ends the walk.
        let mut overrun = nominating.clone();
        overrun[22..24].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(stun_local_ufrag(&overrun), None);
        assert!(!stun_nominates(&overrun));
        // A binding response is not a request.
        m[1] = 0x01;
        m[0] = 0x01;
        assert_eq!(stun_local_ufrag(&m), None);
        assert_eq!(stun_local_ufrag(&m[..10]), None);
    }

    #[test]
    fn learning_an_address_reports_the_previous_owner() {
        let mut d: Demux<u32> = Demux::default();
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(d.learn(a, 1), None);
        assert_eq!(d.learn(a, 1), None);
        assert_eq!(d.learn(a, 2), Some(1));
        d.forget_addr(&a, 1);
        assert_eq!(d.by_addr(&a), Some(2));
        d.forget_addr(&a, 2);
        assert!(d.is_empty());
    }

    #[test]
    fn peeks_the_fixed_fields_and_the_forwarded_extensions() {
        // twcc (id 3) = 0x0102, audio level (id 1) = voice, 42 dBov, orientation (id 13) = 1.
        let mut p = rtp_with_extensions(7, &[0x31, 1, 2, 0x10, 0x80 | 42, 0xd0, 1]);
        p[0] |= 0x20;
        p[1] = 0x80 | 111;
        p[2..4].copy_from_slice(&0xfffeu16.to_be_bytes());
        p[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        let ids = PeekIds { twcc: Some(3), audio_level: Some(1), video_orientation: Some(13), ..Default::default() };
        let peek = peek_rtp(&p, ids).unwrap();
        assert_eq!((peek.seq, peek.timestamp, peek.marker, peek.padding), (0xfffe, 0x1234_5678, true, true));
        assert_eq!(peek.payload_type, 111);
        assert_eq!(peek.header_len, 12 + 4 + 8);
        assert_eq!(&p[peek.header_len..], b"payload");
        assert_eq!(peek.twcc, Some(0x0102));
        assert_eq!(peek.audio_level, Some((42, true)));
        assert_eq!(peek.video_orientation, Some(1));
        assert_eq!(peek.mid, None);
        // Without extensions the payload starts after the CSRCs; a header cut short is refused.
        let mut plain = vec![0x81, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 9];
        assert_eq!(peek_rtp(&plain, PeekIds::default()).unwrap().header_len, 16);
        plain.truncate(14);
        assert!(peek_rtp(&plain, PeekIds::default()).is_none());
    }
}
