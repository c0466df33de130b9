//! WebSocket close codes of the protocol.

/// Close codes the server sends; the client reconnects by itself on all but 4106, 4108 and 4109.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    Clean = 1000,
    GoingAway = 1001,
    UnsupportedData = 1003,
    InvalidPayload = 1007,
    TooBig = 1009,
    Error = 1011,
    AuthenticationFailed = 4106,
    Timeout = 4107,
    Kicked = 4108,
    ChannelFull = 4109,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        self as u16
    }

    pub const ALL: [CloseCode; 10] = [
        CloseCode::Clean,
        CloseCode::GoingAway,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::TooBig,
        CloseCode::Error,
        CloseCode::AuthenticationFailed,
        CloseCode::Timeout,
        CloseCode::Kicked,
        CloseCode::ChannelFull,
    ];
}
