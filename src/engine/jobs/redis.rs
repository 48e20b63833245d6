//! `redis`: an RDB snapshot of a Redis server (R3's `docker exec
//! ecomweb-redis redis-cli BGSAVE` + copying `dump.rdb` by hand).
//!
//! The snapshot is fetched over the network the way `redis-cli --rdb` does:
//! drctl connects as a replica would (`AUTH`, `REPLCONF rdb-only 1`,
//! `SYNC`), the server forks, writes a consistent point-in-time RDB and
//! sends it as one `$<length>` bulk payload, which streams through the usual
//! compress → encrypt → hash → upload pipeline. Nothing is read from the
//! server's disk, so the same job works for Redis on this host, in a
//! container or on another machine, needs no access to its data directory
//! and never races the server's own `save` schedule (see ARCHITECTURE.md,
//! "Decisions"). The RDB is checked as it passes (`base::rdb`: magic,
//! version, EOF opcode, CRC-64): a snapshot cut short or altered fails the
//! run before a manifest is written.

use super::{BackupCtx, BackupOutput, Packing};
use crate::base::error::{Error, Result};
use crate::base::manifest::RedisSource;
use crate::base::rdb::{Checker, Summary};
use crate::config::RedisJob;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};

fn redis_err(what: &str, e: &impl std::fmt::Display) -> Error {
    Error::Other(crate::base::secret::redact(&format!("redis: {what}: {e}")))
}

/// One RESP command as bytes.
pub fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).into_bytes());
        out.extend(a.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

/// `field:value` lines of an `INFO` section.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
}

/// `db0:keys=3,expires=0,avg_ttl=0` lines of `INFO keyspace`, as keys per
/// database.
pub fn keyspace(info: &str) -> std::collections::BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (db, rest) = l.trim_end().split_once(':')?;
            if !db.starts_with("db") {
                return None;
            }
            let keys = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db.to_owned(), keys))
        })
        .collect()
}

/// What the server answered to `SYNC` before the payload: the payload's
/// length, or why there is none.
pub fn sync_header(line: &str) -> std::result::Result<Option<u64>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() {
        // A keep-alive newline while the server forks and writes.
        return Ok(None);
    }
    if let Some(e) = line.strip_prefix('-') {
        return Err(format!(
            "the server refused SYNC: {e} (the ACL user needs +sync and +replconf)"
        ));
    }
    match line.strip_prefix('$') {
        Some(eof) if eof.starts_with("EOF:") => {
            Err("the server sent a diskless (EOF-marked) payload, which was not asked for".into())
        }
        Some(n) => n
            .parse()
            .map(Some)
            .map_err(|_| format!("unexpected answer to SYNC: {line:?}")),
        None => Err(format!("unexpected answer to SYNC: {line:?}")),
    }
}

/// Snapshot the job's Redis server into the repository.
pub async fn backup(ctx: &BackupCtx<'_>, job: &RedisJob) -> Result<BackupOutput> {
    let url = job.connection.resolve("the Redis URL")?;
    let client = redis::Client::open(url.expose()).map_err(|e| redis_err("parsing the URL", &e))?;
    let info = client.get_connection_info().clone();
    let addr = match &info.addr {
        redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
        _ => {
            return Err(Error::Other(
                "redis: only redis://host:port is supported (no TLS or Unix socket)".into(),
            ))
        }
    };
    let limit = job.timeout;
    let within = |what: &'static str, d: Duration| {
        move |e: tokio::time::error::Elapsed| {
            redis_err(what, &format!("no answer within {d:?} ({e})"))
        }
    };
    let mut con = tokio::time::timeout(limit, client.get_multiplexed_async_connection())
        .await
        .map_err(within("connecting", limit))?
        .map_err(|e| redis_err("connecting", &e))?;
    let server: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .map_err(|e| redis_err("INFO server", &e))?;
    let version = info_field(&server, "redis_version")
        .unwrap_or("unknown")
        .to_owned();

    let (rd, wr, len) = start_sync(addr, &info.redis, limit).await?;
    tracing::info!(job = %ctx.job, bytes = len, "Redis is sending its snapshot");
    let result = Arc::new(Mutex::new(None));
    let payload = RdbPayload {
        inner: rd.take(len),
        want: len,
        seen: 0,
        checker: Some(Checker::default()),
        result: result.clone(),
        idle: Box::pin(tokio::time::sleep(limit)),
        limit,
    };
    let packing = Packing {
        compression: job.storage.compression,
        level: job.storage.compression_level,
        threads: Packing::default_threads(),
    };
    let artifact = ctx
        .store("dump.rdb", "redis_rdb", payload, packing, Some(len), true)
        .await?;
    drop(wr);
    let summary: Summary = result
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .ok_or_else(|| Error::Other("redis: the snapshot was not checked to its end".into()))?;
    let keys: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut con)
        .await
        .map_err(|e| redis_err("INFO keyspace", &e))?;
    Ok(BackupOutput {
        redis: Some(RedisSource {
            engine: "redis".into(),
            server_version: version,
            rdb_version: summary.version,
            method: "replication-sync".into(),
            keyspace: keyspace(&keys),
        }),
        artifacts: vec![artifact],
        ..Default::default()
    })
}

/// Connect as a replica would and ask for a snapshot: `AUTH` (the ACL user
/// and password of the URL), `REPLCONF rdb-only 1`, `SYNC`; the reader is
/// left at the first byte of the payload, whose length is returned.
async fn start_sync(
    addr: (String, u16),
    auth: &redis::RedisConnectionInfo,
    limit: Duration,
) -> Result<(
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
    u64,
)> {
    let within = |what: &'static str| {
        move |_| {
            redis_err(
                what,
                &format!("no answer within {}", humantime::format_duration(limit)),
            )
        }
    };
    let stream = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(within("connecting for SYNC"))?
        .map_err(|e| redis_err("connecting for SYNC", &e))?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(256 * 1024, rd);
    let mut line = String::new();
    if let Some(pass) = &auth.password {
        let cmd = match &auth.username {
            Some(user) => command(&["AUTH", user, pass]),
            None => command(&["AUTH", pass]),
        };
        wr.write_all(&cmd)
            .await
            .map_err(|e| redis_err("AUTH", &e))?;
        read_line(&mut rd, &mut line, limit).await?;
        if !line.starts_with("+OK") {
            return Err(Error::Other(format!(
                "redis: AUTH refused: {}",
                crate::base::secret::redact(line.trim_end())
            )));
        }
    }
    // Only the RDB, not the replication stream after it (Redis 7; an
    // older server answers an error and sends the stream, which is not read).
    wr.write_all(&command(&["REPLCONF", "rdb-only", "1"]))
        .await
        .map_err(|e| redis_err("REPLCONF", &e))?;
    read_line(&mut rd, &mut line, limit).await?;
    wr.write_all(&command(&["SYNC"]))
        .await
        .map_err(|e| redis_err("SYNC", &e))?;
    let len = loop {
        read_line(&mut rd, &mut line, limit).await?;
        if let Some(n) = sync_header(&line).map_err(|m| Error::Other(format!("redis: {m}")))? {
            break n;
        }
    };
    Ok((rd, wr, len))
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    rd: &mut R,
    line: &mut String,
    limit: Duration,
) -> Result<()> {
    line.clear();
    let n = tokio::time::timeout(limit, rd.read_line(line))
        .await
        .map_err(|_| {
            Error::Other(format!(
                "redis: the server sent nothing for {}",
                humantime::format_duration(limit)
            ))
        })?
        .map_err(|e| redis_err("reading the answer", &e))?;
    if n == 0 {
        return Err(Error::Other(
            "redis: the server closed the connection".into(),
        ));
    }
    Ok(())
}

/// The snapshot's bytes: exactly `want` of them, checked as an RDB file
/// (`base::rdb`) before EOF is reported, with an idle timeout (a server
/// that stops sending fails the run instead of holding it forever).
struct RdbPayload<R> {
    inner: R,
    want: u64,
    seen: u64,
    checker: Option<Checker>,
    result: Arc<Mutex<Option<Summary>>>,
    idle: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl<R: AsyncRead + Unpin> AsyncRead for RdbPayload<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "redis sent nothing for {} after {} of {} snapshot bytes",
                            humantime::format_duration(this.limit),
                            this.seen,
                            this.want
                        ),
                    )));
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    this.seen += new.len() as u64;
                    if let Some(c) = this.checker.as_mut() {
                        c.update(new);
                    }
                    let deadline = tokio::time::Instant::now() + this.limit;
                    this.idle.as_mut().reset(deadline);
                    return Poll::Ready(Ok(()));
                }
                if this.seen != this.want {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "redis closed the connection after {} of {} snapshot bytes",
                            this.seen, this.want
                        ),
                    )));
                }
                match this.checker.take().map(Checker::finish) {
                    Some(Ok(s)) => {
                        if let Ok(mut g) = this.result.lock() {
                            *g = Some(s);
                        }
                        Poll::Ready(Ok(()))
                    }
                    Some(Err(m)) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the snapshot is not a whole RDB file: {m}"),
                    ))),
                    None => Poll::Ready(Ok(())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_pieces_parse() {
        assert_eq!(
            command(&["AUTH", "pw"]),
            b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"
        );
        assert_eq!(sync_header("\n"), Ok(None));
        assert_eq!(sync_header("$12345\r\n"), Ok(Some(12345)));
        assert!(sync_header("-NOPERM this user has no permissions")
            .unwrap_err()
            .contains("+sync"));
        assert!(sync_header("$EOF:0123456789012345678901234567890123456789").is_err());
        assert!(sync_header("+FULLRESYNC x 0").is_err());
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        let ks = keyspace("# Keyspace\r\ndb0:keys=300000,expires=10,avg_ttl=0\r\ndb3:keys=7,expires=0,avg_ttl=0\r\n");
        assert_eq!(ks.get("db0"), Some(&300_000));
        assert_eq!(ks.get("db3"), Some(&7));
        assert_eq!(ks.len(), 2);
    }
}
