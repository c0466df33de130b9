//! Identifiers of the core's objects.

use std::fmt;
use uuid::Uuid;

/// A channel, as the protocol names it (`uuid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub Uuid);

impl ChannelId {
    pub fn random() -> ChannelId {
        ChannelId(Uuid::new_v4())
    }

    pub fn parse(s: &str) -> Option<ChannelId> {
        Uuid::parse_str(s).ok().map(ChannelId)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// One WebSocket connection (a session of a channel), numbered by the control plane. Distinct
/// from the Odoo `session_id`, which a later connection may take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionRef(pub u64);

impl fmt::Display for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn{}", self.0)
    }
}
