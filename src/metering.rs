//! The meter: a tee on every metered response that finds the provider's usage wherever it
//! appears, normalises it, and times the answer, without ever slowing the client's stream.

pub mod body;
pub mod decode;
pub mod drain;
pub mod estimate;
mod fast;
pub(crate) mod json_reader;
pub mod json_scan;
pub mod measurement;
pub mod meter;
mod openai_event;
pub mod sse;
pub mod usage;

pub use body::MeteredBody;
pub use drain::Drainer;
pub use measurement::{Dialect, Measurement};
pub use meter::Meter;
