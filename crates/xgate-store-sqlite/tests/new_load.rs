//! A load into a new store leaves the tweets it wrote on disk, not in the kernel's page cache,
//! and the store it leaves is whole.

use std::fs::File;
use std::path::Path;

use xgate_model::{TweetRecord, UserId, sample};
use xgate_store::Store;
use xgate_store_sqlite::SqliteStore;

/// How many of `path`'s pages (the system's, not SQLite's) the page cache holds, and how many
/// the file has, by `mincore` over a map of it, which does not read the file.
fn resident(path: &Path) -> (usize, usize) {
    let file = File::open(path).unwrap();
    // SAFETY: the map is read-only, and nothing writes the file while the map lives.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
    let mut held = vec![0u8; map.len().div_ceil(page)];
    // SAFETY: `map` is a live mapping of `map.len()` bytes, and `held` has a byte for each of
    // its pages.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), held.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    (held.iter().filter(|b| **b & 1 == 1).count(), held.len())
}

fn batch(users: std::ops::Range<u64>, per_user: u64, first: u64) -> Vec<TweetRecord> {
    users
        .flat_map(|user| {
            (0..per_user).map(move |i| sample::record(first + user * 1000 + i, user, true))
        })
        .collect()
}

#[test]
fn a_new_stores_tweet_pages_are_left_on_disk() {
    // In the build's own directory: a file system on disk (a tmpfs keeps every page it has).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("new.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let load = SqliteStore::open_for_new_load(&path).unwrap();
    for round in 0..8 {
        rt.block_on(load.upsert_tweets(batch(1..200, 10, round * 10)))
            .unwrap();
    }
    rt.block_on(load.finish_load()).unwrap();
    drop(load);

    let (held, pages) = resident(&path);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        size > 8 << 20,
        "a store of {size} bytes is too small to tell"
    );
    // Indexes, authors and the schema stay cached; the tweets' rows are most of the file.
    assert!(
        held * 5 < pages,
        "{held} of the store's {pages} pages are still in the page cache"
    );

    let store = SqliteStore::open(&path).unwrap();
    for user in [1, 100, 199] {
        let page = rt
            .block_on(store.media_page(UserId(user), None, 100))
            .unwrap();
        assert_eq!(page.len(), 80, "user {user}");
        let expected = sample::record(70 + user * 1000 + 9, user, true);
        assert_eq!(page[0].json, expected.json);
    }
}
