//! Streaming stages, each a small `AsyncRead` adapter, chained by the backup
//! and restore pipelines: `source -> Guarded -> Measure(raw) -> compress ->
//! Measure(stored) -> sink`. Memory is bounded by the buffers of each stage,
//! never by the data size.

mod checked;
mod codec;
pub mod crypt;
pub mod growing;
mod guarded;
mod measure;
mod tee;

pub use checked::{Checked, Mismatch};
pub use codec::{blocking_decoder, decoder, encoder, BlockingRead, BoxRead};
pub use guarded::{guarded, Guarded, Verdict};
pub use measure::{Measure, Measured};
pub use tee::{tee, Tee};
