//! The pages of tweets that a load into a new store has written, handed back to the kernel.
//!
//! A first load writes the whole store once, and the kernel keeps every page it wrote in its page
//! cache, so the load takes as much new memory as the store's size. Memory that has lain free
//! for a while can be costly to take: on virtual machines whose host takes free memory back,
//! each new page is a fault in the host as well (`dd` of 2 GB into a new file: 5.0 s of the
//! kernel's time into memory long free against 0.7 s into memory just freed; docs/BENCHMARKS.md).
//! After each batch, a thread of its own advises the kernel that the pages of the `tweets`
//! table's rows written so far will not be needed (`posix_fadvise(POSIX_FADV_DONTNEED)`): the
//! kernel starts writing them to disk and drops them once written, and the next batch's pages
//! reuse the same memory. Once the finished file is synced, all of them are advised once more,
//! so a load leaves its tweets on disk rather than in memory: the server reads a page's rows
//! when it is first asked for, as after any restart.
//!
//! Only the table's leaf pages, which a load writes once and does not read again, are given back.
//! Index pages and the other tables' pages (authors are looked up as the load goes) stay cached
//! as before: those SQLite reads back whenever its own cache has let them go. Advice never loses
//! data: the kernel drops only pages that are on disk, and a page read again comes from disk.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

/// The first byte of a table B-tree's leaf page (SQLite's file format, "B-tree Pages").
const TABLE_LEAF: u8 = 13;
/// Columns of a `tweets` row as its record holds them: `id` (the rowid, stored as NULL),
/// `tweet_id`, `user_id`, `has_media`, `json`. No other table of the main file has five.
const TWEET_COLUMNS: usize = 5;

/// The thread that gives the pages back, and the way to ask it.
#[derive(Debug)]
pub(crate) struct Recycler {
    passes: Option<SyncSender<Pass>>,
    thread: Option<JoinHandle<()>>,
}

/// What the thread is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// A batch was committed: give back what is on disk of the pages written so far.
    Batch,
    /// The file is complete and synced: give back every tweet page.
    Last,
}

impl Recycler {
    /// Starts the thread for `file`, a store's main file whose pages are `page_size` bytes.
    /// `file` must be a descriptor the store keeps open for as long as SQLite has the file open:
    /// closing any descriptor of a file drops the POSIX locks the process holds on it.
    pub(crate) fn start(file: Arc<File>, page_size: u64) -> std::io::Result<Self> {
        let (passes, asked) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("xgate-recycle".into())
            .spawn(move || run(&file, page_size, &asked))?;
        Ok(Recycler {
            passes: Some(passes),
            thread: Some(thread),
        })
    }

    /// Says a batch was committed. Nudges while the thread is busy fold into one: the pass that
    /// follows covers every page written until then.
    pub(crate) fn nudge(&self) {
        if let Some(passes) = &self.passes {
            match passes.try_send(Pass::Batch) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Gives back every tweet page of the file, which SQLite has closed and which is synced,
    /// and stops the thread.
    pub(crate) fn finish(mut self) {
        if let Some(passes) = &self.passes {
            // The thread stops only when the sender is dropped, so it takes this.
            let _ = passes.send(Pass::Last);
        }
        self.stop();
    }

    fn stop(&mut self) {
        self.passes = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the thread giving a new store's pages back to the kernel panicked");
        }
    }
}

impl Drop for Recycler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the passes asked for. A pass advises the tweet pages that appeared since the last pass,
/// and those of the last pass again: pages still being written when advised are not dropped,
/// and by the next pass they are on disk. The last pass advises every tweet page of the file.
fn run(file: &File, page_size: u64, asked: &Receiver<Pass>) {
    let mut seen = 1; // Page 1 holds the schema and is never given back.
    let mut last: Vec<Range<u64>> = Vec::new();
    let mut all: Vec<Range<u64>> = Vec::new();
    while let Ok(pass) = asked.recv() {
        let pages = match file.metadata() {
            Ok(meta) => meta.len() / page_size,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the new store's size");
                continue;
            }
        };
        let fresh = tweet_leaves(file, page_size, seen + 1..pages + 1);
        seen = seen.max(pages);
        for range in &fresh {
            match all.last_mut() {
                Some(end) if end.end == range.start => end.end = range.end,
                _ => all.push(range.clone()),
            }
        }
        let advised = match pass {
            Pass::Batch => [&last[..], &fresh[..]],
            Pass::Last => [&all[..], &[]],
        };
        for range in advised.into_iter().flatten() {
            // Advice: when it cannot be taken, the pages simply stay cached.
            if let Err(e) = dont_need(file, range) {
                tracing::debug!(error = %e, "posix_fadvise failed");
            }
        }
        last = fresh;
    }
}

#[cfg(not(any(target_vendor = "apple", target_os = "haiku", target_os = "redox")))]
fn dont_need(file: &File, range: &Range<u64>) -> std::io::Result<()> {
    let len = std::num::NonZeroU64::new(range.end - range.start);
    rustix::fs::fadvise(file, range.start, len, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// Systems without `posix_fadvise` keep the pages.
#[cfg(any(target_vendor = "apple", target_os = "haiku", target_os = "redox"))]
fn dont_need(_file: &File, _range: &Range<u64>) -> std::io::Result<()> {
    Ok(())
}

/// The byte ranges of the pages numbered `pages` (from 1, as SQLite numbers them) that are leaf
/// pages of the `tweets` table, adjacent ones merged.
pub(crate) fn tweet_leaves(file: &File, page_size: u64, pages: Range<u64>) -> Vec<Range<u64>> {
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for page in pages {
        let start = (page - 1) * page_size;
        if !is_tweet_leaf(file, start, page_size) {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last.end == start => last.end = start + page_size,
            _ => ranges.push(start..start + page_size),
        }
    }
    ranges
}

/// Whether the page at byte `start` is a table leaf whose first row has a `tweets` row's
/// columns. Pages that cannot be read, or that do not read as such a page, are not.
fn is_tweet_leaf(file: &File, start: u64, page_size: u64) -> bool {
    // The page's header: its kind, its number of cells, and where its first cell is.
    let mut header = [0u8; 10];
    if file.read_exact_at(&mut header, start).is_err() || header[0] != TABLE_LEAF {
        return false;
    }
    let cells = u16::from_be_bytes([header[3], header[4]]);
    let first = u64::from(u16::from_be_bytes([header[8], header[9]]));
    if cells == 0 || first < 10 || first >= page_size {
        return false;
    }
    // A table leaf's cell: the payload's size and the rowid (varints), then the record, whose
    // header is its own size and a serial type a column (varints). Five columns' header fits
    // in 9 + 9 + 9 + 5 × 9 bytes.
    let mut cell = [0u8; 72];
    let len = cell.len().min((page_size - first) as usize);
    let cell = &mut cell[..len];
    if file.read_exact_at(cell, start + first).is_err() {
        return false;
    }
    record_columns(cell) == Some(TWEET_COLUMNS)
}

/// The number of columns in the record of a table leaf's cell, `cell` being its first bytes.
fn record_columns(cell: &[u8]) -> Option<usize> {
    let mut at = 0;
    let _payload = varint(cell, &mut at)?;
    let _rowid = varint(cell, &mut at)?;
    let header_start = at;
    let header_len = usize::try_from(varint(cell, &mut at)?).ok()?;
    let header_end = header_start.checked_add(header_len)?;
    if header_end > cell.len() {
        return None;
    }
    let mut columns = 0;
    while at < header_end {
        varint(&cell[..header_end], &mut at)?;
        columns += 1;
    }
    Some(columns)
}

/// One of SQLite's varints (big-endian, 7 bits a byte, a ninth byte of 8 bits) at `*at`.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..9 {
        let byte = *bytes.get(*at)?;
        *at += 1;
        if i == 8 {
            return Some((value << 8) | u64::from(byte));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `value` as SQLite writes a varint.
    fn encode(value: u64) -> Vec<u8> {
        if value >> 56 != 0 {
            let mut out = Vec::with_capacity(9);
            let high = value >> 8;
            for i in (0..8).rev() {
                out.push(((high >> (7 * i)) & 0x7f) as u8 | 0x80);
            }
            out.push(value as u8);
            return out;
        }
        let mut groups = vec![(value & 0x7f) as u8];
        let mut rest = value >> 7;
        while rest != 0 {
            groups.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        groups.reverse();
        groups
    }

    proptest! {
        #[test]
        fn varints_read_back_as_written(value in any::<u64>(), tail in any::<u8>()) {
            let mut bytes = encode(value);
            let len = bytes.len();
            bytes.push(tail);
            let mut at = 0;
            prop_assert_eq!(varint(&bytes, &mut at), Some(value));
            prop_assert_eq!(at, len);
        }

        #[test]
        fn short_or_odd_bytes_are_none_or_a_count_never_a_panic(
            cell in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let _ = record_columns(&cell);
        }
    }
}
