//! RTCP packet types and feedback formats ringsfu reads (subscribers' feedback, publishers'
//! sender reports) and writes (its own reports and feedback), named once.

/// RFC 3550: sender report, receiver report.
pub const SR: u8 = 200;
pub const RR: u8 = 201;
/// RFC 4585: transport-layer and payload-specific feedback.
pub const RTPFB: u8 = 205;
pub const PSFB: u8 = 206;
/// RTPFB formats: generic NACK (RFC 4585), transport-wide feedback (draft-holmer).
pub const FMT_NACK: u8 = 1;
pub const FMT_TRANSPORT_CC: u8 = 15;
/// PSFB formats: picture loss (RFC 4585), full intra request (RFC 5104), REMB (draft-alvestrand).
pub const FMT_PLI: u8 = 1;
pub const FMT_FIR: u8 = 4;
pub const FMT_REMB: u8 = 15;
/// The first byte's version bits (2).
pub const V2: u8 = 0x80;
