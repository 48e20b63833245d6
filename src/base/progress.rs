//! Progress counters the engine updates and the CLI polls to draw a bar.
//! Lock-free so the hot streaming path pays one atomic add per buffer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Byte counters a long operation updates and the CLI polls for its
/// progress bar (the library never writes to the terminal).
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes through the current phase.
    pub bytes: AtomicU64,
    /// Expected total for the current phase, 0 when unknown.
    pub total: AtomicU64,
    phase: Mutex<String>,
    /// Time spent decrypting and decompressing (overlaps the download: the
    /// stages stream), for drill timings.
    decode_nanos: AtomicU64,
}

impl Progress {
    /// A fresh counter to share between the engine and the CLI.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Start a phase (`fetch`, `restore`, ...) expecting `total` bytes.
    pub fn set_phase(&self, phase: &str, total: u64) {
        *self
            .phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = phase.to_owned();
        self.total.store(total, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
    }
    /// The current phase's name.
    pub fn phase(&self) -> String {
        self.phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
    /// Count time spent decrypting and decompressing.
    pub fn add_decode_time(&self, d: std::time::Duration) {
        self.decode_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    /// Time spent decrypting and decompressing so far.
    pub fn decode_seconds(&self) -> f64 {
        self.decode_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
    /// Count `n` more bytes in the current phase.
    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}
