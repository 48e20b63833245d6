//! How an artifact is compressed: chosen in the config, recorded in the
//! manifest, applied by the stream codecs.

use serde::{Deserialize, Serialize};

/// How artifacts are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd (the default): fast, multi-threaded, `zstd -d` reads it.
    #[default]
    Zstd,
    /// gzip, for hosts that only have gunzip.
    Gzip,
    /// Stored as is.
    None,
}

impl Compression {
    /// File-name suffix of a stored artifact, so `zstd -d`/`gunzip` know what it is.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Zstd => ".zst",
            Compression::Gzip => ".gz",
            Compression::None => "",
        }
    }
    /// The name as written in the config and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
}
