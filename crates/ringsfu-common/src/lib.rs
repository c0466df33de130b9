//! What the `ringsfu` server and `sfu-gateway` share, and nothing else: the Odoo SFU protocol's
//! key and JWT rules, the HTTP listener both serve their axum apps with, the API error body, the
//! caller's address behind proxies, the self-registration token, lenient setting values and
//! logging. Neither binary's other dependencies (str0m on one side, Redis on the other) are here.
//!
//! - [`auth`]: lenient base64 keys and the HS256 JWT rules.
//! - [`token`]: the bearer token and `/v1/disconnect` body checks of the HTTP API.
//! - [`api_error`]: the JSON error every HTTP route answers with.
//! - [`caller`]: the caller's address, trusting `X-Forwarded-For` only from configured proxies.
//! - [`http_listener`]: the hyper accept loop (connection limits, timeouts, bounded bodies).
//! - [`announcement`]: the token an SFU registers itself with, and the secrets derived from it.
//! - [`values`]: the lenient parsers of upstream's setting values (booleans, log levels, ranges).
//! - [`logging`]: `tracing` to stderr, text or JSON.

pub mod announcement;
pub mod api_error;
pub mod auth;
pub mod caller;
pub mod http_listener;
pub mod logging;
pub mod token;
pub mod values;
