//! SRTP for the packets ringsfu sends itself, without str0m's send path.
//!
//! str0m keeps ICE and DTLS; the keys come from its DTLS handshake. A [`provider`] wraps str0m's
//! crypto provider so that every DTLS instance hands the exported keying material to a
//! [`KeySlot`] the transport holds; from it [`SrtpSender`] derives the session keys (RFC 3711
//! §4.3 key derivation) and seals RTP and RTCP with AEAD AES-GCM (RFC 7714, with aws-lc-rs, the
//! library str0m's own provider uses) in place in the send buffer: no allocation, no extra
//! copy. AES-CM/HMAC-SHA1 sessions (no browser we know of picks them over GCM) stay on str0m's
//! path.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion, SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider, SrtpProvider};

/// Bytes of the AES-GCM authentication tag after every sealed packet.
pub const TAG_LEN: usize = 16;
/// Bytes of the E flag and SRTCP index after a sealed RTCP packet.
pub const SRTCP_INDEX_LEN: usize = 4;

// RFC 3711 §4.3.1 key derivation labels.
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_SALT: u8 = 5;
/// RFC 7714: a 96-bit master salt and session salt for both GCM profiles.
const SALT_LEN: usize = 12;

/// The keying material one DTLS handshake exported, as str0m's session saw it.
#[derive(Debug, Clone)]
pub struct Exported {
    pub material: Vec<u8>,
    pub profile: SrtpProfile,
    /// We were the DTLS client: the client's half of the material is ours to send with.
    pub active: bool,
}

/// Where a transport's DTLS instance leaves its keying material. (A mutex because str0m's
/// provider traits require `Send + Sync`; it is taken once, on the shard thread.)
#[derive(Debug, Default)]
pub struct KeySlot(Mutex<Option<Exported>>);

impl KeySlot {
    pub fn take(&self) -> Option<Exported> {
        self.0.lock().ok()?.take()
    }
}

thread_local! {
    /// The slot of the DTLS instance this thread created last: an `Rtc` creates its one DTLS
    /// instance while it is built, so the shard takes the slot right after building it.
    static LAST_SLOT: RefCell<Option<Arc<KeySlot>>> = const { RefCell::new(None) };
    /// This thread's DTLS configuration, for the MTU it was built with.
    static DTLS_CONFIG: RefCell<Option<(Option<usize>, Arc<dimpl::Config>)>> = const { RefCell::new(None) };
}

/// The slot of the `Rtc` this thread built last (call right after `RtcConfig::build`).
pub fn take_built_slot() -> Option<Arc<KeySlot>> {
    LAST_SLOT.with(|s| s.borrow_mut().take())
}

/// str0m's default crypto provider, its DTLS instances tapped for their keying material.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let base = str0m::crypto::from_feature_flags();
            let dtls: &'static TapDtls = Box::leak(Box::new(TapDtls { inner: base.dtls_provider }));
            Arc::new(CryptoProvider { dtls_provider: dtls, ..base })
        })
        .clone()
}

fn srtp_provider() -> &'static dyn SrtpProvider {
    provider().srtp_provider
}

#[derive(Debug)]
struct TapDtls {
    inner: &'static dyn DtlsProvider,
}

impl DtlsProvider for TapDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        // What str0m's provider does, with the configuration kept: building a `dimpl::Config`
        // validates the crypto provider by running a key exchange of every group (P-256, P-384,
        // X25519), which was the largest part of a join's shard time. The configuration is
        // immutable and shared by reference, so one per shard thread serves every transport.
        let config = DTLS_CONFIG.with(|cached| {
            let mut cached = cached.borrow_mut();
            match cached.as_ref() {
                Some((m, config)) if *m == mtu => Ok::<_, CryptoError>(config.clone()),
                _ => {
                    let mut builder = dimpl::Config::builder().use_server_cookie(false);
                    if let Some(mtu) = mtu {
                        builder = builder.mtu(mtu);
                    }
                    if self.inner.is_test() {
                        builder = builder.dangerously_set_rng_seed(42);
                    }
                    let config =
                        Arc::new(builder.build().map_err(|e| CryptoError::Other(format!("DTLS configuration: {e}")))?);
                    *cached = Some((mtu, config.clone()));
                    Ok(config)
                }
            }
        })?;
        let certificate =
            dimpl::DtlsCertificate { certificate: cert.certificate.clone(), private_key: cert.private_key.clone() };
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, certificate, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, certificate, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, certificate, now),
            other => return Err(CryptoError::Other(format!("unsupported DTLS version {other}"))),
        };
        let slot = Arc::new(KeySlot::default());
        LAST_SLOT.with(|s| *s.borrow_mut() = Some(slot.clone()));
        Ok(Box::new(TapInstance { inner: dtls, slot }))
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

/// A DTLS instance whose exported keying material also goes to its transport's slot.
struct TapInstance {
    inner: dimpl::Dtls,
    slot: Arc<KeySlot>,
}

impl std::fmt::Debug for TapInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapInstance").finish_non_exhaustive()
    }
}

impl DtlsInstance for TapInstance {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active)
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let output = self.inner.poll_output(buf);
        // Only a transport that holds the slot wants the keys: no copy of them is kept otherwise.
        if let DtlsOutput::KeyingMaterial(material, profile) = &output
            && Arc::strong_count(&self.slot) > 1
            && let Ok(mut slot) = self.slot.0.lock()
        {
            let active = self.inner.is_active();
            *slot = Some(Exported { material: material.to_vec(), profile: *profile, active });
        }
        output
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

/// Session key and salt of one direction's RTP or RTCP, derived from exported DTLS-SRTP material.
struct SessionKeys {
    rtp: LessSafeKey,
    rtp_salt: [u8; SALT_LEN],
    rtcp: LessSafeKey,
    rtcp_salt: [u8; SALT_LEN],
}

impl SessionKeys {
    /// `ours`: the half we send with (the DTLS client's when we were the client), else the peer's.
    fn derive(keys: &Exported, ours: bool) -> Option<SessionKeys> {
        let (key_len, algorithm) = match keys.profile {
            SrtpProfile::AEAD_AES_128_GCM => (16, &AES_128_GCM),
            SrtpProfile::AEAD_AES_256_GCM => (32, &AES_256_GCM),
            _ => return None,
        };
        // RFC 5764 §4.2: client key, server key, client salt, server salt.
        let m = &keys.material;
        if m.len() != 2 * (key_len + SALT_LEN) {
            return None;
        }
        let client = keys.active == ours;
        let (key_at, salt_at) = if client { (0, 2 * key_len) } else { (key_len, 2 * key_len + SALT_LEN) };
        let master = &m[key_at..key_at + key_len];
        let master_salt = &m[salt_at..salt_at + SALT_LEN];
        let key = |label: u8| -> Option<LessSafeKey> {
            let mut k = [0u8; 32];
            derive(master, master_salt, label, &mut k[..key_len]);
            Some(LessSafeKey::new(UnboundKey::new(algorithm, &k[..key_len]).ok()?))
        };
        let salt = |label: u8| {
            let mut s = [0u8; SALT_LEN];
            derive(master, master_salt, label, &mut s);
            s
        };
        Some(SessionKeys {
            rtp: key(LABEL_RTP_KEY)?,
            rtp_salt: salt(LABEL_RTP_SALT),
            rtcp: key(LABEL_RTCP_KEY)?,
            rtcp_salt: salt(LABEL_RTCP_SALT),
        })
    }
}

/// RFC 7714 §9.1: the SRTCP nonce from the sender SSRC and the 31-bit index.
fn rtcp_iv(ssrc: &[u8], index: u32, salt: &[u8; SALT_LEN]) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(ssrc);
    iv[8..12].copy_from_slice(&(index & 0x7fff_ffff).to_be_bytes());
    xor(&mut iv, salt);
    iv
}

/// The sending half of one transport's SRTP session (AEAD AES-GCM profiles).
pub struct SrtpSender {
    rtp: LessSafeKey,
    rtp_salt: [u8; SALT_LEN],
    rtcp: LessSafeKey,
    rtcp_salt: [u8; SALT_LEN],
}

impl SrtpSender {
    /// Session keys from exported DTLS-SRTP material; `None` for a profile other than GCM.
    pub fn new(keys: &Exported) -> Option<SrtpSender> {
        let k = SessionKeys::derive(keys, true)?;
        Some(SrtpSender { rtp: k.rtp, rtp_salt: k.rtp_salt, rtcp: k.rtcp, rtcp_salt: k.rtcp_salt })
    }

    /// Seals an RTP packet in place: `buf` holds the header (`header_len` bytes, the AAD) and
    /// the plain payload; the payload is encrypted where it is and the tag appended. The
    /// extended sequence number gives the rollover counter (RFC 7714 §8.1).
    pub fn seal_rtp(&mut self, buf: &mut Vec<u8>, header_len: usize, ssrc: u32, extended_seq: u64) -> bool {
        if buf.len() < header_len {
            return false;
        }
        let iv = rtp_iv(ssrc, extended_seq, &self.rtp_salt);
        let (header, payload) = buf.split_at_mut(header_len);
        let Ok(tag) =
            self.rtp.seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&*header), payload)
        else {
            return false;
        };
        buf.extend_from_slice(tag.as_ref());
        true
    }

    /// Seals an RTCP compound packet in place (RFC 7714 §9): `buf` holds the plain packet; the
    /// tag and the E flag with the SRTCP index are appended.
    pub fn seal_rtcp(&mut self, buf: &mut Vec<u8>, index: u32) -> bool {
        if buf.len() < 8 {
            return false;
        }
        let index = index & 0x7fff_ffff;
        let e_index = (0x8000_0000 | index).to_be_bytes();
        let iv = rtcp_iv(&buf[4..8], index, &self.rtcp_salt);
        let mut aad = [0u8; 12];
        aad[..8].copy_from_slice(&buf[..8]);
        aad[8..].copy_from_slice(&e_index);
        let Ok(tag) =
            self.rtcp.seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut buf[8..])
        else {
            return false;
        };
        buf.extend_from_slice(tag.as_ref());
        buf.extend_from_slice(&e_index);
        true
    }
}

/// RFC 7714 §8.1: the SRTP nonce from the SSRC, the rollover counter and the sequence number
/// (the extended sequence number's upper and lower parts).
fn rtp_iv(ssrc: u32, extended_seq: u64, salt: &[u8; SALT_LEN]) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..10].copy_from_slice(&((extended_seq >> 16) as u32).to_be_bytes());
    iv[10..12].copy_from_slice(&(extended_seq as u16).to_be_bytes());
    xor(&mut iv, salt);
    iv
}

/// The publisher's SRTP on a receiving transport (AEAD AES-GCM profiles), opened by ringsfu
/// in place rather than by str0m. Replay protection is per stream and lives with the stream's
/// receive state (`ingress::receive`), which also guesses the rollover counter.
pub struct SrtpReceiver {
    rtp: LessSafeKey,
    rtp_salt: [u8; SALT_LEN],
}

impl SrtpReceiver {
    /// The peer's half of the session keys; `None` for a profile other than GCM.
    pub fn new(keys: &Exported) -> Option<SrtpReceiver> {
        let k = SessionKeys::derive(keys, false)?;
        Some(SrtpReceiver { rtp: k.rtp, rtp_salt: k.rtp_salt })
    }

    /// Opens an SRTP packet's payload in place: `header` is its header (the AAD), `sealed` the
    /// encrypted payload and its tag, wherever the caller put them. Returns the plain payload's
    /// length (a prefix of `sealed`). On an error `sealed` holds garbage and must be dropped.
    pub fn open_rtp(&self, header: &[u8], sealed: &mut [u8], ssrc: u32, extended_seq: u64) -> Result<usize, OpenError> {
        if sealed.len() < TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let iv = rtp_iv(ssrc, extended_seq, &self.rtp_salt);
        self.rtp
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(header), sealed)
            .map(|plain| plain.len())
            .map_err(|_| OpenError::Forged)
    }
}

/// The RTCP the peer sends on a transport ringsfu sends its own streams on (receiver reports,
/// NACK, PLI, transport-wide feedback), opened with the peer's half of the session keys.
pub struct SrtcpReceiver {
    key: LessSafeKey,
    salt: [u8; SALT_LEN],
    /// Highest index seen and the 64 below it (bit i: index `highest - i` was accepted).
    highest: Option<u32>,
    window: u64,
}

/// Why an SRTCP packet was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Too short, or sent without encryption (browsers always encrypt; RFC 7714 allows E=0).
    Malformed,
    /// Tag mismatch: not from this peer, or damaged.
    Forged,
    /// An index seen before, or too old to tell.
    Replayed,
}

impl SrtcpReceiver {
    pub fn new(keys: &Exported) -> Option<SrtcpReceiver> {
        let k = SessionKeys::derive(keys, false)?;
        Some(SrtcpReceiver { key: k.rtcp, salt: k.rtcp_salt, highest: None, window: 0 })
    }

    /// Opens an SRTCP packet (RFC 7714 §9) in place; the plain compound packet is the returned
    /// prefix of `buf`. Nothing changes on an error.
    pub fn open<'b>(&mut self, buf: &'b mut [u8]) -> Result<&'b [u8], OpenError> {
        let n = buf.len();
        if n < 8 + TAG_LEN + SRTCP_INDEX_LEN {
            return Err(OpenError::Malformed);
        }
        let e_index = u32::from_be_bytes([buf[n - 4], buf[n - 3], buf[n - 2], buf[n - 1]]);
        if e_index & 0x8000_0000 == 0 {
            return Err(OpenError::Malformed);
        }
        let index = e_index & 0x7fff_ffff;
        if !self.fresh(index) {
            return Err(OpenError::Replayed);
        }
        let iv = rtcp_iv(&buf[4..8], index, &self.salt);
        let mut aad = [0u8; 12];
        aad[..8].copy_from_slice(&buf[..8]);
        aad[8..].copy_from_slice(&e_index.to_be_bytes());
        let sealed_end = n - SRTCP_INDEX_LEN;
        let opened = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut buf[8..sealed_end])
            .map_err(|_| OpenError::Forged)?
            .len();
        self.accept(index);
        Ok(&buf[..8 + opened])
    }

    fn fresh(&self, index: u32) -> bool {
        match self.highest {
            None => true,
            Some(h) if index > h => true,
            Some(h) => {
                let age = h - index;
                age < 64 && self.window & (1 << age) == 0
            }
        }
    }

    fn accept(&mut self, index: u32) {
        match self.highest {
            Some(h) if index <= h => self.window |= 1 << (h - index),
            Some(h) => {
                let shift = index - h;
                self.window = if shift >= 64 { 1 } else { (self.window << shift) | 1 };
                self.highest = Some(index);
            }
            None => {
                self.window = 1;
                self.highest = Some(index);
            }
        }
    }
}

fn xor(iv: &mut [u8; 12], salt: &[u8; SALT_LEN]) {
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
}

/// RFC 3711 §4.3.1/§4.3.3: AES in counter mode over `master_salt XOR label`, key index 0; the
/// 96-bit salts of the GCM profiles are zero-padded to the 112 bits the function takes.
fn derive(master: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let provider = srtp_provider();
    let mut x = [0u8; 16];
    x[..master_salt.len().min(14)].copy_from_slice(&master_salt[..master_salt.len().min(14)]);
    x[7] ^= label;
    let mut block = [0u8; 32];
    for (round, chunk) in out.chunks_mut(16).enumerate() {
        x[14..16].copy_from_slice(&(round as u16).to_be_bytes());
        match master.len() {
            16 => provider.srtp_aes_128_ecb_round(master, &x, &mut block),
            _ => provider.srtp_aes_256_ecb_round(master, &x, &mut block),
        }
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn key_derivation_matches_rfc3711_appendix_b3() {
        let master = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut key = [0u8; 16];
        derive(&master, &salt, LABEL_RTP_KEY, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut session_salt = [0u8; 14];
        derive(&master, &salt, LABEL_RTP_SALT, &mut session_salt);
        assert_eq!(session_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    }

    #[test]
    fn only_gcm_material_of_the_right_length_makes_a_sender() {
        let exported = |profile, len| Exported { material: vec![7; len], profile, active: false };
        assert!(SrtpSender::new(&exported(SrtpProfile::AEAD_AES_128_GCM, 56)).is_some());
        assert!(SrtpSender::new(&exported(SrtpProfile::AEAD_AES_256_GCM, 88)).is_some());
        assert!(SrtpSender::new(&exported(SrtpProfile::AEAD_AES_256_GCM, 56)).is_none());
        assert!(SrtpSender::new(&exported(SrtpProfile::AES128_CM_SHA1_80, 60)).is_none());
    }

    #[test]
    fn sealing_appends_a_tag_and_keeps_the_header_readable() {
        let mut sender = SrtpSender::new(&Exported {
            material: (0..56).collect(),
            profile: SrtpProfile::AEAD_AES_128_GCM,
            active: true,
        })
        .unwrap();
        let header = [0x80, 111, 0, 1, 0, 0, 0, 9, 0, 0, 0, 42];
        let payload = [1u8; 50];
        let packet = |sender: &mut SrtpSender, seq: u64| {
            let mut buf = header.to_vec();
            buf.extend_from_slice(&payload);
            assert!(sender.seal_rtp(&mut buf, 12, 42, seq));
            buf
        };
        let one = packet(&mut sender, 1);
        assert_eq!(one.len(), 12 + 50 + TAG_LEN);
        assert_eq!(&one[..12], &header);
        assert_ne!(&one[12..62], &payload[..]);
        // Another sequence number, another keystream.
        let two = packet(&mut sender, 2);
        assert_ne!(one[12..62], two[12..62]);
        // A header longer than the buffer is refused.
        let mut short = vec![0u8; 8];
        assert!(!sender.seal_rtp(&mut short, 12, 42, 3));

        let mut rtcp = vec![0x80, 200, 0, 6, 0, 0, 0, 42];
        rtcp.extend_from_slice(&[5u8; 20]);
        assert!(sender.seal_rtcp(&mut rtcp, 7));
        assert_eq!(rtcp.len(), 28 + TAG_LEN + SRTCP_INDEX_LEN);
        assert_eq!(&rtcp[..8], &[0x80, 200, 0, 6, 0, 0, 0, 42]);
        assert_eq!(&rtcp[rtcp.len() - 4..], &[0x80, 0, 0, 7]);
    }

    #[test]
    fn the_peer_opens_what_we_seal_and_replays_and_forgeries_are_refused() {
        for (profile, len) in [(SrtpProfile::AEAD_AES_256_GCM, 88), (SrtpProfile::AEAD_AES_128_GCM, 56)] {
            open_sealed(profile, len);
        }
    }

    fn open_sealed(profile: SrtpProfile, len: u8) {
        let material: Vec<u8> = (0..len).collect();
        let ours = Exported { material: material.clone(), profile, active: true };
        // The peer sees the same material from the other side of the handshake.
        let theirs = Exported { material, profile, active: false };
        let mut sender = SrtpSender::new(&ours).unwrap();
        let mut receiver = SrtcpReceiver::new(&theirs).unwrap();
        let plain = {
            let mut p = vec![0x81, 205, 0, 4, 0, 0, 0, 7, 0, 0, 0, 9];
            p.extend_from_slice(&[3u8; 8]);
            p
        };
        let sealed = |sender: &mut SrtpSender, index: u32| {
            let mut b = plain.clone();
            assert!(sender.seal_rtcp(&mut b, index));
            b
        };
        let mut one = sealed(&mut sender, 1);
        assert_eq!(receiver.open(&mut one.clone()).unwrap(), &plain[..]);
        assert_eq!(receiver.open(&mut one), Err(OpenError::Replayed));
        // Older but unseen is fine; a flipped bit is a forgery and does not count as seen.
        let mut zero = sealed(&mut sender, 0);
        let mut forged = zero.clone();
        forged[10] ^= 1;
        assert_eq!(receiver.open(&mut forged), Err(OpenError::Forged));
        assert_eq!(receiver.open(&mut zero).unwrap(), &plain[..]);
        let mut far = sealed(&mut sender, 500);
        assert!(receiver.open(&mut far).is_ok());
        let mut ancient = sealed(&mut sender, 2);
        assert_eq!(receiver.open(&mut ancient), Err(OpenError::Replayed));
        assert_eq!(receiver.open(&mut [0u8; 10]), Err(OpenError::Malformed));
        // Our own receiver (the other half of the keys) cannot open what we send.
        let mut own = SrtcpReceiver::new(&ours).unwrap();
        assert_eq!(own.open(&mut sealed(&mut sender, 3)), Err(OpenError::Forged));
    }

    #[test]
    fn the_peer_opens_the_rtp_we_seal_with_the_right_rollover_counter_only() {
        for (profile, len) in [(SrtpProfile::AEAD_AES_256_GCM, 88u8), (SrtpProfile::AEAD_AES_128_GCM, 56)] {
            let material: Vec<u8> = (0..len).collect();
            let mut sender = SrtpSender::new(&Exported { material: material.clone(), profile, active: true }).unwrap();
            let receiver = SrtpReceiver::new(&Exported { material, profile, active: false }).unwrap();
            let header = [0x90, 96, 0x12, 0x34, 0, 0, 0, 9, 0, 0, 0, 42, 0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0];
            let payload: Vec<u8> = (0..200u8).collect();
            let extended = (3u64 << 16) | 0x1234;
            let mut buf = header.to_vec();
            buf.extend_from_slice(&payload);
            assert!(sender.seal_rtp(&mut buf, header.len(), 42, extended));
            let (aad, sealed) = (&buf[..header.len()], buf[header.len()..].to_vec());
            let mut opened = sealed.clone();
            assert_eq!(receiver.open_rtp(aad, &mut opened, 42, extended), Ok(payload.len()));
            assert_eq!(&opened[..payload.len()], &payload[..]);
            // Another rollover counter, another SSRC, a changed header byte: all refused.
            assert_eq!(receiver.open_rtp(aad, &mut sealed.clone(), 42, 0x1234), Err(OpenError::Forged));
            assert_eq!(receiver.open_rtp(aad, &mut sealed.clone(), 43, extended), Err(OpenError::Forged));
            let mut changed = aad.to_vec();
            changed[17] ^= 1;
            assert_eq!(receiver.open_rtp(&changed, &mut sealed.clone(), 42, extended), Err(OpenError::Forged));
            assert_eq!(
                receiver.open_rtp(aad, &mut sealed[..TAG_LEN - 1].to_vec(), 42, extended),
                Err(OpenError::Malformed)
            );
        }
    }
}
