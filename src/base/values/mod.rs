//! Values parsed from the configuration that the engine uses as they are:
//! below `config` (which parses and validates them) and below the jobs
//! and drills (which act on them), so neither has to reach into the other.

mod compression;
mod endpoint;
mod expect;
mod glob;
mod parsed;
mod rate;
mod window;

pub use compression::Compression;
pub use endpoint::Endpoint;
pub use expect::Expect;
pub use glob::root_of;
pub use parsed::{zone, FromConfig, Parsed};
pub use rate::ByteRate;
pub use window::Window;
