//! The client side of one mediasoup transport: a str0m `Rtc` doing what a browser's
//! PeerConnection does against ringsfu (full ICE, controlling; DTLS client), configured from the
//! `TransportOptions` of `INIT_TRANSPORTS`. Sans-IO, like the server.
//!
//! Over UDP it uses the server's UDP candidate; over TCP, the passive TCP candidate (ICE-TCP, RFC
//! 6544), as an active TCP candidate itself: the driver connects to the server and frames each
//! datagram (RFC 4571).

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;
use str0m::config::{DtlsCert, Fingerprint};
use str0m::format::{Codec, FormatParams};
use str0m::media::Frequency;
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Event, IceCreds, Input, Output, Rtc, RtcConfig};

/// One certificate for every client transport of the process (a key generation each would make
/// load tests measure key generation).
fn client_certificate() -> &'static (DtlsCert, String) {
    static CERT: OnceLock<(DtlsCert, String)> = OnceLock::new();
    CERT.get_or_init(|| {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider.dtls_provider.generate_certificate().expect("the built-in provider makes certificates");
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&cert.certificate);
        let value = digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        (cert, value)
    })
}

/// A host candidate at `addr`; over TCP, of the given type.
fn candidate_for(proto: Protocol, addr: SocketAddr, tcp_type: TcpType) -> Result<Candidate, String> {
    let built = match proto {
        Protocol::Tcp => Candidate::builder().tcp().host(addr).tcptype(tcp_type).build(),
        _ => Candidate::host(addr, "udp"),
    };
    built.map_err(|e| e.to_string())
}

/// Which payload types and header extension ids this side uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sending like Chrome: opus 111, VP8 96 (RTX 97); Chrome's default extension ids.
    BrowserSend,
    /// Receiving with the router's payload types and extension ids.
    RouterReceive,
}

/// Chrome's default header extension ids when audio is produced first.
pub const BROWSER_EXTENSIONS: &[(u8, Extension, &str)] = &[
    (1, Extension::AudioLevel, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
    (2, Extension::AbsoluteSendTime, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    (
        3,
        Extension::TransportSequenceNumber,
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    ),
    (4, Extension::RtpMid, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    (10, Extension::RtpStreamId, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
    (11, Extension::RepairedRtpStreamId, "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"),
    (13, Extension::VideoOrientation, "urn:3gpp:video-orientation"),
];

pub const BROWSER_OPUS_PT: u8 = 111;
pub const BROWSER_VP8_PT: u8 = 96;
pub const BROWSER_VP8_RTX_PT: u8 = 97;

pub struct ClientTransport {
    pub rtc: Rtc,
    pub local: SocketAddr,
    pub server: SocketAddr,
    /// UDP, or TCP (the driver connects `local` to `server` and frames datagrams).
    pub proto: Protocol,
    pub id: String,
    /// The server's ICE username fragment.
    pub server_ufrag: String,
    pub connected: bool,
    started: bool,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    timeout: Option<Instant>,
}

fn ext_of(uri: &str) -> Option<Extension> {
    BROWSER_EXTENSIONS.iter().find(|(_, _, u)| *u == uri).map(|(_, e, _)| e.clone())
}

impl ClientTransport {
    /// Builds the client transport from mediasoup `TransportOptions` (and, for the receiving
    /// side, the router capabilities, whose payload types and ids it must use).
    pub fn new(
        options: &Value,
        router_caps: &Value,
        side: Side,
        local: SocketAddr,
        proto: Protocol,
        now: Instant,
    ) -> Result<ClientTransport, String> {
        let ufrag = options["iceParameters"]["usernameFragment"].as_str().ok_or("no usernameFragment")?;
        let pass = options["iceParameters"]["password"].as_str().ok_or("no password")?;
        let wanted = if proto == Protocol::Tcp { "tcp" } else { "udp" };
        let candidate = options["iceCandidates"]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["protocol"] == wanted))
            .ok_or_else(|| format!("no {wanted} candidate"))?;
        let ip = candidate["address"].as_str().or(candidate["ip"].as_str()).ok_or("no candidate address")?;
        let port = candidate["port"].as_u64().ok_or("no candidate port")? as u16;
        let server = SocketAddr::new(ip.parse().map_err(|_| "bad candidate address")?, port);
        let fp = options["dtlsParameters"]["fingerprints"].as_array().and_then(|l| l.last()).ok_or("no fingerprint")?;
        let fingerprint: Fingerprint =
            format!("{} {}", fp["algorithm"].as_str().unwrap_or(""), fp["value"].as_str().unwrap_or(""))
                .parse()
                .map_err(|e| format!("bad fingerprint: {e}"))?;

        let (cert, _) = client_certificate();
        // ringsfu's provider: its DTLS configuration is built once per thread, which keeps a load
        // generator starting hundreds of clients at once cheap (the keys it taps are unused).
        let mut cfg = RtcConfig::new()
            .set_crypto_provider(ringsfu_core::sfu::srtp::provider())
            .set_rtp_mode(true)
            .set_dtls_cert(cert.clone())
            .clear_codecs()
            .clear_extension_map();
        match side {
            Side::BrowserSend => {
                let cc = cfg.codec_config();
                cc.add_config(
                    BROWSER_OPUS_PT.into(),
                    None,
                    Codec::Opus,
                    Frequency::FORTY_EIGHT_KHZ,
                    Some(2),
                    FormatParams::default(),
                );
                cc.add_config(
                    BROWSER_VP8_PT.into(),
                    Some(BROWSER_VP8_RTX_PT.into()),
                    Codec::Vp8,
                    Frequency::NINETY_KHZ,
                    None,
                    FormatParams::default(),
                );
                for (id, ext, _) in BROWSER_EXTENSIONS {
                    cfg = cfg.set_extension(*id, ext.clone());
                }
            }
            Side::RouterReceive => {
                for codec in router_caps["codecs"].as_array().ok_or("router capabilities without codecs")? {
                    let pt = codec["preferredPayloadType"].as_u64().unwrap_or(0) as u8;
                    let mime = codec["mimeType"].as_str().unwrap_or("").to_ascii_lowercase();
                    let (c, clock) = match mime.as_str() {
                        "audio/opus" => (Codec::Opus, Frequency::FORTY_EIGHT_KHZ),
                        "audio/pcmu" => (Codec::PCMU, Frequency::EIGHT_KHZ),
                        "audio/pcma" => (Codec::PCMA, Frequency::EIGHT_KHZ),
                        "video/vp8" => (Codec::Vp8, Frequency::NINETY_KHZ),
                        "video/vp9" => (Codec::Vp9, Frequency::NINETY_KHZ),
                        "video/h264" => (Codec::H264, Frequency::NINETY_KHZ),
                        _ => continue,
                    };
                    let rtx = router_caps["codecs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|r| r["mimeType"] == "video/rtx" && r["parameters"]["apt"].as_u64() == Some(pt as u64))
                        .and_then(|r| r["preferredPayloadType"].as_u64())
                        .map(|p| (p as u8).into());
                    let channels = codec["channels"].as_u64().map(|c| c as u8);
                    cfg.codec_config().add_config(pt.into(), rtx, c, clock, channels, FormatParams::default());
                }
                let mut exts = ExtensionMap::empty();
                for e in router_caps["headerExtensions"].as_array().ok_or("router capabilities without extensions")? {
                    if e["direction"] != "sendrecv" {
                        continue;
                    }
                    if let (Some(ext), Some(id)) = (e["uri"].as_str().and_then(ext_of), e["preferredId"].as_u64()) {
                        exts.set(id as u8, ext);
                    }
                }
                cfg = cfg.set_extension_map(exts);
            }
        }
        let mut rtc = cfg.build(now);
        drop(ringsfu_core::sfu::srtp::take_built_slot());
        rtc.add_local_candidate(candidate_for(proto, local, TcpType::Active)?);
        {
            let mut api = rtc.direct_api();
            if side == Side::RouterReceive {
                // Browsers send transport-wide congestion control feedback for what they receive.
                api.enable_twcc_feedback();
            }
            api.set_ice_controlling(true);
            api.set_remote_ice_credentials(IceCreds { ufrag: ufrag.into(), pass: pass.into() });
            api.set_remote_fingerprint(fingerprint);
        }
        let mut t = ClientTransport {
            rtc,
            local,
            server,
            proto,
            id: options["id"].as_str().unwrap_or_default().to_string(),
            server_ufrag: ufrag.to_string(),
            connected: false,
            started: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timeout: None,
        };
        t.drain();
        Ok(t)
    }

    /// `dtlsParameters` for `CONNECT_*_TRANSPORT`, as mediasoup-client sends them.
    pub fn dtls_parameters(&self) -> Value {
        let (_, fingerprint) = client_certificate();
        json!({"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": fingerprint}]})
    }

    /// Starts ICE and DTLS, as the browser does once `connect` was acknowledged.
    pub fn start(&mut self, now: Instant) {
        if self.started {
            return;
        }
        self.started = true;
        let server = candidate_for(self.proto, self.server, TcpType::Passive)
            .expect("the server's candidate is a host candidate");
        self.rtc.add_remote_candidate(server);
        self.drain();
        let _ = self.rtc.direct_api().start_dtls(true);
        self.drain();
        // The first time input starts the ICE agent's checks.
        self.handle_timeout(now);
    }

    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let Ok(receive) = Receive::new(self.proto, source, self.local, data) else { return };
        if self.rtc.handle_input(Input::Receive(now, receive)).is_ok() {
            self.drain();
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.rtc.handle_input(Input::Timeout(now)).is_ok() {
            self.drain();
        }
    }

    /// Must follow every mutation of `rtc` made from outside (writes, declarations).
    pub fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.timeout = Some(at);
                    return;
                }
                Ok(Output::Transmit(t)) => self.transmits.push_back((t.destination, t.contents.into())),
                Ok(Output::Event(e)) => {
                    if matches!(e, Event::Connected) {
                        self.connected = true;
                    }
                    self.events.push_back(e);
                }
                Err(_) => {
                    self.timeout = None;
                    return;
                }
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.timeout
    }
}
