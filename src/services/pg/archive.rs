//! Proof that a custom-format archive is whole.
//!
//! A custom-format archive written to a pipe carries its table of contents
//! first, so `pg_restore --list` succeeds on a dump cut short. Restoring it
//! into `/dev/null` reads every data block to its end marker and fails on a
//! truncated or malformed archive. The backup runs this alongside the upload
//! (fed by [`crate::base::stream::tee`]); `verify --deep` runs it on what it reads.

use super::PgTools;
use crate::base::error::{Error, Result};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

/// `pg_restore` reading a custom archive from stdin into nothing.
pub fn check_args() -> Vec<String> {
    vec![
        "--format=custom".into(),
        "--file=/dev/null".into(),
        "--exit-on-error".into(),
    ]
}

/// Start `pg_restore -f /dev/null` on the chunks from `rx`. The handle's
/// result is its verdict once `rx` ends; dropping the handle stops it.
pub async fn spawn_check(
    tools: &PgTools,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<AbortOnDropHandle<Result<()>>> {
    let mut child = tools
        .spawn("pg_restore", &check_args(), &[], true, false)
        .await?;
    let mut stdin = child.take_stdin();
    Ok(AbortOnDropHandle::new(tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if let Some(w) = stdin.as_mut() {
                if w.write_all(&chunk).await.is_err() {
                    stdin = None; // it gave up; its exit status says why
                }
            }
        }
        if let Some(mut w) = stdin {
            let _ = w.shutdown().await;
        }
        child.finish().await.map(|_| ()).map_err(|e| match e {
            Error::Tool { stderr, .. } => Error::Tool {
                tool: "pg_dump".into(),
                status: "its archive is incomplete".into(),
                stderr: format!("pg_restore cannot read it to its end: {stderr}"),
            },
            other => other,
        })
    })))
}
