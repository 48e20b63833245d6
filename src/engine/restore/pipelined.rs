//! A restore that loads while the dump is still being fetched.
//!
//! `pg_restore --jobs N` needs a seekable file, so the dump is unpacked into
//! a temporary file; done naively, nothing is loaded until the last byte is
//! fetched, decrypted, decompressed, hashed and written, and the largest
//! table, last in the archive, starts last. Here the unpacking thread reads
//! the archive's structure as it writes ([`crate::base::custom_archive`])
//! and publishes how far the file is written, where the data blocks lie and
//! which one is being written. Meanwhile:
//! 1. once the table of contents is in the file, `pg_restore
//!    --section=pre-data` creates the schema;
//! 2. each block, as soon as it starts arriving, is loaded by `pg_restore
//!    --section=data --use-list` naming it, reading from its stdin the table
//!    of contents and then that block's bytes as the file grows (pg_restore
//!    finds a block in an archive without offsets by scanning forward, so
//!    the stream needs nothing in between); up to N loaders at once, small
//!    written blocks batched into one loader;
//! 3. the data entries without a block (sequence values) load from the
//!    file, and once the fetch has verified the whole object against its
//!    SHA-256, `pg_restore --section=post-data --jobs N` builds the indexes
//!    and constraints.
//!
//! This is pg_restore's own documented split of a restore into sections;
//! the result is the same database. It only runs into a database this
//! restore created (a side database or a new `--to`), which is dropped if
//! the fetch then fails its checksum: a refused restore still leaves its
//! target as it was. Archives the walker does not read fall back to
//! fetching whole, then one `pg_restore --jobs N`.

use crate::base::custom_archive::{Section, TocEntry, Walker};
use crate::base::error::{Error, Result};
use crate::services::pg::{PgTarget, PgTools};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tokio::sync::watch;

/// How far the unpacking has come, as the loaders see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacking {
    /// Bytes written to the file (visible to any reader of it).
    pub written: u64,
    /// Every entry, once the whole table of contents is written (shared:
    /// this state is cloned on every update, the list can be long).
    pub toc: Option<std::sync::Arc<Vec<TocEntry>>>,
    /// Where the first data block starts (the table of contents' end).
    pub data_start: u64,
    /// Data blocks wholly written: (entry id, start, end, data bytes).
    pub blocks: Vec<(i64, u64, u64, u64)>,
    /// The block being written: (entry id, start).
    pub open: Option<(i64, u64)>,
    /// The walker could not follow the archive: load only when it is whole.
    pub opaque: bool,
}

/// The unpacking side, run on a blocking thread by the fetch (so that
/// decoding and writing overlap): write `r` into `path`, publishing on `tx`
/// after each write how far the file is written and where its blocks lie.
pub fn unpack(r: &mut dyn Read, path: &Path, tx: &watch::Sender<Unpacking>) -> Result<()> {
    let io = |e: std::io::Error| Error::io(format!("writing {}", path.display()), e);
    let mut f = std::fs::File::create(path).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut walker = Some(Walker::new());
    let mut written = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The fetch's own result says what went wrong upstream.
            Err(e) => return Err(Error::io("reading the decoded dump", e)),
        };
        f.write_all(&buf[..n]).map_err(io)?;
        written += n as u64;
        let walked = walker.as_mut().map(|w| w.feed(&buf[..n]).is_ok());
        tx.send_modify(|u| {
            u.written = written;
            match (walked, walker.as_ref()) {
                (Some(true), Some(w)) => {
                    if u.toc.is_none() {
                        if let Some(start) = w.data_start() {
                            u.toc = Some(std::sync::Arc::new(w.toc().to_vec()));
                            u.data_start = start;
                        }
                    }
                    let known = u.blocks.len();
                    u.blocks.extend(
                        w.blocks()[known..]
                            .iter()
                            .map(|b| (b.dump_id, b.start, b.end, b.data_bytes)),
                    );
                    u.open = w.open_block();
                }
                (Some(false), _) => {
                    u.opaque = true;
                    u.open = None;
                }
                _ => {}
            }
        });
        if walked == Some(false) {
            walker = None;
        }
    }
    f.flush().map_err(io)?;
    Ok(())
}

/// Largest batch of small blocks one loader takes (bytes of data): many
/// small tables in one pg_restore, not one process each.
const BATCH_BYTES: u64 = 64 << 20;

/// What is running, for the scheduler.
/// Each loader's result is the data entries it loaded.
type Loading<'a> = FuturesUnordered<
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<i64>>> + Send + 'a>>,
>;

/// Post-data entries that can be built as soon as their tables' data is
/// in, while other tables still load (as `pg_restore --jobs` does): indexes
/// and primary key, unique and exclusion constraints whose every
/// dependency is a schema object created before the data or a table whose
/// data entries have all finished loading, with at least one such table.
/// Anything else (foreign keys, triggers, rules, materialized view data,
/// indexes of partitioned tables) waits for the final post-data pass.
pub fn early_post_data(
    toc: &[TocEntry],
    loaded: &HashSet<i64>,
    started: &HashSet<i64>,
) -> Vec<i64> {
    let mut data_of: HashMap<i64, Vec<i64>> = HashMap::new();
    for e in toc.iter().filter(|e| e.desc == "TABLE DATA") {
        for d in &e.deps {
            data_of.entry(*d).or_default().push(e.id);
        }
    }
    let section: HashMap<i64, Section> = toc.iter().map(|e| (e.id, e.section)).collect();
    toc.iter()
        .filter(|e| e.section == Section::PostData && !started.contains(&e.id))
        .filter(|e| e.desc == "INDEX" || e.desc == "CONSTRAINT")
        .filter(|e| {
            let mut with_data = false;
            let ready = e.deps.iter().all(|d| match data_of.get(d) {
                Some(data) => {
                    with_data = true;
                    data.iter().all(|id| loaded.contains(id))
                }
                None => section.get(d) == Some(&Section::PreData),
            });
            ready && with_data
        })
        .map(|e| e.id)
        .collect()
}

/// The next loader's blocks, from index `next` of the blocks in stream
/// order (the written ones, then the open one): contiguous written blocks
/// up to [`BATCH_BYTES`] (a big one alone), or the open block alone. Returns
/// the entry ids and the stream range's start.
pub fn next_batch(u: &Unpacking, next: usize) -> Option<(Vec<i64>, u64)> {
    if next >= u.blocks.len() {
        return match u.open {
            Some((id, start)) if next == u.blocks.len() => Some((vec![id], start)),
            _ => None,
        };
    }
    let start = u.blocks[next].1;
    let mut ids = Vec::new();
    let mut bytes = 0u64;
    for &(id, _, _, data) in &u.blocks[next..] {
        if !ids.is_empty() && (bytes + data > BATCH_BYTES) {
            break;
        }
        ids.push(id);
        bytes += data;
    }
    Some((ids, start))
}

/// Restore `file` into `into` while `fetch` (which writes it and reports on
/// `rx`) is still running. `fetch` resolves once the whole object is
/// verified; the final passes (blockless data entries, the rest of
/// post-data) wait for that and for every loader.
pub async fn restore<F>(
    tools: &PgTools,
    into: &PgTarget,
    jobs: usize,
    file: &Path,
    fetch: F,
    mut rx: watch::Receiver<Unpacking>,
) -> Result<()>
where
    F: std::future::Future<Output = Result<()>> + Send,
{
    let jobs = jobs.max(1);
    let mut fetch = Box::pin(fetch);
    let mut fetched = false;
    // The unpacking thread has ended (its sender is gone): no more news.
    let mut closed = false;
    let toc = wait_for_toc(&mut fetch, &mut fetched, &mut closed, &mut rx).await?;
    let Some(toc) = toc else {
        if !fetched {
            fetch.await?;
        }
        return pg_restore(
            tools,
            into,
            vec![format!("--jobs={jobs}")],
            None,
            Some(file),
        )
        .await;
    };

    tracing::debug!("table of contents written: pre-data");
    if let Err(e) = pg_restore(
        tools,
        into,
        vec!["--section=pre-data".into()],
        None,
        Some(file),
    )
    .await
    {
        return Err(explain(e, fetch, fetched).await);
    }

    let mut plan = Plan {
        tools,
        into,
        file,
        jobs,
        toc,
        dirty: false,
        launched: 0,
        taken: HashSet::new(),
        loaded: HashSet::new(),
        early: HashSet::new(),
    };
    let mut loading: Loading<'_> = FuturesUnordered::new();
    loop {
        let u = rx.borrow_and_update().clone();
        plan.launch(&u, &mut loading, &rx);
        let all_launched = u.opaque || (plan.launched == u.blocks.len() && u.open.is_none());
        if fetched && loading.is_empty() && all_launched {
            break;
        }
        tokio::select! {
            r = &mut fetch, if !fetched => { r?; fetched = true; }
            Some(r) = loading.next(), if !loading.is_empty() => match r {
                Ok(ids) => {
                    plan.dirty = true;
                    plan.loaded.extend(ids);
                }
                Err(e) => {
                    drop(loading);
                    return Err(explain(e, fetch, fetched).await);
                }
            },
            changed = rx.changed(), if !closed => closed = changed.is_err(),
        }
    }
    plan.finish().await
}

/// What the scheduler has started and what has finished.
struct Plan<'a> {
    tools: &'a PgTools,
    into: &'a PgTarget,
    file: &'a Path,
    jobs: usize,
    toc: std::sync::Arc<Vec<TocEntry>>,
    /// A loader finished since the last look for early post-data entries.
    dirty: bool,
    /// Blocks handed to loaders, counted in stream order.
    launched: usize,
    /// Data entries handed to loaders, and those whose loader finished.
    taken: HashSet<i64>,
    loaded: HashSet<i64>,
    /// Post-data entries already built.
    early: HashSet<i64>,
}

impl<'a> Plan<'a> {
    /// Start loaders while there is room: blocks that have started
    /// arriving first (the data is the critical path), then the indexes
    /// and constraints of tables whose data is in.
    fn launch(
        &mut self,
        u: &Unpacking,
        loading: &mut Loading<'a>,
        rx: &watch::Receiver<Unpacking>,
    ) {
        while !u.opaque && loading.len() < self.jobs {
            let Some((ids, start)) = next_batch(u, self.launched) else {
                break;
            };
            self.launched += ids.len();
            self.taken.extend(ids.iter().copied());
            let (tools, into, file) = (self.tools, self.into, self.file);
            loading.push(Box::pin(stream_load(
                tools,
                into,
                file,
                u.data_start,
                ids,
                start,
                rx.clone(),
            )));
        }
        // Only a finished load can make an index ready.
        if loading.len() < self.jobs && std::mem::take(&mut self.dirty) {
            let ready = early_post_data(&self.toc, &self.loaded, &self.early);
            if !ready.is_empty() {
                tracing::debug!(?ready, "indexes and constraints of loaded tables");
                self.early.extend(ready.iter().copied());
                let (tools, into, file) = (self.tools, self.into, self.file);
                loading.push(Box::pin(async move {
                    let section = vec!["--section=post-data".into()];
                    pg_restore(tools, into, section, Some(&ready), Some(file)).await?;
                    Ok(Vec::new())
                }));
            }
        }
    }

    /// After the verified fetch and every loader.
    async fn finish(self) -> Result<()> {
        finish(
            self.tools,
            self.into,
            self.file,
            self.jobs,
            &self.toc,
            (&self.taken, &self.early),
        )
        .await
    }
}

/// After the verified fetch and every loader: the data entries no loader
/// took (sequence values; every block of an archive the walker gave up
/// on), then the rest of post-data. `file` needs to hold only the table of
/// contents unless blocks are left (pg_restore reads no data for these).
pub(super) async fn finish(
    tools: &PgTools,
    into: &PgTarget,
    file: &Path,
    jobs: usize,
    toc: &[TocEntry],
    (taken, early): (&HashSet<i64>, &HashSet<i64>),
) -> Result<()> {
    tracing::debug!("fetched and loaded: the rest of the data, then post-data");
    let ids = |skip: &HashSet<i64>| -> Vec<i64> {
        toc.iter()
            .map(|e| e.id)
            .filter(|id| !skip.contains(id))
            .collect()
    };
    let data = vec!["--section=data".into()];
    pg_restore(tools, into, data, Some(&ids(taken)), Some(file)).await?;
    let post = vec!["--section=post-data".into(), format!("--jobs={jobs}")];
    pg_restore(tools, into, post, Some(&ids(early)), Some(file)).await
}

/// Wait for the table of contents to be written (its entry ids), or for
/// the end of an archive the walker cannot read (`None`).
async fn wait_for_toc<F>(
    fetch: &mut std::pin::Pin<Box<F>>,
    fetched: &mut bool,
    closed: &mut bool,
    rx: &mut watch::Receiver<Unpacking>,
) -> Result<Option<std::sync::Arc<Vec<TocEntry>>>>
where
    F: std::future::Future<Output = Result<()>>,
{
    loop {
        let (opaque, toc) = {
            let u = rx.borrow_and_update();
            (u.opaque, u.toc.clone())
        };
        if opaque {
            return Ok(None);
        }
        if toc.is_some() || *fetched {
            return Ok(toc);
        }
        tokio::select! {
            r = fetch.as_mut() => { r?; *fetched = true; }
            changed = rx.changed(), if !*closed => *closed = changed.is_err(),
        }
    }
}

/// A loader failed: if the fetch has not finished, its verdict comes
/// first (a damaged object explains whatever pg_restore met in it).
pub(super) async fn explain<F>(e: Error, fetch: std::pin::Pin<Box<F>>, fetched: bool) -> Error
where
    F: std::future::Future<Output = Result<()>>,
{
    if fetched {
        return e;
    }
    match fetch.await {
        Err(damaged) => damaged,
        Ok(()) => e,
    }
}

/// Load the blocks `ids` (contiguous in the stream from `start`) by one
/// `pg_restore --section=data` reading the archive from its stdin: the
/// table of contents, then the blocks' bytes as the file grows, up to the
/// end of the last of them. pg_restore finds each block by scanning
/// forward, so the stream needs nothing in between.
async fn stream_load(
    tools: &PgTools,
    into: &PgTarget,
    file: &Path,
    data_start: u64,
    ids: Vec<i64>,
    start: u64,
    rx: watch::Receiver<Unpacking>,
) -> Result<Vec<i64>> {
    let last = ids.last().copied().unwrap_or_default();
    let (listing, list_arg) = list_file(&ids)?;
    let (env, _passfile) = tools.env_for(into)?;
    let mut args = restore_args(into);
    args.extend(["--section=data".into(), list_arg]);
    tracing::debug!(?ids, start, "loading while fetching");
    let mut child = tools.spawn("pg_restore", &args, &env, true, false).await?;
    let stdin = child
        .take_blocking_stdin()
        .ok_or_else(|| Error::Other("pg_restore has no stdin on this host".into()))?
        .map_err(|e| Error::io("taking pg_restore's stdin", e))?;
    let range = Feed {
        file: file.to_path_buf(),
        data_start,
        start,
        last,
    };
    let fed = tokio::task::spawn_blocking(move || range.copy_into(stdin, rx))
        .await
        .map_err(|e| Error::task("feeding pg_restore", e))
        .and_then(|r| r);
    let finished = child.finish().await;
    drop(listing);
    tracing::debug!(?ids, "loaded");
    finished?;
    fed.map(|()| ids)
}

/// What one loader is fed from the file being written: its table of
/// contents (`..data_start`), then from `start` to the end of block `last`.
struct Feed {
    file: PathBuf,
    data_start: u64,
    start: u64,
    last: i64,
}

impl Feed {
    /// Copy the range into `stdin` as the file grows, on a blocking thread
    /// in 1 MiB pieces: a write sleeps in the kernel while pg_restore
    /// catches up, instead of a runtime wake-up per 4 KiB it reads. Closing
    /// `stdin` (by returning) is pg_restore's end of input. A pg_restore
    /// that stops reading ends the feed quietly: its exit says why.
    fn copy_into(self, mut stdin: std::fs::File, mut rx: watch::Receiver<Unpacking>) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let io = |e: std::io::Error| Error::io(format!("reading {}", self.file.display()), e);
        let mut f = std::fs::File::open(&self.file).map_err(io)?;
        let mut buf = vec![0u8; 1 << 20];
        // Copy `n` bytes from where `f` is; false if pg_restore is gone.
        let mut copy = |f: &mut std::fs::File, mut n: u64| -> Result<bool> {
            while n > 0 {
                let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                let got = match f.read(&mut buf[..want]) {
                    Ok(0) => {
                        return Err(Error::Other("the dump file is shorter than written".into()))
                    }
                    Ok(got) => got,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io(e)),
                };
                match stdin.write_all(&buf[..got]) {
                    Ok(()) => n -= got as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
                    Err(e) => return Err(Error::io("writing to pg_restore", e)),
                }
            }
            Ok(true)
        };
        if !copy(&mut f, self.data_start)? {
            return Ok(());
        }
        f.seek(SeekFrom::Start(self.start)).map_err(io)?;
        let mut pos = self.start;
        loop {
            let (done, written, opaque) = {
                let u = rx.borrow_and_update();
                let done = u.blocks.iter().rev().find(|b| b.0 == self.last);
                (done.map(|b| b.2), u.written, u.opaque)
            };
            if done == Some(pos) {
                return Ok(());
            }
            let end = done.unwrap_or(written).max(pos);
            if end == pos {
                if opaque || futures::executor::block_on(rx.changed()).is_err() {
                    return Err(Error::Other(
                        "the dump ended before the block being loaded".into(),
                    ));
                }
                continue;
            }
            if !copy(&mut f, end - pos)? {
                return Ok(());
            }
            pos = end;
        }
    }
}

/// A pg_restore list naming these entries (one id per line: pg_restore
/// reads the number at the start of each line).
fn list(ids: &[i64]) -> String {
    ids.iter().map(|id| format!("{id}\n")).collect()
}

/// The list as an unlinked file the child inherits (`/dev/fd/N`), since
/// its stdin carries the archive: nothing to clean up after a crash.
pub(super) fn list_file(ids: &[i64]) -> Result<(std::fs::File, String)> {
    let mut f = tempfile::tempfile().map_err(|e| Error::io("creating a pg_restore list", e))?;
    f.write_all(list(ids).as_bytes())
        .and_then(|()| f.flush())
        .map_err(|e| Error::io("writing a pg_restore list", e))?;
    use std::os::fd::AsRawFd;
    let arg = format!("--use-list=/dev/fd/{}", f.as_raw_fd());
    Ok((f, arg))
}

/// What every pg_restore into `into` is told: stop at the first error,
/// never prompt, and the database (the rest of the connection comes from
/// the environment).
pub(super) fn restore_args(into: &PgTarget) -> Vec<String> {
    vec![
        "--exit-on-error".to_string(),
        "--no-password".into(),
        format!("--dbname={}", into.database),
    ]
}

/// One `pg_restore` of `file` into `into` with `extra` arguments and,
/// when given, a list of the entries to restore.
pub(super) async fn pg_restore(
    tools: &PgTools,
    into: &PgTarget,
    extra: Vec<String>,
    list_of: Option<&[i64]>,
    file: Option<&Path>,
) -> Result<()> {
    let (env, _passfile) = tools.env_for(into)?;
    let mut args = restore_args(into);
    args.extend(extra);
    let listing = match list_of {
        Some(ids) => {
            let (f, arg) = list_file(ids)?;
            args.push(arg);
            Some(f)
        }
        None => None,
    };
    if let Some(f) = file {
        args.push(PathBuf::from(f).display().to_string());
    }
    let child = tools.spawn("pg_restore", &args, &env, false, false).await?;
    let done = child.finish().await.map(|_| ());
    drop(listing);
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_names_one_entry_per_line() {
        assert_eq!(list(&[3366, 12]), "3366\n12\n");
        assert_eq!(list(&[]), "");
    }

    fn at(blocks: &[(i64, u64)], open: Option<(i64, u64)>) -> Unpacking {
        Unpacking {
            blocks: blocks
                .iter()
                .scan(100u64, |pos, &(id, data)| {
                    let start = *pos;
                    *pos += data + 10;
                    Some((id, start, *pos, data))
                })
                .collect(),
            open,
            ..Default::default()
        }
    }

    fn entry(id: i64, desc: &str, section: Section, deps: &[i64]) -> TocEntry {
        TocEntry {
            id,
            desc: desc.into(),
            section,
            deps: deps.to_vec(),
        }
    }

    #[test]
    fn indexes_and_keys_of_loaded_tables_are_built_early_and_nothing_else() {
        use Section::{Data, PostData, PreData};
        let toc = vec![
            entry(1, "SCHEMA", PreData, &[]),
            entry(2, "TABLE", PreData, &[1]),
            entry(3, "TABLE", PreData, &[1]),
            entry(4, "TABLE", PreData, &[1]), // partitioned: no data of its own
            entry(5, "FUNCTION", PreData, &[1]),
            entry(6, "TABLE DATA", Data, &[2]),
            entry(7, "TABLE DATA", Data, &[3]),
            entry(8, "INDEX", PostData, &[2]),
            entry(9, "CONSTRAINT", PostData, &[2]),
            entry(10, "INDEX", PostData, &[3, 5]), // an expression index
            entry(11, "FK CONSTRAINT", PostData, &[2, 3, 9]),
            entry(12, "INDEX", PostData, &[4]),
            entry(13, "TRIGGER", PostData, &[2]),
            entry(14, "INDEX", PostData, &[2, 9]), // after another post-data entry
            entry(15, "COMMENT", Section::None, &[8]),
        ];
        let set = |ids: &[i64]| ids.iter().copied().collect::<HashSet<i64>>();
        assert_eq!(
            early_post_data(&toc, &set(&[]), &set(&[])),
            Vec::<i64>::new()
        );
        assert_eq!(early_post_data(&toc, &set(&[6]), &set(&[])), [8, 9]);
        assert_eq!(early_post_data(&toc, &set(&[6]), &set(&[8])), [9]);
        assert_eq!(early_post_data(&toc, &set(&[6, 7]), &set(&[8, 9])), [10]);
        assert_eq!(
            early_post_data(&toc, &set(&[6, 7]), &set(&[8, 9, 10])),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn batches_take_small_written_blocks_together_and_big_or_open_ones_alone() {
        const MB: u64 = 1 << 20;
        let u = at(
            &[(1, MB), (2, 2 * MB), (3, 100 * MB), (4, MB)],
            Some((5, 900 * MB)),
        );
        assert_eq!(next_batch(&u, 0), Some((vec![1, 2], 100)));
        assert_eq!(next_batch(&u, 2).map(|b| b.0), Some(vec![3]));
        assert_eq!(next_batch(&u, 3).map(|b| b.0), Some(vec![4]));
        // The open block, once every written one is taken, streams alone.
        assert_eq!(next_batch(&u, 4), Some((vec![5], 900 * MB)));
        assert_eq!(next_batch(&u, 5), None);
        // Nothing written and nothing open yet.
        assert_eq!(next_batch(&at(&[], None), 0), None);
    }
}
