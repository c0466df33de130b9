//! What every shard of the process shares: router capabilities, limits and the DTLS certificate.

use super::codecs::{AudioCodec, VideoCodec};
use super::ortc::RouterCaps;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use str0m::config::DtlsCert;

#[derive(Clone)]
pub struct SfuSettings {
    pub router: RouterCaps,
    /// `producerOptionsByKind` of `INIT_TRANSPORTS`.
    pub producer_options: Value,
    pub channel_size: usize,
    pub max_bitrate_in: u64,
    pub max_bitrate_out: u64,
    pub max_video_bitrate: u64,
    /// Audio consumers on AES-GCM transports go by ringsfu's own egress (`forward::direct`).
    pub own_audio_egress: bool,
    /// Video consumers on AES-GCM transports go by ringsfu's own egress, with its own NACK/RTX
    /// and bandwidth estimate (`forward::direct`, `congestion`).
    pub own_video_egress: bool,
    /// Publishers' packets on AES-GCM transports are opened and answered by ringsfu (`ingress`),
    /// not by str0m's receive path.
    pub own_ingress: bool,
    /// How long a session may keep a media transport that lost ICE consent (its UDP path died
    /// while its WebSocket stayed up) before it is closed; `None`: forever.
    pub consent_timeout: Option<Duration>,
    /// Each transport also offers a passive ICE-TCP candidate (RFC 6544) on the shard's port.
    pub rtc_tcp: bool,
    /// One certificate for every transport of the process (generating one per transport costs a
    /// key generation each).
    pub dtls_cert: DtlsCert,
    /// Its SHA-256 fingerprint, `AB:CD:...`.
    pub dtls_fingerprint: String,
}

impl std::fmt::Debug for SfuSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuSettings")
            .field("channel_size", &self.channel_size)
            .field("dtls_fingerprint", &self.dtls_fingerprint)
            .finish_non_exhaustive()
    }
}

/// Limits and codecs; the subset of the configuration the core needs.
#[derive(Debug, Clone)]
pub struct Limits {
    pub audio_codecs: Vec<AudioCodec>,
    pub video_codecs: Vec<VideoCodec>,
    pub channel_size: usize,
    pub max_bitrate_in: u64,
    pub max_bitrate_out: u64,
    pub max_video_bitrate: u64,
    pub own_audio_egress: bool,
    pub own_video_egress: bool,
    pub own_ingress: bool,
    pub consent_timeout: Option<Duration>,
    pub rtc_tcp: bool,
}

/// The server's defaults (`src/config.rs` applies the same when nothing is set).
impl Default for Limits {
    fn default() -> Limits {
        Limits {
            audio_codecs: AudioCodec::ALL.to_vec(),
            video_codecs: VideoCodec::ALL.to_vec(),
            channel_size: 100,
            max_bitrate_in: 8_000_000,
            max_bitrate_out: 10_000_000,
            max_video_bitrate: 4_000_000,
            own_audio_egress: true,
            own_video_egress: true,
            own_ingress: true,
            consent_timeout: Some(Duration::from_secs(30)),
            rtc_tcp: true,
        }
    }
}

impl SfuSettings {
    pub fn new(limits: &Limits) -> SfuSettings {
        let provider = str0m::crypto::from_feature_flags();
        let dtls_cert =
            provider.dtls_provider.generate_certificate().expect("the built-in crypto provider generates certificates");
        let digest = Sha256::digest(&dtls_cert.certificate);
        let dtls_fingerprint = digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        let mvb = limits.max_video_bitrate;
        let base = json!({"stopTracks": false, "disableTrackOnPause": false, "zeroRtpOnPause": true});
        let mut video = base.clone();
        video["codecOptions"] = json!({
            "videoGoogleMinBitrate": 1000,
            "videoGoogleStartBitrate": 1_000_000,
            "videoGoogleMaxBitrate": mvb * 2,
        });
        video["encodings"] = json!([
            {"scaleResolutionDownBy": 4, "maxBitrate": mvb / 4},
            {"scaleResolutionDownBy": 2, "maxBitrate": mvb / 2},
            {"scaleResolutionDownBy": 1, "maxBitrate": mvb},
        ]);
        SfuSettings {
            router: RouterCaps::new(&limits.audio_codecs, &limits.video_codecs),
            producer_options: json!({"audio": base, "video": video}),
            channel_size: limits.channel_size,
            max_bitrate_in: limits.max_bitrate_in,
            max_bitrate_out: limits.max_bitrate_out,
            max_video_bitrate: mvb,
            own_audio_egress: limits.own_audio_egress,
            own_video_egress: limits.own_video_egress,
            own_ingress: limits.own_ingress,
            consent_timeout: limits.consent_timeout,
            rtc_tcp: limits.rtc_tcp,
            dtls_cert,
            dtls_fingerprint,
        }
    }
}
