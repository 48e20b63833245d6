//! A copy of a stream for a checker that reads alongside the main consumer.
//!
//! The backup feeds pg_dump's archive both into the upload and, through
//! this, into `pg_restore -f /dev/null`, which fails on an archive that
//! ends early: completeness is proven while streaming, without a second
//! pass over the stored object. The copy channel is bounded, so the checker
//! sets the pace no more than any other stage; if it goes away early its
//! own verdict explains why, and the main stream carries on.

use bytes::Bytes;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// A reader that hands a copy of everything it reads to a second
/// consumer (the archive check), without letting it slow the first.
pub struct Tee<R> {
    inner: R,
    tx: Option<PollSender<Bytes>>,
    /// A chunk already handed to the reader whose copy is not sent yet.
    pending: Option<Bytes>,
}

/// `inner`, plus a receiver of a copy of every chunk read from it. The
/// receiver sees the end of the channel when `inner` reaches its end (or
/// the [`Tee`] is dropped: a checker then sees a truncated stream).
pub fn tee<R>(inner: R, depth: usize) -> (Tee<R>, mpsc::Receiver<Bytes>) {
    let (tx, rx) = mpsc::channel(depth.max(1));
    (
        Tee {
            inner,
            tx: Some(PollSender::new(tx)),
            pending: None,
        },
        rx,
    )
}

impl<R: AsyncRead + Unpin> AsyncRead for Tee<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(chunk) = this.pending.take() {
            if let Some(tx) = this.tx.as_mut() {
                match tx.poll_reserve(cx) {
                    Poll::Pending => {
                        this.pending = Some(chunk);
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(())) => {
                        if tx.send_item(chunk).is_err() {
                            this.tx = None;
                        }
                    }
                    Poll::Ready(Err(_)) => this.tx = None,
                }
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let got = &buf.filled()[before..];
        if got.is_empty() {
            this.tx = None; // end of stream: the copy ends too
        } else if this.tx.is_some() {
            this.pending = Some(Bytes::copy_from_slice(got));
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_copy_is_the_whole_stream_and_ends_with_it() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut t, mut rx) = tee(std::io::Cursor::new(data.clone()), 2);
        let copy = tokio::spawn(async move {
            let mut v = Vec::new();
            while let Some(c) = rx.recv().await {
                v.extend_from_slice(&c);
            }
            v
        });
        let mut main = Vec::new();
        t.read_to_end(&mut main).await.unwrap();
        drop(t);
        assert_eq!(main, data);
        assert_eq!(copy.await.unwrap(), data);
    }

    #[tokio::test]
    async fn a_checker_that_leaves_does_not_stop_the_stream() {
        let data = vec![7u8; 100_000];
        let (mut t, rx) = tee(std::io::Cursor::new(data.clone()), 1);
        drop(rx);
        let mut main = Vec::new();
        t.read_to_end(&mut main).await.unwrap();
        assert_eq!(main, data);
    }
}
