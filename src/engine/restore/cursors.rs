//! A restore from a repository on this host in which every loader reads
//! the archive itself.
//!
//! [`super::pipelined`] decodes the dump once into a temporary file that
//! its loaders read back. When the stored object is a file on this host,
//! decoding it again is cheaper than that copy: writing 0.8 GB into fresh
//! page cache cost 2 CPU seconds on the 2-core bench host (after the cache
//! was dropped, 3.6 s for `dd` alone), while zstd decodes it in 0.5 s. So
//! here each of the N loader slots is a *cursor*: its own decoder over the
//! stored file, on its own thread, walking the archive
//! ([`crate::base::custom_archive`]). A cursor claims a *run* of data
//! blocks, decodes forward (discarding) to it and writes the table of
//! contents and then the run's bytes straight into the stdin of a
//! `pg_restore --section=data --use-list` naming it. The largest run goes
//! first, as `pg_restore --jobs` orders it, which a single stream in
//! archive order cannot do.
//!
//! Meanwhile the stored bytes are hashed once, from start to end, and that
//! verdict rules as in the pipelined restore: a mismatch drops the
//! database this restore created. Only the table of contents is written to
//! disk: the schema, the blockless data entries and post-data are restored
//! from it (pg_restore reads no data for those).

use super::pipelined::{early_post_data, explain, finish, list_file, pg_restore, restore_args};
use crate::base::custom_archive::{ArchiveError, DataEntry, TocEntry, Walker};
use crate::base::error::{Error, Result};
use crate::base::manifest::Artifact;
use crate::base::progress::Progress;
use crate::base::stream::BlockingRead;
use crate::services::keys::Keys;
use crate::services::pg::{PgTarget, PgTools};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Largest run of small blocks (by the manifest's table sizes) one loader
/// takes: many small tables in one pg_restore, not one process each.
const RUN_BYTES: u64 = 64 << 20;

/// The size up to which blocks share a loader: [`RUN_BYTES`], or less in
/// a small database, so that its data still spreads over the `jobs`
/// loaders (a quarter of each one's share).
pub fn run_limit(total: u64, jobs: usize) -> u64 {
    RUN_BYTES.min(total / (4 * jobs.max(1) as u64))
}

/// Bytes a cursor decodes at a time (a block header is 6 bytes, so a
/// block's start is always in the current piece or the one before).
const PIECE: usize = 1 << 20;

/// Contiguous data blocks one loader takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Index of its first block in the archive's data (stream order).
    pub first: usize,
    /// The blocks' entry ids, in stream order.
    pub ids: Vec<i64>,
    /// Their expected size; `None` when one is unknown.
    pub bytes: Option<u64>,
}

/// Group the data blocks (in stream order, with the size expected of each)
/// into runs: blocks of known size together up to `limit` bytes, a block
/// of unknown or larger size alone.
pub fn plan_runs(blocks: &[(i64, Option<u64>)], limit: u64) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (i, &(id, size)) in blocks.iter().enumerate() {
        let joins = match (runs.last(), size) {
            (Some(r), Some(s)) => r.bytes.is_some_and(|b| b + s <= limit && b < limit),
            _ => false,
        };
        match runs.last_mut() {
            Some(r) if joins => {
                r.ids.push(id);
                r.bytes = r.bytes.zip(size).map(|(b, s)| b + s);
            }
            _ => runs.push(Run {
                first: i,
                ids: vec![id],
                bytes: size,
            }),
        }
    }
    runs
}

/// The runs of an archive's data entries (in archive order), sized by
/// the manifest's table sizes (`(schema, name)`; other entries, such as
/// large objects, have no known size).
pub fn runs_of(
    entries: &[DataEntry],
    sizes: &std::collections::HashMap<(String, String), u64>,
    jobs: usize,
) -> Vec<Run> {
    let blocks: Vec<(i64, Option<u64>)> = entries
        .iter()
        .map(|e| {
            let key = (e.namespace.clone(), e.tag.clone());
            let size = (e.desc == "TABLE DATA")
                .then(|| sizes.get(&key).copied())
                .flatten();
            (e.dump_id, size)
        })
        .collect();
    let total = blocks.iter().filter_map(|b| b.1).sum();
    plan_runs(&blocks, run_limit(total, jobs))
}

/// The run cursor `me` takes next, given where every cursor is (the index
/// of the first block it can still reach; `usize::MAX` for one that has
/// stopped). A cursor can only go forward. The rearmost cursor takes the
/// nearest unclaimed run, so that nothing is left behind every cursor;
/// the others take the largest one ahead (unknown size counts as largest,
/// the nearest among equals), as `pg_restore --jobs` starts the largest
/// tables first.
pub fn pick(runs: &[Run], claimed: &[bool], at: &[usize], me: usize) -> Option<usize> {
    let here = at[me];
    let open = |k: &usize| !claimed[*k] && runs[*k].first >= here;
    let rearmost = at
        .iter()
        .enumerate()
        .all(|(other, &pos)| other == me || pos > here || (pos == here && other > me));
    let mut ahead = (0..runs.len()).filter(open);
    if rearmost {
        return ahead.next();
    }
    ahead.max_by_key(|&k| (runs[k].bytes.unwrap_or(u64::MAX), std::cmp::Reverse(k)))
}

/// One decoder over the stored object, walking the archive as it goes.
pub struct Cursor {
    reader: BlockingRead,
    /// Where the time spent decoding is counted (a drill's phase).
    progress: Arc<Progress>,
    walker: Walker,
    /// The piece before the current one, and where it starts.
    prev: (Vec<u8>, u64),
    /// The current piece, and where it starts.
    cur: (Vec<u8>, u64),
}

impl Cursor {
    /// A cursor at the start of the object at `path`.
    pub fn open(
        path: &Path,
        artifact: &Artifact,
        keys: &Keys,
        progress: Arc<Progress>,
    ) -> Result<Self> {
        let reader = super::fetch::open_blocking(path, artifact, keys)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Ok(Self {
            reader,
            progress,
            walker: Walker::new(),
            prev: (Vec::new(), 0),
            cur: (Vec::new(), 0),
        })
    }

    /// Decode the next piece and walk it; false at the end of the object.
    fn advance(&mut self) -> Result<bool> {
        let at = self.cur.1 + self.cur.0.len() as u64;
        let mut piece = std::mem::take(&mut self.prev.0);
        piece.resize(PIECE, 0);
        let mut filled = 0;
        let t = std::time::Instant::now();
        while filled < PIECE {
            match self.reader.read(&mut piece[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The hashing side's verdict explains a damaged object.
                Err(e) => return Err(Error::io("decoding the dump", e)),
            }
        }
        self.progress.add_decode_time(t.elapsed());
        piece.truncate(filled);
        self.walker.feed(&piece).map_err(walk_error)?;
        self.prev = std::mem::replace(&mut self.cur, (piece, at));
        Ok(filled > 0)
    }

    /// Read the header and table of contents: their bytes, or `None` for
    /// an archive the walker does not read.
    pub fn table_of_contents(&mut self) -> Result<Option<Vec<u8>>> {
        let mut head = Vec::new();
        loop {
            match self.advance() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::Other(
                        "the dump ends in its table of contents".into(),
                    ))
                }
                Err(Error::Other(m)) if m.starts_with(UNSUPPORTED) => return Ok(None),
                Err(e) => return Err(e),
            }
            head.extend_from_slice(&self.cur.0);
            if let Some(start) = self.walker.data_start() {
                head.truncate(usize::try_from(start).unwrap_or(usize::MAX));
                return Ok(Some(head));
            }
        }
    }

    /// The entry ids and kinds of the table of contents, once read.
    pub fn toc(&self) -> &[TocEntry] {
        self.walker.toc()
    }

    /// The entries with a data block, in archive order.
    pub fn data_entries(&self) -> &[DataEntry] {
        self.walker.entries()
    }

    /// The first block whose start is still in memory (or not reached).
    fn reachable(&self) -> usize {
        let blocks = self.walker.blocks();
        let lost = blocks.partition_point(|b| b.start < self.prev.1);
        match self.walker.open_block() {
            Some((_, start)) if lost == blocks.len() && start < self.prev.1 => lost + 1,
            _ => lost,
        }
    }

    /// Where block `i` starts, once its header has passed (with its id).
    fn start_of(&self, i: usize) -> Option<(i64, u64)> {
        let blocks = self.walker.blocks();
        match blocks.get(i) {
            Some(b) => Some((b.dump_id, b.start)),
            None if i == blocks.len() => self.walker.open_block(),
            None => None,
        }
    }

    /// Write the stream's bytes `from..to` (in the last two pieces) to `w`.
    fn write(&self, from: u64, to: u64, w: &mut impl Write) -> std::io::Result<()> {
        for (piece, at) in [&self.prev, &self.cur] {
            let end = at + piece.len() as u64;
            let (a, b) = (from.max(*at), to.min(end));
            if a < b {
                // In bounds: `at <= a < b <= end`.
                w.write_all(&piece[(a - at) as usize..(b - at) as usize])?;
            }
        }
        Ok(())
    }

    /// Decode on to `run` and write its blocks to `w`, checking that they
    /// are the entries planned. Ok(false) if `w` closed (the loader exited:
    /// its exit says why).
    fn feed(&mut self, run: &Run, w: &mut impl Write, stop: &CancellationToken) -> Result<bool> {
        let last = run.first + run.ids.len() - 1;
        let mut sent: Option<u64> = None;
        loop {
            if stop.is_cancelled() {
                return Err(Error::Other("stopped".into()));
            }
            let cur_end = self.cur.1 + self.cur.0.len() as u64;
            let start = match sent {
                Some(s) => Some(s),
                None => self.start_of(run.first).map(|(_, s)| s),
            };
            if let Some(from) = start {
                for (k, id) in run.ids.iter().enumerate() {
                    match self.start_of(run.first + k) {
                        Some((got, _)) if got != *id => {
                            return Err(Error::Other(format!(
                                "the dump's data blocks are not in the order of its table of contents (entry {got} where {id} was expected)"
                            )))
                        }
                        _ => {}
                    }
                }
                let end = self.walker.blocks().get(last).map(|b| b.end);
                let to = end.unwrap_or(cur_end).min(cur_end);
                match self.write(from, to, w) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
                    Err(e) => return Err(Error::io("writing to pg_restore", e)),
                }
                sent = Some(to);
                if end == Some(to) {
                    return Ok(true);
                }
            }
            if !self.advance()? {
                return Err(Error::Other(
                    "the dump ended before the block being loaded".into(),
                ));
            }
        }
    }
}

/// Prefix of the error for an archive the walker does not read.
const UNSUPPORTED: &str = "not a walkable archive: ";

fn walk_error(e: ArchiveError) -> Error {
    match e {
        ArchiveError::Unsupported(_) => Error::Other(format!("{UNSUPPORTED}{e}")),
        other => Error::Other(format!("reading the dump: {other}")),
    }
}

/// What a cursor thread reports.
enum Event {
    /// A run's entries are loaded.
    Loaded(Vec<i64>),
    /// The cursor stopped: nothing left for it, or an error.
    Ended(Result<()>),
}

/// What the cursor threads share.
struct Shared {
    runs: Vec<Run>,
    /// Which runs are taken, and where each cursor is.
    claims: Mutex<(Vec<bool>, Vec<usize>)>,
    toc: Vec<u8>,
    stop: CancellationToken,
    tools: PgTools,
    into: PgTarget,
    object: PathBuf,
    artifact: Artifact,
    keys: Keys,
    progress: Arc<Progress>,
    runtime: tokio::runtime::Handle,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
}

impl Shared {
    fn claim(&self, me: usize, at: usize) -> Option<usize> {
        let mut guard = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (claimed, positions) = &mut *guard;
        positions[me] = at;
        let k = pick(&self.runs, claimed, positions, me);
        match k {
            Some(k) => claimed[k] = true,
            None => positions[me] = usize::MAX,
        }
        k
    }

    /// How many runs no cursor took.
    fn unclaimed(&self) -> usize {
        let claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        claims.0.iter().filter(|c| !**c).count()
    }

    /// Cursor `me`'s thread: claim runs and load them until none is left.
    fn work(&self, me: usize, cursor: Option<Cursor>) -> Result<()> {
        let mut c = match cursor {
            Some(c) => c,
            None => self.fresh()?,
        };
        loop {
            while let Some(k) = self.claim(me, c.reachable()) {
                let run = &self.runs[k];
                self.load(&mut c, run)?;
                let _ = self.events.send(Event::Loaded(run.ids.clone()));
            }
            if !self.stranded(me) {
                return Ok(());
            }
            // Runs every cursor has passed (positions are only updated at
            // a claim, so a rare race can leave some): start again.
            c = self.fresh()?;
        }
    }

    /// A new cursor past the table of contents.
    fn fresh(&self) -> Result<Cursor> {
        let mut c = Cursor::open(
            &self.object,
            &self.artifact,
            &self.keys,
            self.progress.clone(),
        )?;
        c.table_of_contents()?
            .ok_or_else(|| Error::Other("the dump cannot be walked".into()))?;
        Ok(c)
    }

    /// The last cursor to stop, with runs left unclaimed: it goes back to
    /// the start to load them.
    fn stranded(&self, me: usize) -> bool {
        let mut guard = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (claimed, positions) = &mut *guard;
        let last = positions.iter().all(|&p| p == usize::MAX);
        let left = claimed.iter().any(|c| !c);
        if last && left {
            positions[me] = 0;
        }
        last && left
    }

    /// One `pg_restore --section=data` for `run`, fed by cursor `c`.
    fn load(&self, c: &mut Cursor, run: &Run) -> Result<()> {
        let (listing, list_arg) = list_file(&run.ids)?;
        let (env, _passfile) = self.tools.env_for(&self.into)?;
        let mut args = restore_args(&self.into);
        args.extend(["--section=data".into(), list_arg]);
        tracing::debug!(ids = ?run.ids, first = run.first, "loading from a cursor");
        let mut child =
            self.runtime
                .block_on(self.tools.spawn("pg_restore", &args, &env, true, false))?;
        let mut stdin = child
            .take_blocking_stdin()
            .ok_or_else(|| Error::Other("pg_restore has no stdin on this host".into()))?
            .map_err(|e| Error::io("taking pg_restore's stdin", e))?;
        let fed = match stdin.write_all(&self.toc) {
            Ok(()) => c.feed(run, &mut stdin, &self.stop),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(Error::io("writing to pg_restore", e)),
        };
        drop(stdin); // end of input
        let finished = self.runtime.block_on(async {
            tokio::select! {
                r = child.finish() => Some(r),
                () = self.stop.cancelled() => None,
            }
        });
        // Stopped: the child is killed as it is dropped.
        let finished = finished.ok_or_else(|| Error::Other("stopped".into()))?;
        drop(listing);
        tracing::debug!(ids = ?run.ids, "loaded");
        finished?;
        fed.map(|_| ())
    }
}

/// Stops the cursor threads when the restore ends or is dropped (a
/// cancelled restore must not keep loading).
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.cancel();
    }
}

/// Where a cursor restore reads from and what it knows of the dump.
pub struct Source<'a> {
    /// The stored object's file.
    pub object: PathBuf,
    /// Its manifest entry.
    pub artifact: &'a Artifact,
    /// Identities for an encrypted artifact.
    pub keys: &'a Keys,
    /// Table sizes from the manifest, by (schema, name).
    pub sizes: std::collections::HashMap<(String, String), u64>,
    /// Counts the time spent decoding, summed over the cursors.
    pub progress: Arc<Progress>,
}

/// Open the first cursor and read the table of contents into `toc_file`;
/// `None` when that fails (an archive the walker does not read, a damaged
/// object): nothing has been touched, and the caller restores the way
/// that checks everything first and names what is wrong.
pub async fn open(src: &Source<'_>, toc_file: &Path) -> Option<(Cursor, Vec<u8>)> {
    let (object, artifact, keys) = (src.object.clone(), src.artifact.clone(), src.keys.clone());
    let (path, progress) = (toc_file.to_path_buf(), src.progress.clone());
    let opened = tokio::task::spawn_blocking(move || {
        let mut c = Cursor::open(&object, &artifact, &keys, progress)?;
        let Some(toc) = c.table_of_contents()? else {
            return Ok(None);
        };
        std::fs::write(&path, &toc)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok::<_, Error>(Some((c, toc)))
    })
    .await;
    match opened {
        Ok(Ok(Some(c))) => Some(c),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no cursors: the table of contents did not read");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "no cursors: the reader failed");
            None
        }
    }
}

/// Restore into `into` with `jobs` cursors (the first one given, past the
/// table of contents written to `toc_file`) while `verify` hashes the
/// stored object; its verdict explains any failure.
#[allow(clippy::too_many_arguments)]
pub async fn restore<F>(
    tools: &PgTools,
    into: &PgTarget,
    jobs: usize,
    src: &Source<'_>,
    (first, toc_bytes): (Cursor, Vec<u8>),
    toc_file: &Path,
    verify: F,
) -> Result<()>
where
    F: std::future::Future<Output = Result<()>> + Send,
{
    let jobs = jobs.max(1);
    let mut verify = Box::pin(verify);
    let toc: Vec<TocEntry> = first.toc().to_vec();
    let runs = runs_of(first.data_entries(), &src.sizes, jobs);

    tracing::debug!(runs = runs.len(), "table of contents read: pre-data");
    let pre = vec!["--section=pre-data".into()];
    let mut verified = false;
    {
        // The hashing goes on meanwhile.
        let pre = pg_restore(tools, into, pre, None, Some(toc_file));
        tokio::pin!(pre);
        loop {
            tokio::select! {
                r = &mut pre => match r {
                    Ok(()) => break,
                    Err(e) => return Err(explain(e, verify, verified).await),
                },
                r = verify.as_mut(), if !verified => {
                    r?;
                    verified = true;
                }
            }
        }
    }

    let cursors = jobs.min(runs.len());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        claims: Mutex::new((vec![false; runs.len()], vec![0; cursors])),
        runs,
        toc: toc_bytes,
        stop: CancellationToken::new(),
        tools: tools.clone(),
        into: into.clone(),
        object: src.object.clone(),
        artifact: src.artifact.clone(),
        keys: src.keys.clone(),
        progress: src.progress.clone(),
        runtime: tokio::runtime::Handle::current(),
        events: tx,
    });
    let stop = StopOnDrop(shared.clone());
    let mut first = Some(first);
    let mut threads = Vec::new();
    for me in 0..cursors {
        let (s, c) = (shared.clone(), first.take());
        threads.push(tokio::task::spawn_blocking(move || {
            let ended = s.work(me, c);
            let _ = s.events.send(Event::Ended(ended));
        }));
    }

    let verify_rest = async {
        if !verified {
            verify.as_mut().await?;
        }
        Ok(())
    };
    let outcome = drive(
        tools,
        into,
        jobs,
        toc_file,
        &toc,
        cursors,
        &mut rx,
        verify_rest,
    )
    .await;
    stop.0.stop.cancel();
    // Every loader gone before the database may be dropped. A cursor
    // notices the stop within a piece; one blocked writing to a pg_restore
    // whose server stalls is released by the drop itself (WITH (FORCE)
    // ends the session, pg_restore exits, the pipe breaks).
    let joined = futures::future::join_all(threads);
    if tokio::time::timeout(std::time::Duration::from_secs(10), joined)
        .await
        .is_err()
    {
        tracing::warn!("a loader did not stop within 10 s");
    }
    let (taken, early) = match outcome {
        Ok(done) => done,
        Err((e, done)) => return Err(explain(e, verify, verified || done).await),
    };
    let left = shared.unclaimed();
    if left > 0 {
        return Err(Error::Other(format!(
            "{left} runs of data blocks were left unloaded"
        )));
    }
    finish(tools, into, toc_file, jobs, &toc, (&taken, &early)).await
}

/// The scheduler: wait for the verdict and the cursors, and build the
/// indexes and keys of loaded tables in the slots cursors leave free.
/// Returns the loaded and the early-built entries, or the first error and
/// whether the verdict was already in.
#[allow(clippy::too_many_arguments)]
async fn drive<F>(
    tools: &PgTools,
    into: &PgTarget,
    jobs: usize,
    toc_file: &Path,
    toc: &[TocEntry],
    mut cursors: usize,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    verify: F,
) -> std::result::Result<(HashSet<i64>, HashSet<i64>), (Error, bool)>
where
    F: std::future::Future<Output = Result<()>> + Send,
{
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut verify = std::pin::pin!(verify);
    let mut verified = false;
    let (mut loaded, mut early) = (HashSet::new(), HashSet::new());
    let mut dirty = false;
    let mut building = FuturesUnordered::new();
    loop {
        if dirty && cursors + building.len() < jobs {
            dirty = false;
            let ready = early_post_data(toc, &loaded, &early);
            if !ready.is_empty() {
                tracing::debug!(?ready, "indexes and constraints of loaded tables");
                early.extend(ready.iter().copied());
                building.push(async move {
                    let section = vec!["--section=post-data".into()];
                    pg_restore(tools, into, section, Some(&ready), Some(toc_file)).await
                });
            }
        }
        if verified && cursors == 0 && building.is_empty() {
            return Ok((loaded, early));
        }
        tokio::select! {
            r = verify.as_mut(), if !verified => match r {
                Ok(()) => verified = true,
                Err(e) => return Err((e, true)),
            },
            Some(r) = building.next(), if !building.is_empty() => {
                if let Err(e) = r {
                    return Err((e, verified));
                }
                dirty = true;
            }
            Some(ev) = rx.recv(), if cursors > 0 => match ev {
                Event::Loaded(ids) => {
                    loaded.extend(ids);
                    dirty = true;
                }
                Event::Ended(Ok(())) => {
                    cursors -= 1;
                    dirty = true;
                }
                Event::Ended(Err(e)) => return Err((e, verified)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn small_known_blocks_run_together_and_big_or_unknown_ones_alone() {
        let runs = plan_runs(
            &[
                (1, Some(MB)),
                (2, Some(2 * MB)),
                (3, Some(500 * MB)),
                (4, Some(MB)),
                (5, None),
                (6, Some(MB)),
                (7, Some(63 * MB)),
                (8, Some(MB)),
            ],
            64 * MB,
        );
        let ids: Vec<Vec<i64>> = runs.iter().map(|r| r.ids.clone()).collect();
        assert_eq!(
            ids,
            [vec![1, 2], vec![3], vec![4], vec![5], vec![6, 7], vec![8]]
        );
        assert_eq!(
            runs.iter().map(|r| r.first).collect::<Vec<_>>(),
            [0, 2, 3, 4, 5, 7]
        );
        assert_eq!(runs[0].bytes, Some(3 * MB));
        assert_eq!(runs[3].bytes, None);
        assert!(plan_runs(&[], 64 * MB).is_empty());
        // Nothing joins when the limit is 0.
        assert_eq!(plan_runs(&[(1, Some(0)), (2, Some(0))], 0).len(), 2);
    }

    #[test]
    fn a_small_database_still_spreads_over_the_loaders() {
        assert_eq!(run_limit(100 * 1024 * MB, 2), RUN_BYTES);
        assert_eq!(run_limit(8 * MB, 2), MB);
        assert_eq!(run_limit(0, 4), 0);
        assert_eq!(run_limit(8 * MB, 0), 2 * MB);
    }

    fn runs(sizes: &[Option<u64>]) -> Vec<Run> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &bytes)| Run {
                first: i,
                ids: vec![i as i64 + 100],
                bytes,
            })
            .collect()
    }

    #[test]
    fn the_rearmost_cursor_takes_the_nearest_run_and_the_others_the_largest() {
        let r = runs(&[Some(300), Some(500), Some(1), Some(2)]);
        // Both at the start: cursor 0 is rearmost (ties go to the lower
        // number) and takes the first run; cursor 1 the largest.
        assert_eq!(pick(&r, &[false; 4], &[0, 0], 0), Some(0));
        assert_eq!(pick(&r, &[true, false, false, false], &[0, 0], 1), Some(1));
        // Still rearmost (or level): the nearest run.
        assert_eq!(pick(&r, &[true, true, false, false], &[1, 1], 0), Some(2));
        assert_eq!(pick(&r, &[true, true, false, false], &[1, 2], 0), Some(2));
        // Another cursor is behind: the largest run ahead.
        assert_eq!(pick(&r, &[true, true, false, false], &[2, 1], 0), Some(3));
        // Nothing is left behind: a run no cursor can reach any more is
        // the rearmost cursor's next one.
        assert_eq!(pick(&r, &[true, false, false, false], &[1, 3], 0), Some(1));
        // An unknown size counts as the largest.
        let u = runs(&[Some(300), None, Some(900)]);
        assert_eq!(pick(&u, &[true, false, false], &[0, 0], 1), Some(1));
        // Nothing ahead: the cursor stops.
        assert_eq!(pick(&r, &[true; 4], &[0, 0], 0), None);
        assert_eq!(pick(&r, &[false; 4], &[4, 0], 0), None);
        // A stopped cursor (usize::MAX) is never in the way.
        assert_eq!(pick(&r, &[false; 4], &[0, usize::MAX], 0), Some(0));
    }
}
