//! The charge journal: charges answered before their commit, kept where a crash of the process
//! cannot lose them.
//!
//! A charge is written to the journal, a file mapped into the server's memory, before its response
//! leaves; the meter's writer then records it in the ledger with the charges around it, and notes
//! in the same transaction how far the journal is recorded (its *folded* mark). A response thus
//! waits for a copy of 128 bytes, not for a commit.
//!
//! What a process writes to a shared mapping of a file is in the file's pages in the operating
//! system's page cache as soon as it is written, and stays there when the process dies: after
//! `kill -9`, a panic or an out-of-memory kill, every charge whose response left is in the ledger
//! or in the journal, and the store records the journal's entries from its folded mark on when it
//! is next opened, each exactly once (the mark moves in the transaction that records them). A
//! power cut or a crash of the operating system can lose what neither the ledger's last sync nor
//! the kernel's writeback had put on disk (docs/BILLING.md, "Guarantees").
//!
//! The file: a header of [`HEADER`] bytes ([`MAGIC`], the layout's version, the slot size, the
//! number of slots and the journal's id, which the store keeps beside its folded mark so that a
//! journal is never applied to a store it does not belong to), then the slots. Entry `n` (counted
//! from 0 over the journal's whole life) is in slot `n % slots`, so an entry may be written once
//! every entry `slots` or more before it is folded. A slot holds, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | the entry's number |
//! | 8..24 | the request id (a UUID minted by the server) |
//! | 24..32, 32..40 | account id, key id |
//! | 40..48 | when the request came, ms since the epoch |
//! | 48..56, 56..64 | cost, latency in µs |
//! | 64..66 | the response's status |
//! | 66, 67..124 | the endpoint's length and bytes (at most [`ENDPOINT_MAX`]) |
//! | 124..128 | CRC-32 of bytes 0..124 |
//!
//! A slot whose checksum does not match (never written, or written in part when the process
//! died, before its response could leave) holds no entry.
//!
//! One process writes a journal at a time: it holds an exclusive lock (`flock`) on the file for
//! as long as it has the journal open.

use std::borrow::Cow;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use memmap2::MmapMut;

use crate::StoreError;
use crate::accounts::{AccountId, KeyId, MintedId, RequestId, RequestRecord};

/// The first bytes of every journal.
pub const MAGIC: [u8; 8] = *b"XGCHARGE";
/// The layout's version.
const VERSION: u32 = 1;
/// Bytes before the first slot: a page, so that slots never straddle one needlessly.
pub const HEADER: usize = 4096;
/// Bytes a slot takes.
pub const SLOT: usize = 128;
/// The longest endpoint an entry holds; a request on a longer one is charged without the journal.
pub const ENDPOINT_MAX: usize = 57;
/// Slots in a new journal: 2 MiB of them. The writer folds entries a commit at a time, about a
/// millisecond apart under load, so the ring holds tenths of a second of the fastest load this
/// server meets; when it is full, charges wait for their commit as they would without it.
pub const DEFAULT_SLOTS: u64 = 16 * 1024;

const CHECKED: usize = SLOT - 4;

/// A journal opened for writing, its lock held.
pub struct ChargeJournal {
    path: PathBuf,
    id: [u8; 16],
    slots: u64,
    /// Entries before this one are recorded in the store.
    folded: AtomicU64,
    inner: Mutex<Inner>,
    /// Holds the lock; closed (and the lock released) with the journal.
    _file: File,
}

struct Inner {
    map: MmapMut,
    /// The number the next entry gets.
    next: u64,
}

/// A journal just opened: the entries it holds from the store's folded mark on, in order, for the
/// store to record before anything else.
pub struct Opened {
    pub journal: ChargeJournal,
    pub unfolded: Vec<(u64, RequestRecord)>,
}

/// Why a journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process has it open: that process records its entries.
    #[error("another process holds the charge journal {0}")]
    Busy(PathBuf),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What the store knows of its journal: its id, and how far its entries are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub id: [u8; 16],
    pub folded: u64,
}

/// A charge encoded for a slot, all but its number and checksum.
pub struct Encoded([u8; SLOT]);

impl ChargeJournal {
    /// Opens the journal at `path` for the store whose mark is `mark` (`None`: the store has none
    /// yet), or makes a new one of `slots` slots when there is no file. The caller records
    /// [`Opened::unfolded`] and the mark after it ([`ChargeJournal::next`]) in one transaction,
    /// then tells the journal ([`ChargeJournal::folded`]), before it writes.
    pub fn open(path: &Path, mark: Option<Mark>, slots: u64) -> Result<Opened, OpenError> {
        let io = |e: std::io::Error| {
            OpenError::Store(StoreError::Backend(format!(
                "charge journal {}: {e}",
                path.display()
            )))
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(OpenError::Busy(path.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let length = file.metadata().map_err(io)?.len();
        if length == 0 {
            // Written out, not only sized: a write through the mapping into a hole of a sparse
            // file makes the filesystem allocate it then, and a full disk would answer that with
            // SIGBUS. Allocated now, a full disk is an error here instead.
            let size = usize::try_from(slots.max(1))
                .ok()
                .and_then(|slots| slots.checked_mul(SLOT)?.checked_add(HEADER))
                .ok_or_else(|| io(std::io::Error::other(format!("{slots} slots"))))?;
            (&file).write_all(&vec![0; size]).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        // SAFETY: the mapping is of a file this process holds an exclusive lock on, for as long
        // as the mapping lives (the journal owns both); no other process following the journal's
        // protocol writes it meanwhile, and this process changes it only through the mapping.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
        // A new file, or one whose maker died before it wrote the header: either holds no entry
        // (the header is on disk before the first entry is written).
        let fresh = length == 0 || (map.len() >= HEADER && map[..HEADER] == [0; HEADER]);
        let (id, slots) = if fresh {
            let slots = slots.max(1);
            let id = MintedId::new().bytes();
            write_header(&mut map, &id, slots);
            map.flush_range(0, HEADER).map_err(io)?;
            (id, slots)
        } else {
            read_header(&map, path)?
        };
        let entries: Vec<(u64, RequestRecord)> = (0..slots)
            .filter_map(|slot| decode(slot_bytes(&map, slot, slots), slot, slots))
            .collect();
        let from = match mark {
            Some(mark) if mark.id == id => mark.folded,
            // A journal that holds no entry (new, or never written to): nothing to record, and
            // nothing lost by taking it. It becomes the store's when the caller writes its mark:
            // the store's first, or in place of one naming a journal that is gone (deleted, or
            // left behind when the store was moved), whose unrecorded entries went with it.
            _ if entries.is_empty() => 0,
            // A journal made for another store, or a store restored from before its journal.
            _ => {
                return Err(OpenError::Store(StoreError::Backend(format!(
                    "the charge journal {} does not belong to this store; if the store was \
                     restored or replaced, move the journal aside (its charges are not in this \
                     store's ledger)",
                    path.display()
                ))));
            }
        };
        let mut unfolded: Vec<(u64, RequestRecord)> =
            entries.into_iter().filter(|(n, _)| *n >= from).collect();
        unfolded.sort_unstable_by_key(|(n, _)| *n);
        let next = unfolded.last().map_or(from, |(n, _)| n + 1);
        Ok(Opened {
            journal: ChargeJournal {
                path: path.to_path_buf(),
                id,
                slots,
                folded: AtomicU64::new(from),
                inner: Mutex::new(Inner { map, next }),
                _file: file,
            },
            unfolded,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal's id, which the store keeps with its mark.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// The record's slot bytes, or `None` if the journal cannot hold it: an id not minted by
    /// this process, a response kept for an `Idempotency-Key`, an endpoint longer than
    /// [`ENDPOINT_MAX`]. Such a charge waits for its commit.
    pub fn encode(record: &RequestRecord) -> Option<Encoded> {
        let RequestId::Minted(id) = &record.request_id else {
            return None;
        };
        let endpoint = record.endpoint.as_bytes();
        if record.idempotency.is_some() || endpoint.len() > ENDPOINT_MAX {
            return None;
        }
        let mut slot = [0; SLOT];
        slot[8..24].copy_from_slice(&id.bytes());
        slot[24..32].copy_from_slice(&record.account.0.to_le_bytes());
        slot[32..40].copy_from_slice(&record.key.0.to_le_bytes());
        slot[40..48].copy_from_slice(&record.at_ms.to_le_bytes());
        slot[48..56].copy_from_slice(&record.cost.to_le_bytes());
        slot[56..64].copy_from_slice(&record.latency_us.to_le_bytes());
        slot[64..66].copy_from_slice(&record.status.to_le_bytes());
        slot[66] = endpoint.len() as u8;
        slot[67..67 + endpoint.len()].copy_from_slice(endpoint);
        Some(Encoded(slot))
    }

    /// The next slot, held until the [`Writing`] is dropped, or `None` when every slot holds an
    /// entry not yet folded. Entries are numbered in the order their slots are taken, and whatever
    /// the holder does before dropping it (the meter sends the charge to its writer) happens in
    /// that order too.
    pub fn next_slot(&self) -> Option<Writing<'_>> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let folded = self.folded.load(Ordering::Acquire);
        if inner.next - folded.min(inner.next) >= self.slots {
            return None;
        }
        Some(Writing {
            journal: self,
            inner,
        })
    }

    /// Notes that the store has recorded every entry before `n`: their slots may be written again.
    pub fn folded(&self, n: u64) {
        self.folded.fetch_max(n, Ordering::AcqRel);
    }

    /// The store's mark for this journal with every entry before `n` recorded.
    pub fn mark(&self, n: u64) -> Mark {
        Mark {
            id: self.id,
            folded: n,
        }
    }

    /// Entry `n`, read back, while it is not folded.
    pub fn entry(&self, n: u64) -> Option<RequestRecord> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = n % self.slots;
        decode(slot_bytes(&inner.map, slot, self.slots), slot, self.slots)
            .filter(|(found, _)| *found == n)
            .map(|(_, record)| record)
    }

    /// The number the next entry will get: with nothing in flight, every entry before it is
    /// folded once the store has recorded them.
    pub fn next(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next
    }
}

/// A slot taken, the journal's lock held.
pub struct Writing<'a> {
    journal: &'a ChargeJournal,
    inner: MutexGuard<'a, Inner>,
}

impl Writing<'_> {
    /// The number the entry written here gets.
    pub fn number(&self) -> u64 {
        self.inner.next
    }

    /// Writes `entry` as entry [`Writing::number`]; the next slot is the one after.
    pub fn write(&mut self, mut entry: Encoded) {
        let n = self.inner.next;
        entry.0[0..8].copy_from_slice(&n.to_le_bytes());
        let sum = crc32fast::hash(&entry.0[..CHECKED]);
        entry.0[CHECKED..].copy_from_slice(&sum.to_le_bytes());
        let at = slot_offset(n % self.journal.slots);
        self.inner.map[at..at + SLOT].copy_from_slice(&entry.0);
        self.inner.next = n + 1;
    }
}

fn slot_offset(slot: u64) -> usize {
    HEADER + slot as usize * SLOT
}

fn slot_bytes(map: &[u8], slot: u64, slots: u64) -> &[u8] {
    debug_assert!(slot < slots);
    let at = slot_offset(slot);
    &map[at..at + SLOT]
}

fn write_header(map: &mut [u8], id: &[u8; 16], slots: u64) {
    map[0..8].copy_from_slice(&MAGIC);
    map[8..12].copy_from_slice(&VERSION.to_le_bytes());
    map[12..16].copy_from_slice(&(SLOT as u32).to_le_bytes());
    map[16..24].copy_from_slice(&slots.to_le_bytes());
    map[24..40].copy_from_slice(id);
}

fn read_header(map: &[u8], path: &Path) -> Result<([u8; 16], u64), OpenError> {
    let bad = |what: &str| {
        OpenError::Store(StoreError::Backend(format!(
            "{} is not a charge journal xgate can read: {what}",
            path.display()
        )))
    };
    if map.len() < HEADER || map[0..8] != MAGIC {
        return Err(bad("no journal header"));
    }
    let word = |at: usize| u32::from_le_bytes(map[at..at + 4].try_into().expect("4 bytes"));
    if word(8) != VERSION {
        return Err(bad(&format!("layout version {}", word(8))));
    }
    if word(12) as usize != SLOT {
        return Err(bad(&format!("slots of {} bytes", word(12))));
    }
    let slots = u64::from_le_bytes(map[16..24].try_into().expect("8 bytes"));
    let fits = slots
        .checked_mul(SLOT as u64)
        .and_then(|bytes| bytes.checked_add(HEADER as u64))
        .is_some_and(|size| size <= map.len() as u64);
    if slots == 0 || !fits {
        return Err(bad(&format!("{slots} slots in {} bytes", map.len())));
    }
    let id = map[24..40].try_into().expect("16 bytes");
    Ok((id, slots))
}

/// The entry in `bytes`, the journal's slot `slot` of `slots`, if it holds a whole one.
fn decode(bytes: &[u8], slot: u64, slots: u64) -> Option<(u64, RequestRecord)> {
    let sum = u32::from_le_bytes(bytes[CHECKED..SLOT].try_into().ok()?);
    if crc32fast::hash(&bytes[..CHECKED]) != sum {
        return None;
    }
    let int = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let n = u64::from_le_bytes(bytes[0..8].try_into().ok()?);
    let length = usize::from(bytes[66]);
    if n % slots != slot || length > ENDPOINT_MAX {
        return None;
    }
    let endpoint = std::str::from_utf8(&bytes[67..67 + length]).ok()?;
    let id: [u8; 16] = bytes[8..24].try_into().ok()?;
    Some((
        n,
        RequestRecord {
            request_id: RequestId::Minted(MintedId::from_journal(id)),
            account: AccountId(int(24)),
            key: KeyId(int(32)),
            at_ms: int(40),
            endpoint: Cow::Owned(endpoint.to_owned()),
            status: u16::from_le_bytes(bytes[64..66].try_into().ok()?),
            cost: int(48),
            latency_us: int(56),
            idempotency: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64, endpoint: &str) -> RequestRecord {
        RequestRecord {
            request_id: RequestId::Minted(MintedId::new()),
            account: AccountId(n % 3 + 1),
            key: KeyId(n % 5 + 1),
            at_ms: 1_700_000_000_000 + n,
            endpoint: Cow::Owned(endpoint.to_owned()),
            status: 200,
            cost: n % 4 + 1,
            latency_us: n * 7,
            idempotency: None,
        }
    }

    fn append(journal: &ChargeJournal, record: &RequestRecord) -> Option<u64> {
        let entry = ChargeJournal::encode(record).expect("journalable");
        let mut slot = journal.next_slot()?;
        let n = slot.number();
        slot.write(entry);
        Some(n)
    }

    fn open(path: &Path, mark: Option<Mark>, slots: u64) -> Opened {
        match ChargeJournal::open(path, mark, slots) {
            Ok(opened) => opened,
            Err(e) => panic!("open: {e}"),
        }
    }

    #[test]
    fn entries_come_back_from_the_folded_mark_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let opened = open(&path, None, 8);
        assert!(opened.unfolded.is_empty());
        let journal = opened.journal;
        let written: Vec<RequestRecord> = (0..5)
            .map(|n| record(n, "POST /user/medias/continuation"))
            .collect();
        for (n, rec) in written.iter().enumerate() {
            assert_eq!(append(&journal, rec), Some(n as u64));
        }
        let mark = journal.mark(2);
        drop(journal);
        let again = open(&path, Some(mark), 8);
        let numbers: Vec<u64> = again.unfolded.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, vec![2, 3, 4]);
        let records: Vec<&RequestRecord> = again.unfolded.iter().map(|(_, r)| r).collect();
        assert_eq!(records, written[2..].iter().collect::<Vec<_>>());
        assert_eq!(again.journal.next(), 5);
    }

    #[test]
    fn a_full_ring_takes_nothing_until_entries_are_folded() {
        let dir = tempfile::tempdir().unwrap();
        let journal = open(&dir.path().join("j"), None, 4).journal;
        for n in 0..4 {
            assert_eq!(append(&journal, &record(n, "GET /x")), Some(n as u64));
        }
        assert_eq!(append(&journal, &record(4, "GET /x")), None);
        journal.folded(1);
        assert_eq!(append(&journal, &record(4, "GET /x")), Some(4));
        assert_eq!(append(&journal, &record(5, "GET /x")), None);
    }

    #[test]
    fn a_torn_slot_holds_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let journal = open(&path, None, 8).journal;
        for n in 0..3 {
            append(&journal, &record(n, "GET /x"));
        }
        let mark = journal.mark(0);
        drop(journal);
        // Entry 1 written in part: one byte of its endpoint changed.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[slot_offset(1) + 70] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        let numbers: Vec<u64> = open(&path, Some(mark), 8)
            .unfolded
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(numbers, vec![0, 2]);
    }

    #[test]
    fn a_journal_of_another_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let journal = open(&path, None, 8).journal;
        append(&journal, &record(1, "GET /x"));
        drop(journal);
        let foreign = Mark {
            id: [7; 16],
            folded: 0,
        };
        assert!(matches!(
            ChargeJournal::open(&path, Some(foreign), 8),
            Err(OpenError::Store(_))
        ));
        // Nor to a store that has no mark: it may be older than the journal.
        assert!(matches!(
            ChargeJournal::open(&path, None, 8),
            Err(OpenError::Store(_))
        ));
        // Refusing wrote nothing: the journal still opens for its own store.
        assert!(std::fs::read(&path).unwrap()[..8] == MAGIC);
    }

    #[test]
    fn a_journal_without_entries_is_taken_in_place_of_one_gone() {
        // The store's mark names a journal that is no longer there: a file made now, one whose
        // maker died before its header, or one made and never written to holds no entry and is
        // opened, from its first entry.
        let dir = tempfile::tempdir().unwrap();
        let gone = Mark {
            id: [7; 16],
            folded: 40,
        };
        let path = dir.path().join("j");
        let opened = open(&path, Some(gone), 8);
        assert!(opened.unfolded.is_empty());
        assert_ne!(opened.journal.id(), gone.id);
        assert_eq!(opened.journal.next(), 0);
        assert_eq!(append(&opened.journal, &record(1, "GET /x")), Some(0));

        let headless = dir.path().join("h");
        std::fs::write(&headless, vec![0; HEADER + 8 * SLOT]).unwrap();
        let opened = open(&headless, Some(gone), 8);
        assert!(opened.unfolded.is_empty());
        assert_ne!(opened.journal.id(), gone.id);

        let unwritten = dir.path().join("u");
        let made = open(&unwritten, None, 8).journal.id();
        let opened = open(&unwritten, Some(gone), 8);
        assert!(opened.unfolded.is_empty());
        assert_eq!(opened.journal.id(), made, "kept as it is");
        assert_eq!(opened.journal.next(), 0);
    }

    #[test]
    fn one_process_writes_a_journal_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let first = open(&path, None, 8).journal;
        let mark = first.mark(0);
        assert!(matches!(
            ChargeJournal::open(&path, Some(mark), 8),
            Err(OpenError::Busy(_))
        ));
        drop(first);
        assert!(ChargeJournal::open(&path, Some(mark), 8).is_ok());
    }

    #[test]
    fn a_file_that_is_no_journal_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, b"not a journal at all").unwrap();
        assert!(matches!(
            ChargeJournal::open(&path, None, 8),
            Err(OpenError::Store(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a journal at all");
    }

    #[test]
    fn charges_the_journal_cannot_hold_are_left_to_the_commit() {
        let given = RequestRecord {
            request_id: RequestId::Given("abc".into()),
            ..record(1, "GET /x")
        };
        assert!(ChargeJournal::encode(&given).is_none());
        let long = record(1, &"x".repeat(ENDPOINT_MAX + 1));
        assert!(ChargeJournal::encode(&long).is_none());
        assert!(ChargeJournal::encode(&record(1, &"x".repeat(ENDPOINT_MAX))).is_some());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Whatever runs of writes and folds a journal sees, reopened it gives back exactly
            /// the entries written from the folded mark on, in order, as they were written.
            #[test]
            fn reopened_a_journal_gives_back_what_is_not_folded(
                slots in 1u64..12,
                steps in proptest::collection::vec((0usize..6, 0u64..4), 1..30),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("j");
                let journal = open(&path, None, slots).journal;
                let mut written: Vec<RequestRecord> = Vec::new();
                let mut folded = 0u64;
                for (writes, fold) in steps {
                    for _ in 0..writes {
                        let rec = record(written.len() as i64, "POST /user/medias/continuation");
                        match append(&journal, &rec) {
                            Some(n) => {
                                prop_assert_eq!(n, written.len() as u64);
                                written.push(rec);
                            }
                            None => prop_assert_eq!(written.len() as u64 - folded, slots),
                        }
                    }
                    folded = (folded + fold).min(written.len() as u64);
                    journal.folded(folded);
                }
                let mark = journal.mark(folded);
                drop(journal);
                let again = open(&path, Some(mark), slots);
                let numbers: Vec<u64> = again.unfolded.iter().map(|(n, _)| *n).collect();
                let expected: Vec<u64> = (folded..written.len() as u64).collect();
                prop_assert_eq!(numbers, expected);
                for (n, rec) in &again.unfolded {
                    prop_assert_eq!(rec, &written[*n as usize]);
                }
                prop_assert_eq!(again.journal.next(), written.len() as u64);
            }
        }
    }
}
