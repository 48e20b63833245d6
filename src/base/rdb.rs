//! What makes a Redis RDB file whole, checked as its bytes stream past: the
//! `REDIS` magic and a 4-digit format version, the EOF opcode (0xFF) right
//! before the trailer, and the trailing CRC-64 (Jones, as Redis computes
//! it) over every byte before it. A snapshot cut short or altered fails;
//! `redis-check-rdb` is not needed, and nothing is buffered but the last
//! eight bytes.

use crc::{Crc, Digest, CRC_64_REDIS};

static CRC64: Crc<u64> = Crc::<u64>::new(&CRC_64_REDIS);

/// The oldest RDB format with a trailing checksum.
const FIRST_WITH_CHECKSUM: u32 = 5;

/// What a whole RDB file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The RDB format version (`REDIS0011` is 11).
    pub version: u32,
    /// Whether it carried a checksum (`rdbchecksum no` writes zeros).
    pub checksummed: bool,
    /// Its length in bytes.
    pub bytes: u64,
}

/// Feed the file's bytes in order with [`Checker::update`], then ask
/// [`Checker::finish`].
pub struct Checker {
    digest: Digest<'static, u64>,
    head: Vec<u8>,
    /// The last (up to) eight bytes: the checksum once the stream ends.
    held: Vec<u8>,
    /// The last byte that went into the digest (must be the EOF opcode).
    last_fed: Option<u8>,
    bytes: u64,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            digest: CRC64.digest(),
            head: Vec::with_capacity(9),
            held: Vec::with_capacity(16),
            last_fed: None,
            bytes: 0,
        }
    }
}

impl Checker {
    /// The next bytes of the file.
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        if self.head.len() < 9 {
            let n = (9 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
        }
        if data.len() >= 8 {
            let (feed, keep) = data.split_at(data.len() - 8);
            let held = std::mem::take(&mut self.held);
            self.feed(&held);
            self.feed(feed);
            self.held.extend_from_slice(keep);
        } else {
            self.held.extend_from_slice(data);
            if self.held.len() > 8 {
                let extra = self.held.len() - 8;
                let out: Vec<u8> = self.held.drain(..extra).collect();
                self.feed(&out);
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if let Some(&b) = bytes.last() {
            self.digest.update(bytes);
            self.last_fed = Some(b);
        }
    }

    /// Whether the bytes fed make a whole RDB file, or what is wrong.
    pub fn finish(self) -> Result<Summary, String> {
        if self.head.len() < 9 || &self.head[..5] != b"REDIS" {
            return Err("not an RDB file (no REDIS magic at the start)".into());
        }
        let version = std::str::from_utf8(&self.head[5..9])
            .ok()
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or("the RDB version after the magic is not 4 digits")?;
        if version < FIRST_WITH_CHECKSUM {
            return Err(format!(
                "RDB version {version} is older than any Redis drctl supports (expected 5 or newer)"
            ));
        }
        let Ok(trailer) = <[u8; 8]>::try_from(self.held.as_slice()) else {
            return Err("the file ends before its 8-byte checksum".into());
        };
        if self.last_fed != Some(0xFF) {
            return Err("no EOF opcode before the checksum: the snapshot is cut short".into());
        }
        let want = u64::from_le_bytes(trailer);
        let checksummed = want != 0;
        if checksummed {
            let got = self.digest.finalize();
            if got != want {
                return Err(format!(
                    "CRC-64 mismatch: the file hashes to {got:016x}, its trailer says {want:016x}"
                ));
            }
        }
        Ok(Summary {
            version,
            checksummed,
            bytes: self.bytes,
        })
    }
}

/// Check a whole RDB file held in memory.
pub fn check(bytes: &[u8]) -> Result<Summary, String> {
    let mut c = Checker::default();
    c.update(bytes);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal RDB 11 file: magic, one aux field, an empty db 0, EOF,
    /// then its CRC-64 (little-endian), as Redis writes it.
    fn rdb() -> Vec<u8> {
        let mut b = b"REDIS0011".to_vec();
        b.extend([0xFA, 9]);
        b.extend(b"redis-ver");
        b.extend([6]);
        b.extend(b"7.0.15");
        b.extend([0xFE, 0, 0xFB, 0, 0]);
        b.push(0xFF);
        let crc = CRC64.checksum(&b);
        b.extend(crc.to_le_bytes());
        b
    }

    #[test]
    fn the_crc_is_redis_crc64_jones() {
        // The check value Redis's own crc64 self-test uses.
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn a_whole_file_passes_in_any_chunking() {
        let f = rdb();
        for chunk in [1, 3, 7, 8, 9, 64] {
            let mut c = Checker::default();
            for part in f.chunks(chunk) {
                c.update(part);
            }
            let s = c.finish().unwrap();
            assert_eq!(s.version, 11);
            assert!(s.checksummed);
            assert_eq!(s.bytes, f.len() as u64);
        }
    }

    #[test]
    fn damage_is_named() {
        let f = rdb();
        let mut flipped = f.clone();
        flipped[12] ^= 0x01;
        assert!(check(&flipped).unwrap_err().contains("CRC-64 mismatch"));
        assert!(check(&f[..f.len() - 3]).is_err());
        assert!(check(&f[..f.len() - 8]).unwrap_err().contains("EOF opcode"));
        assert!(check(b"POSTGRES0011").unwrap_err().contains("magic"));
        assert!(check(b"REDIS00x1").unwrap_err().contains("4 digits"));
        // rdbchecksum no: zeros instead of a checksum are accepted.
        let mut unchecked = f[..f.len() - 8].to_vec();
        unchecked.extend([0u8; 8]);
        assert!(!check(&unchecked).unwrap().checksummed);
    }
}
