//! Compression stages over async readers. zstd runs multithreaded with the
//! frame checksum on (it is off by default), so `zstd -t` alone can check an
//! artifact; gzip is flate2 underneath, readable by `gunzip`.

use crate::base::values::Compression;
use async_compression::tokio::bufread::{GzipDecoder, GzipEncoder, ZstdDecoder, ZstdEncoder};
use async_compression::zstd::CParameter;
use async_compression::Level;
use std::pin::Pin;
use tokio::io::{AsyncRead, BufReader};

/// A boxed byte stream: what flows between pipeline stages.
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;

/// Compress `inner` with `c`. `threads` (zstd only) is the number of
/// compression workers; zstd's default level here is 1: on a busy 2-core
/// host pg_dump and the server already use both cores, and level 3 costs
/// ~30% more wall time for ~1-3% smaller output on typical dumps.
pub fn encoder<R: AsyncRead + Send + 'static>(
    inner: R,
    c: Compression,
    level: Option<i32>,
    threads: u32,
) -> BoxRead {
    let buffered = BufReader::with_capacity(256 * 1024, inner);
    match c {
        Compression::Zstd => {
            let mut params = vec![CParameter::checksum_flag(true)];
            // One thread compresses inline: measured on 2 cores, zstd's
            // worker mode with a single worker was ~25% slower than inline.
            if threads > 1 {
                params.push(CParameter::nb_workers(threads));
            }
            Box::pin(ZstdEncoder::with_quality_and_params(
                buffered,
                Level::Precise(level.unwrap_or(1)),
                &params,
            ))
        }
        Compression::Gzip => Box::pin(GzipEncoder::with_quality(
            buffered,
            Level::Precise(level.unwrap_or(6)),
        )),
        Compression::None => Box::pin(buffered),
    }
}

/// Decompress `inner`, which was written with `c`.
pub fn decoder<R: AsyncRead + Send + 'static>(inner: R, c: Compression) -> BoxRead {
    let buffered = BufReader::with_capacity(256 * 1024, inner);
    match c {
        Compression::Zstd => {
            let mut d = ZstdDecoder::new(buffered);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::Gzip => {
            let mut d = GzipDecoder::new(buffered);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::None => Box::pin(buffered),
    }
}

/// A decoded stream read on a blocking thread.
pub type BlockingRead = Box<dyn std::io::Read + Send>;

/// [`decoder`] for a reader on a blocking thread: the same formats
/// (concatenated zstd frames or gzip members), without a runtime hand-off
/// per buffer. A restore's unpack leg decodes this way.
pub fn blocking_decoder<R>(inner: R, c: Compression) -> std::io::Result<BlockingRead>
where
    R: std::io::BufRead + Send + 'static,
{
    Ok(match c {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(inner)?),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(inner)),
        Compression::None => Box::new(inner),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn every_codec_round_trips() {
        let data: Vec<u8> = (0..500_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let mut enc = encoder(std::io::Cursor::new(data.clone()), c, None, 2);
            let mut packed = Vec::new();
            enc.read_to_end(&mut packed).await.unwrap();
            let mut dec = decoder(std::io::Cursor::new(packed.clone()), c);
            let mut back = Vec::new();
            dec.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, data, "{c:?}");
            // Two streams back to back read as one, both ways.
            let twice = [packed.clone(), packed].concat();
            let mut back = Vec::new();
            decoder(std::io::Cursor::new(twice.clone()), c)
                .read_to_end(&mut back)
                .await
                .unwrap();
            assert_eq!(back, [data.clone(), data.clone()].concat(), "{c:?}");
            let mut back = Vec::new();
            std::io::Read::read_to_end(
                &mut blocking_decoder(std::io::Cursor::new(twice.clone()), c).unwrap(),
                &mut back,
            )
            .unwrap();
            assert_eq!(back, [data.clone(), data.clone()].concat(), "{c:?}");
            // Damage is an error, never a short read (a stored stream has
            // no size of its own to check against).
            if c != Compression::None {
                let cut = twice[..twice.len() - 7].to_vec();
                assert!(std::io::Read::read_to_end(
                    &mut blocking_decoder(std::io::Cursor::new(cut), c).unwrap(),
                    &mut Vec::new()
                )
                .is_err());
            }
        }
    }
}
