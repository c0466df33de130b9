//! The mediasoup object model on the wire: router capabilities, producer parameters, device
//! capabilities and consumer parameters. Pure functions over JSON; no I/O.

pub mod caps;
pub mod consumer_params;
mod h264;
pub mod producer_params;

pub use caps::{Mime, RouterCaps};
pub use consumer_params::{ConsumerParams, DeviceCaps};
pub use producer_params::ProducerParams;
