//! A streaming reader of pg_dump's custom-format archive, fed the bytes as
//! they pass on their way to the repository.
//!
//! Why: a backup must prove that the archive is whole before its manifest
//! is committed, and its manifest records exact row counts. Both used to
//! cost a second reader of the whole dump (`pg_restore -f /dev/null` in a
//! child process, fed a copy of every byte) and a second scan of every table
//! on the server (`count(*)` in the dump's snapshot), on the same cores as
//! the dump itself. Walking the archive's structure in-process does both for
//! the price of a newline count: every entry of the table of contents that
//! has data must have exactly one data block, each block must end with its
//! end marker, and the stream must end right after the last block; the
//! COPY lines in a table's block are its rows.
//!
//! Only the layout that pg_dump 12 to 15 write (archive version 1.14,
//! uncompressed: drctl always dumps with `--compress=0`) is read here; other
//! versions are reported as [`ArchiveError::Unsupported`] before any data
//! block, and the caller checks those archives with `pg_restore` instead.
//! The layout follows PostgreSQL's `pg_backup_archiver.c` (`WriteHead`,
//! `WriteToc`) and `pg_backup_custom.c` (data blocks).

use std::collections::HashMap;

/// The archive versions this reader knows, as (major, minor).
pub const SUPPORTED: &[(u8, u8)] = &[(1, 14)];

/// The pg_dump major versions whose archives this reader knows.
pub fn supports_pg_dump(major: u32) -> bool {
    (12..=15).contains(&major)
}

/// Why an archive is not whole, or not one this reader knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// The stream ended before the archive did (a pg_dump cut short).
    #[error("the archive is incomplete: {0}")]
    Incomplete(String),
    /// Bytes that cannot be a custom-format archive at this position.
    #[error("the archive is malformed: {0}")]
    Malformed(String),
    /// A version or option of the format this reader does not read.
    #[error("the archive's format is not one drctl reads itself: {0}")]
    Unsupported(String),
}

/// A table-of-contents entry that has a data block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataEntry {
    /// pg_dump's id of the entry (blocks name it).
    pub dump_id: i64,
    /// `TABLE DATA`, `BLOBS`, ...
    pub desc: String,
    /// The schema (empty for entries without one).
    pub namespace: String,
    /// The object's name (the table's, for `TABLE DATA`).
    pub tag: String,
    /// The block holds COPY text (one line per row), not INSERT statements.
    pub copy: bool,
}

/// The section pg_dump put an entry in (restores run them in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Comments, ACLs and the like: they go with what precedes them.
    None,
    /// Schema objects created before the data.
    PreData,
    /// Table data, sequence values, large objects.
    Data,
    /// Indexes, constraints, triggers, rules, materialized view data.
    PostData,
}

impl Section {
    fn from_code(code: i64) -> Self {
        match code {
            2 => Section::PreData,
            3 => Section::Data,
            4 => Section::PostData,
            _ => Section::None,
        }
    }
}

/// One entry of the table of contents: enough to order a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// pg_dump's id of the entry.
    pub id: i64,
    /// `TABLE`, `TABLE DATA`, `INDEX`, `CONSTRAINT`, `FK CONSTRAINT`, ...
    pub desc: String,
    /// Its section.
    pub section: Section,
    /// The ids of the entries it depends on.
    pub deps: Vec<i64>,
}

/// A data block as it passed: where it lies in the stream and what it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The entry it belongs to.
    pub dump_id: i64,
    /// Offset of its first byte (the block type) in the stream.
    pub start: u64,
    /// Offset just past its end marker.
    pub end: u64,
    /// Bytes of data in its chunks.
    pub data_bytes: u64,
    /// Newlines in its data; for COPY text, rows plus the `\.` trailer.
    pub lines: u64,
    /// The data ended with COPY's end-of-data trailer (`\.` and blank lines).
    trailer_lines: u64,
}

impl Block {
    /// Rows of a COPY block: its lines less the end-of-data trailer.
    pub fn rows(&self) -> u64 {
        self.lines - self.trailer_lines
    }
}

/// What a whole archive held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The archive version (major, minor, revision).
    pub version: (u8, u8, u8),
    /// Entries with data, in table-of-contents order.
    pub entries: Vec<DataEntry>,
    /// Data blocks, in stream order.
    pub blocks: Vec<Block>,
    /// Offset of the first data block (the end of the table of contents).
    pub data_start: u64,
}

impl Summary {
    /// Rows per table (schema, name) for every `TABLE DATA` entry in COPY
    /// format; tables dumped as INSERT statements are left out.
    pub fn table_rows(&self) -> HashMap<(String, String), u64> {
        let by_id: HashMap<i64, &DataEntry> = self.entries.iter().map(|e| (e.dump_id, e)).collect();
        self.blocks
            .iter()
            .filter_map(|b| {
                let e = by_id.get(&b.dump_id)?;
                (e.desc == "TABLE DATA" && e.copy)
                    .then(|| ((e.namespace.clone(), e.tag.clone()), b.rows()))
            })
            .collect()
    }
}

/// The archive header's fixed facts.
#[derive(Debug, Clone, Copy)]
struct Header {
    version: (u8, u8, u8),
    int_size: usize,
    off_size: usize,
}

/// Where the data phase is inside the block structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    BlockType,
    BlockId { blobs: bool },
    ChunkLen { blobs: bool },
    Chunk { remaining: u64, blobs: bool },
    BlobOid,
}

/// Bytes of COPY's end-of-data trailer that count as lines (`\.` then two
/// blank lines, as pg_dump writes it; or `\.` alone).
const TRAILERS: &[(&[u8], u64)] = &[(b"\\.\n\n\n", 3), (b"\\.\n", 1)];

/// The reader: feed it every byte of the stream in order, then
/// [`Walker::finish`].
#[derive(Debug, Default)]
pub struct Walker {
    /// Bytes of the header and table of contents not yet parsed.
    head: Vec<u8>,
    /// Where the next unparsed piece of `head` starts.
    cursor: usize,
    header: Option<Header>,
    toc_count: Option<i64>,
    /// Table-of-contents entries parsed so far.
    read_entries_count: i64,
    /// The id of every entry, in table-of-contents order.
    ids: Vec<i64>,
    /// Every entry's kind, section and dependencies, in the same order.
    toc: Vec<TocEntry>,
    entries: Vec<DataEntry>,
    /// Every entry with data, by dump id: its index in `entries`, and
    /// whether its block has passed.
    wanted: HashMap<i64, (usize, bool)>,
    /// Offset of the first data block once the table of contents is read.
    data_start: Option<u64>,
    at: Option<At>,
    /// A partly read integer of the data phase.
    int_buf: Vec<u8>,
    blocks: Vec<Block>,
    /// The block being read: its id, start, bytes, lines and last bytes.
    open: Option<(i64, u64, u64, u64, Vec<u8>)>,
    /// Stream offset of the next byte fed.
    offset: u64,
    failed: Option<ArchiveError>,
}

impl Walker {
    /// A reader at the start of an archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table of contents has been read: where the data begins.
    pub fn data_start(&self) -> Option<u64> {
        self.data_start
    }

    /// Data blocks that have passed whole, in stream order.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Entries with data (known once [`Walker::data_start`] is set).
    pub fn entries(&self) -> &[DataEntry] {
        &self.entries
    }

    /// The block being read, once its entry id has passed: (id, start).
    pub fn open_block(&self) -> Option<(i64, u64)> {
        self.open.as_ref().filter(|o| o.0 > 0).map(|o| (o.0, o.1))
    }

    /// The id of every entry, with data or not, in table-of-contents order.
    pub fn entry_ids(&self) -> &[i64] {
        &self.ids
    }

    /// Every entry of the table of contents (complete once
    /// [`Walker::data_start`] is set).
    pub fn toc(&self) -> &[TocEntry] {
        &self.toc
    }

    /// Read the next bytes of the stream. The first error sticks: every
    /// later call returns it and reads nothing.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ArchiveError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.data_start.is_none() {
            self.head.extend_from_slice(bytes);
            let parsed = self.parse_head();
            if let Err(e) = parsed {
                self.failed = Some(e.clone());
                return Err(e);
            }
            let Some(start) = self.data_start else {
                self.offset += bytes.len() as u64;
                return Ok(());
            };
            // The bytes past the table of contents belong to the data phase.
            let used = start.saturating_sub(self.offset) as usize;
            self.offset = start;
            bytes = &bytes[used.min(bytes.len())..];
            self.head = Vec::new();
            self.at = Some(At::BlockType);
        }
        let r = self.feed_data(bytes);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// The stream has ended: the archive's summary if it was whole.
    pub fn finish(self) -> Result<Summary, ArchiveError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let Some(header) = self.header else {
            return Err(ArchiveError::Incomplete("it ends inside its header".into()));
        };
        let Some(data_start) = self.data_start else {
            return Err(ArchiveError::Incomplete(
                "it ends inside its table of contents".into(),
            ));
        };
        if let Some((id, _, bytes, _, _)) = &self.open {
            let name = self.name_of(*id);
            return Err(ArchiveError::Incomplete(format!(
                "it ends inside the data of {name} ({bytes} bytes of it read)"
            )));
        }
        if self.at != Some(At::BlockType) || !self.int_buf.is_empty() {
            return Err(ArchiveError::Incomplete(
                "it ends inside a block header".into(),
            ));
        }
        let mut missing: Vec<&DataEntry> = self
            .wanted
            .values()
            .filter(|(_, seen)| !seen)
            .map(|(i, _)| &self.entries[*i])
            .collect();
        if !missing.is_empty() {
            missing.sort_by_key(|e| e.dump_id);
            let names: Vec<String> = missing.iter().take(5).map(|e| label(e)).collect();
            return Err(ArchiveError::Incomplete(format!(
                "it ends before the data of {}{} ({} of {} data blocks present)",
                names.join(", "),
                if missing.len() > 5 { ", ..." } else { "" },
                self.blocks.len(),
                self.entries.len()
            )));
        }
        Ok(Summary {
            version: header.version,
            entries: self.entries,
            blocks: self.blocks,
            data_start,
        })
    }

    fn name_of(&self, id: i64) -> String {
        self.wanted
            .get(&id)
            .map_or_else(|| format!("entry {id}"), |(i, _)| label(&self.entries[*i]))
    }

    /// Parse as much of the header and table of contents as `head` holds,
    /// one whole piece at a time (a piece cut by the end of `head` is read
    /// again when more bytes come).
    fn parse_head(&mut self) -> Result<(), ArchiveError> {
        if self.header.is_none() {
            let mut c = Cursor::new(&self.head, 0, None);
            match read_header(&mut c)? {
                Some(h) => {
                    self.header = Some(h);
                    self.cursor = c.pos;
                }
                None => return Ok(()),
            }
        }
        let Some(h) = self.header else {
            return Ok(());
        };
        if self.toc_count.is_none() {
            let mut c = Cursor::new(&self.head, self.cursor, Some(h));
            match c.int()? {
                Some(n) if n < 0 => {
                    return Err(ArchiveError::Malformed(format!(
                        "a table of contents of {n} entries"
                    )))
                }
                Some(n) => {
                    self.toc_count = Some(n);
                    self.cursor = c.pos;
                }
                None => return Ok(()),
            }
        }
        let total = self.toc_count.unwrap_or(0);
        let mut read = self.read_entries_count;
        while read < total {
            let mut c = Cursor::new(&self.head, self.cursor, Some(h));
            match read_entry(&mut c, h)? {
                Some((t, e)) => {
                    self.cursor = c.pos;
                    read += 1;
                    self.ids.push(t.id);
                    self.toc.push(t);
                    if let Some(e) = e {
                        if self.wanted.contains_key(&e.dump_id) {
                            return Err(ArchiveError::Malformed(format!(
                                "entry {} appears twice in the table of contents",
                                e.dump_id
                            )));
                        }
                        self.wanted.insert(e.dump_id, (self.entries.len(), false));
                        self.entries.push(e);
                    }
                }
                None => break,
            }
        }
        self.read_entries_count = read;
        if read == total {
            self.data_start = Some(self.cursor as u64);
        }
        Ok(())
    }

    fn feed_data(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        let Some(h) = self.header else {
            return Ok(());
        };
        let mut i = 0;
        while i < bytes.len() {
            let at = self.at.unwrap_or(At::BlockType);
            if let At::Chunk { remaining, blobs } = at {
                let take = remaining.min((bytes.len() - i) as u64) as usize;
                let piece = &bytes[i..i + take];
                if let Some((_, _, data, lines, tail)) = self.open.as_mut() {
                    *data += take as u64;
                    if !blobs {
                        *lines += memchr::memchr_iter(b'\n', piece).count() as u64;
                        keep_tail(tail, piece);
                    }
                }
                i += take;
                self.offset += take as u64;
                let left = remaining - take as u64;
                self.at = Some(if left == 0 {
                    At::ChunkLen { blobs }
                } else {
                    At::Chunk {
                        remaining: left,
                        blobs,
                    }
                });
                continue;
            }
            if at == At::BlockType {
                let kind = bytes[i];
                let blobs = match kind {
                    1 => false,
                    3 => true,
                    other => {
                        return Err(ArchiveError::Malformed(format!(
                            "a data block of unknown type {other} at byte {}",
                            self.offset
                        )))
                    }
                };
                self.open = Some((0, self.offset, 0, 0, Vec::new()));
                i += 1;
                self.offset += 1;
                self.at = Some(At::BlockId { blobs });
                continue;
            }
            // An integer, possibly split across calls.
            let need = 1 + h.int_size - self.int_buf.len();
            let take = need.min(bytes.len() - i);
            self.int_buf.extend_from_slice(&bytes[i..i + take]);
            i += take;
            self.offset += take as u64;
            if self.int_buf.len() < 1 + h.int_size {
                continue;
            }
            let v = decode_int(&self.int_buf);
            self.int_buf.clear();
            self.on_int(at, v)?;
        }
        Ok(())
    }

    fn on_int(&mut self, at: At, v: i64) -> Result<(), ArchiveError> {
        match at {
            At::BlockId { blobs } => {
                let Some((_, seen)) = self.wanted.get_mut(&v) else {
                    return Err(ArchiveError::Malformed(format!(
                        "a data block for entry {v}, which the table of contents lists without data"
                    )));
                };
                if *seen {
                    return Err(ArchiveError::Malformed(format!(
                        "a second data block for entry {v}"
                    )));
                }
                *seen = true;
                if let Some(open) = self.open.as_mut() {
                    open.0 = v;
                }
                self.at = Some(if blobs {
                    At::BlobOid
                } else {
                    At::ChunkLen { blobs: false }
                });
            }
            At::ChunkLen { blobs } => {
                if v < 0 {
                    return Err(ArchiveError::Malformed(format!(
                        "a chunk of {v} bytes in {}",
                        self.name_of(self.open.as_ref().map_or(0, |o| o.0))
                    )));
                }
                self.at = Some(match (v, blobs) {
                    (0, false) => {
                        self.close_block();
                        At::BlockType
                    }
                    (0, true) => At::BlobOid,
                    (n, blobs) => At::Chunk {
                        remaining: n as u64,
                        blobs,
                    },
                });
            }
            At::BlobOid => {
                self.at = Some(if v == 0 {
                    self.close_block();
                    At::BlockType
                } else {
                    At::ChunkLen { blobs: true }
                });
            }
            At::BlockType | At::Chunk { .. } => {}
        }
        Ok(())
    }

    fn close_block(&mut self) {
        if let Some((dump_id, start, data_bytes, lines, tail)) = self.open.take() {
            let trailer_lines = TRAILERS
                .iter()
                .find(|(t, _)| tail.ends_with(t))
                .map_or(0, |(_, n)| *n)
                .min(lines);
            self.blocks.push(Block {
                dump_id,
                start,
                end: self.offset,
                data_bytes,
                lines,
                trailer_lines,
            });
        }
    }
}

/// `schema.name` (or the entry's kind and name when it has no schema).
fn label(e: &DataEntry) -> String {
    if e.namespace.is_empty() {
        format!("{} {}", e.desc, e.tag)
    } else {
        format!("{}.{}", e.namespace, e.tag)
    }
}

/// Keep the last few bytes of a block's data (enough for the longest trailer).
fn keep_tail(tail: &mut Vec<u8>, piece: &[u8]) {
    const KEEP: usize = 5;
    if piece.len() >= KEEP {
        tail.clear();
        tail.extend_from_slice(&piece[piece.len() - KEEP..]);
    } else {
        tail.extend_from_slice(piece);
        if tail.len() > KEEP {
            tail.drain(..tail.len() - KEEP);
        }
    }
}

/// pg_dump's integer: a sign byte, then the magnitude, little-endian.
fn decode_int(b: &[u8]) -> i64 {
    let mut v: u64 = 0;
    for (i, byte) in b[1..].iter().enumerate().take(8) {
        v |= u64::from(*byte) << (8 * i);
    }
    let v = v.min(i64::MAX as u64) as i64;
    if b[0] != 0 {
        -v
    } else {
        v
    }
}

/// A position in the buffered head; every read returns `None` when the
/// buffer ends first (more bytes needed).
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    h: Option<Header>,
}

/// Longest string accepted in the table of contents (a function body or a
/// view can be long; a wild length is a broken archive, not a big one).
const MAX_STR: i64 = 1 << 30;

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8], pos: usize, h: Option<Header>) -> Self {
        Self { b, pos, h }
    }

    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn int(&mut self) -> Result<Option<i64>, ArchiveError> {
        let size = self.h.map_or(4, |h| h.int_size);
        Ok(self.bytes(1 + size).map(decode_int))
    }

    /// A string; the outer `None` means more bytes are needed, the inner
    /// one pg_dump's NULL string.
    fn str(&mut self) -> Result<Option<Option<String>>, ArchiveError> {
        let Some(n) = self.int()? else {
            return Ok(None);
        };
        if n == -1 {
            return Ok(Some(None));
        }
        if !(0..=MAX_STR).contains(&n) {
            return Err(ArchiveError::Malformed(format!(
                "a string of {n} bytes in the table of contents"
            )));
        }
        Ok(self
            .bytes(n as usize)
            .map(|s| Some(String::from_utf8_lossy(s).into_owned())))
    }
}

/// Unwrap a "need more bytes" read inside a parse function.
macro_rules! more {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

fn read_header(c: &mut Cursor<'_>) -> Result<Option<Header>, ArchiveError> {
    let magic = more!(c.bytes(5));
    if magic != b"PGDMP" {
        return Err(ArchiveError::Malformed(
            "it does not start with PGDMP (not a custom-format archive)".into(),
        ));
    }
    let (major, minor, rev) = (more!(c.byte()), more!(c.byte()), more!(c.byte()));
    if !SUPPORTED.contains(&(major, minor)) {
        return Err(ArchiveError::Unsupported(format!(
            "archive version {major}.{minor}.{rev}"
        )));
    }
    let int_size = more!(c.byte()) as usize;
    let off_size = more!(c.byte()) as usize;
    if !(1..=8).contains(&int_size) || !(1..=8).contains(&off_size) {
        return Err(ArchiveError::Malformed(format!(
            "integer size {int_size} / offset size {off_size}"
        )));
    }
    let format = more!(c.byte());
    if format != 1 {
        return Err(ArchiveError::Malformed(format!(
            "format code {format}, not custom (1)"
        )));
    }
    let h = Header {
        version: (major, minor, rev),
        int_size,
        off_size,
    };
    c.h = Some(h);
    let compression = more!(c.int()?);
    if compression != 0 {
        return Err(ArchiveError::Unsupported(format!(
            "compressed data (level {compression}); drctl dumps with --compress=0"
        )));
    }
    // The creation time (seven integers), then the database name, the
    // server's version and pg_dump's.
    for _ in 0..7 {
        more!(c.int()?);
    }
    for _ in 0..3 {
        more!(c.str()?);
    }
    Ok(Some(h))
}

/// One table-of-contents entry: its id, and what it is when it has data.
fn read_entry(
    c: &mut Cursor<'_>,
    h: Header,
) -> Result<Option<(TocEntry, Option<DataEntry>)>, ArchiveError> {
    let dump_id = more!(c.int()?);
    if dump_id <= 0 {
        return Err(ArchiveError::Malformed(format!(
            "entry id {dump_id} in the table of contents"
        )));
    }
    let had_dumper = more!(c.int()?);
    more!(c.str()?); // tableoid
    more!(c.str()?); // oid
    let tag = more!(c.str()?).unwrap_or_default();
    let desc = more!(c.str()?).unwrap_or_default();
    let section = Section::from_code(more!(c.int()?));
    more!(c.str()?); // definition
    more!(c.str()?); // drop statement
    let copy = more!(c.str()?).is_some_and(|s| !s.is_empty());
    let namespace = more!(c.str()?).unwrap_or_default();
    more!(c.str()?); // tablespace
    more!(c.str()?); // table access method (1.14)
    more!(c.str()?); // owner
    more!(c.str()?); // "with oids", always false since PostgreSQL 12
    let mut deps = Vec::new();
    // Dependencies (ids as text), ended by a NULL string.
    while let Some(dep) = more!(c.str()?) {
        if let Ok(d) = dep.trim().parse() {
            deps.push(d);
        }
    }
    let toc = TocEntry {
        id: dump_id,
        desc: desc.clone(),
        section,
        deps,
    };
    // The custom format's data position: a flag byte and an offset.
    let flag = more!(c.byte());
    more!(c.bytes(h.off_size));
    if !(1..=3).contains(&flag) {
        return Err(ArchiveError::Malformed(format!(
            "data position flag {flag} for entry {dump_id}"
        )));
    }
    // Flag 3 (no data) is written for entries without a data dumper.
    if had_dumper == 0 || flag == 3 {
        return Ok(Some((toc, None)));
    }
    Ok(Some((
        toc,
        Some(DataEntry {
            dump_id,
            desc,
            namespace,
            tag,
            copy,
        }),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer of the same layout, for archives with exact contents.
    struct Arch(Vec<u8>);

    impl Arch {
        fn int(&mut self, v: i64) -> &mut Self {
            self.0.push(u8::from(v < 0));
            self.0
                .extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
            self
        }
        fn str(&mut self, s: Option<&str>) -> &mut Self {
            match s {
                None => self.int(-1),
                Some(s) => {
                    self.int(s.len() as i64);
                    self.0.extend_from_slice(s.as_bytes());
                    self
                }
            }
        }
        fn header(version: (u8, u8)) -> Self {
            let mut a = Arch(b"PGDMP".to_vec());
            a.0.extend_from_slice(&[version.0, version.1, 0, 4, 8, 1]);
            a.int(0);
            for v in [1, 2, 3, 4, 5, 126, 0] {
                a.int(v);
            }
            a.str(Some("app")).str(Some("15.1")).str(Some("15.1"));
            a
        }
        fn entry(&mut self, id: i64, desc: &str, ns: &str, tag: &str, data: bool) -> &mut Self {
            self.int(id).int(i64::from(data));
            self.str(Some("0"))
                .str(Some("0"))
                .str(Some(tag))
                .str(Some(desc));
            self.int(if data { 3 } else { 2 });
            self.str(Some("")).str(Some(""));
            self.str(Some(if data { "COPY t FROM stdin;\n" } else { "" }));
            self.str(Some(ns))
                .str(Some(""))
                .str(Some("heap"))
                .str(Some("me"));
            self.str(Some("false")).str(Some("1")).str(None);
            self.0.push(if data { 1 } else { 3 });
            self.0.extend_from_slice(&[0; 8]);
            self
        }
        fn block(&mut self, id: i64, chunks: &[&[u8]]) -> &mut Self {
            self.0.push(1);
            self.int(id);
            for c in chunks {
                self.int(c.len() as i64);
                self.0.extend_from_slice(c);
            }
            self.int(0)
        }
        fn blobs(&mut self, id: i64, objects: &[(i64, &[u8])]) -> &mut Self {
            self.0.push(3);
            self.int(id);
            for (oid, data) in objects {
                self.int(*oid).int(data.len() as i64);
                self.0.extend_from_slice(data);
                self.int(0);
            }
            self.int(0)
        }
    }

    fn s_start(bytes: &[u8]) -> u64 {
        walk(bytes, 4096).unwrap().data_start
    }

    fn sample() -> Vec<u8> {
        let mut a = Arch::header((1, 14));
        a.int(4);
        a.entry(1, "TABLE", "public", "t", false);
        a.entry(2, "TABLE DATA", "public", "t", true);
        a.entry(3, "TABLE DATA", "public", "empty", true);
        a.entry(4, "BLOBS", "", "BLOBS", true);
        a.block(2, &[b"1\ta\n2\tb\n", b"3\tc\\nd\n\\.\n\n\n"]);
        a.block(3, &[b"\\.\n\n\n"]);
        a.blobs(4, &[(16384, b"line\nline\n")]);
        a.0
    }

    fn walk(bytes: &[u8], piece: usize) -> Result<Summary, ArchiveError> {
        let mut w = Walker::new();
        for c in bytes.chunks(piece.max(1)) {
            w.feed(c)?;
        }
        w.finish()
    }

    #[test]
    fn rows_per_table_whatever_the_pieces() {
        let bytes = sample();
        for piece in [1, 2, 3, 7, 64, 1 << 20] {
            let s = walk(&bytes, piece).unwrap();
            let rows = s.table_rows();
            assert_eq!(rows[&("public".into(), "t".into())], 3, "piece {piece}");
            assert_eq!(rows[&("public".into(), "empty".into())], 0);
            assert_eq!(rows.len(), 2, "BLOBS are not a table");
            assert_eq!(s.blocks.len(), 3);
            assert_eq!(s.blocks[2].end, bytes.len() as u64);
            assert_eq!(s.blocks[0].start, s.data_start);
        }
        let mut w = Walker::new();
        w.feed(&bytes).unwrap();
        assert_eq!(w.entry_ids(), [1, 2, 3, 4]);
        assert_eq!(w.toc()[1].section, Section::Data);
        assert_eq!(w.toc()[1].desc, "TABLE DATA");
        assert_eq!(w.toc()[1].deps, [1]);
        assert_eq!(w.toc()[0].section, Section::PreData);
        assert_eq!(w.open_block(), None);
        // Inside the first block, after its id: it is open from its start.
        let start = s_start(&bytes);
        let mut w = Walker::new();
        w.feed(&bytes[..start as usize + 1 + 5 + 2]).unwrap();
        assert_eq!(w.open_block(), Some((2, start)));
    }

    #[test]
    fn every_cut_is_incomplete_except_the_whole() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let e = walk(&bytes[..cut], 5).unwrap_err();
            assert!(matches!(e, ArchiveError::Incomplete(_)), "cut {cut}: {e}");
        }
        assert!(walk(&bytes, 5).is_ok());
    }

    #[test]
    fn a_missing_block_is_named() {
        let mut a = Arch::header((1, 14));
        a.int(2);
        a.entry(2, "TABLE DATA", "public", "t", true);
        a.entry(3, "TABLE DATA", "sales", "orders", true);
        a.block(2, &[b"1\n\\.\n\n\n"]);
        let e = walk(&a.0, 4096).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the archive is incomplete: it ends before the data of sales.orders (1 of 2 data blocks present)"
        );
    }

    #[test]
    fn garbage_and_strangers_are_malformed() {
        let bytes = sample();
        // Bytes after the last block.
        let mut extra = bytes.clone();
        extra.push(7);
        assert!(matches!(walk(&extra, 9), Err(ArchiveError::Malformed(_))));
        // A block for an entry the TOC lists without data.
        let mut a = Arch::header((1, 14));
        a.int(1);
        a.entry(1, "TABLE", "public", "t", false);
        a.block(1, &[b"x\n"]);
        assert!(matches!(walk(&a.0, 9), Err(ArchiveError::Malformed(_))));
        // The same block twice.
        let mut a = Arch::header((1, 14));
        a.int(1);
        a.entry(2, "TABLE DATA", "public", "t", true);
        a.block(2, &[b"x\n"]).block(2, &[b"x\n"]);
        assert!(matches!(walk(&a.0, 9), Err(ArchiveError::Malformed(_))));
        // Not an archive at all.
        assert!(matches!(
            walk(b"-- PostgreSQL database dump\n", 9),
            Err(ArchiveError::Malformed(_))
        ));
    }

    #[test]
    fn other_versions_and_compressed_archives_are_left_to_pg_restore() {
        let a = Arch::header((1, 15));
        assert!(matches!(walk(&a.0, 9), Err(ArchiveError::Unsupported(_))));
        let mut a = Arch(b"PGDMP".to_vec());
        a.0.extend_from_slice(&[1, 14, 0, 4, 8, 1]);
        a.int(6);
        assert!(matches!(walk(&a.0, 64), Err(ArchiveError::Unsupported(_))));
        assert!(supports_pg_dump(15) && !supports_pg_dump(16) && !supports_pg_dump(11));
    }

    #[test]
    fn rows_without_the_trailer_and_lines_that_look_like_it() {
        // A row holding a backslash-dot is escaped as `\\.`; only the bare
        // `\.` line is the trailer.
        let mut a = Arch::header((1, 14));
        a.int(1);
        a.entry(2, "TABLE DATA", "public", "t", true);
        a.block(2, &[b"\\\\.\n", b"x\n"]);
        let s = walk(&a.0, 3).unwrap();
        assert_eq!(s.table_rows()[&("public".into(), "t".into())], 2);
    }
}
