//! The codecs an operator can enable (`AUDIO_CODECS` / `VIDEO_CODECS`), named as upstream does.

/// Audio codecs, in upstream's default order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    Opus,
    Pcmu,
    Pcma,
}

impl AudioCodec {
    pub const ALL: [AudioCodec; 3] = [AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma];

    pub fn from_name(name: &str) -> Option<AudioCodec> {
        match name.to_ascii_lowercase().as_str() {
            "opus" => Some(AudioCodec::Opus),
            "pcmu" => Some(AudioCodec::Pcmu),
            "pcma" => Some(AudioCodec::Pcma),
            _ => None,
        }
    }
}

/// Video codecs, in upstream's default order. The three H264 entries are upstream's profiles:
/// High 4.0 (`H264`), Constrained Baseline 1.2 (`H264_1_2cb`) and Constrained High 1.3
/// (`H264_1_3ch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    H264ConstrainedBaseline,
    H264ConstrainedHigh,
}

impl VideoCodec {
    pub const ALL: [VideoCodec; 5] = [
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::H264,
        VideoCodec::H264ConstrainedBaseline,
        VideoCodec::H264ConstrainedHigh,
    ];

    pub fn from_name(name: &str) -> Option<VideoCodec> {
        match name.to_ascii_lowercase().as_str() {
            "vp8" => Some(VideoCodec::Vp8),
            "vp9" => Some(VideoCodec::Vp9),
            "h264" => Some(VideoCodec::H264),
            "h264_1_2cb" => Some(VideoCodec::H264ConstrainedBaseline),
            "h264_1_3ch" => Some(VideoCodec::H264ConstrainedHigh),
            _ => None,
        }
    }
}
