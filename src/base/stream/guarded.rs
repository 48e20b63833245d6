//! A reader whose end of stream is only reported once its producer has said
//! it succeeded. A pg_dump that printed output and then exited 1, or a tar
//! writer that hit an unreadable file, turns into a read error, so the
//! upload fails and no manifest is written (restic's lesson: check the exit
//! status of every stage).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;

/// The producer's verdict: `Err(message)` fails the stream at EOF.
pub type Verdict = Result<(), String>;

/// A reader that fails at its end when the process writing it failed, so
/// a stream cut short is never mistaken for a whole one.
pub struct Guarded<R> {
    inner: R,
    verdict: Option<oneshot::Receiver<Verdict>>,
    waiting: Option<Pin<Box<dyn Future<Output = Verdict> + Send>>>,
    done: Option<Verdict>,
}

/// Wrap `inner`; the producer must send its verdict on the returned sender.
pub fn guarded<R>(inner: R) -> (Guarded<R>, oneshot::Sender<Verdict>) {
    let (tx, rx) = oneshot::channel();
    (
        Guarded {
            inner,
            verdict: Some(rx),
            waiting: None,
            done: None,
        },
        tx,
    )
}

impl<R: AsyncRead + Unpin> AsyncRead for Guarded<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.done.is_none() {
            if this.waiting.is_none() {
                let before = buf.filled().len();
                match Pin::new(&mut this.inner).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) if buf.filled().len() == before => {
                        let rx = this.verdict.take();
                        this.waiting = Some(Box::pin(async move {
                            match rx {
                                Some(rx) => rx.await.unwrap_or_else(|_| {
                                    Err("producer ended without a verdict".into())
                                }),
                                None => Err("producer verdict already taken".into()),
                            }
                        }));
                    }
                    other => return other,
                }
            }
            let Some(w) = this.waiting.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match w.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(v) => {
                    this.done = Some(v);
                    this.waiting = None;
                }
            }
        }
        match &this.done {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(msg)) => Poll::Ready(Err(std::io::Error::other(msg.clone()))),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn eof_waits_for_the_verdict() {
        let (mut g, tx) = guarded(&b"data"[..]);
        tx.send(Err("pg_dump failed (exit code 1)".into())).unwrap();
        let mut v = Vec::new();
        let e = g.read_to_end(&mut v).await.unwrap_err();
        assert!(e.to_string().contains("exit code 1"));
        assert_eq!(v, b"data");

        let (mut g, tx) = guarded(&b"data"[..]);
        tx.send(Ok(())).unwrap();
        let mut v = Vec::new();
        g.read_to_end(&mut v).await.unwrap();
        // A second read after EOF stays at EOF.
        assert_eq!(g.read(&mut [0u8; 4]).await.unwrap(), 0);

        let (mut g, tx) = guarded(&b""[..]);
        drop(tx);
        assert!(g.read_to_end(&mut Vec::new()).await.is_err());
    }
}
