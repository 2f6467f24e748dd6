//! A cache of rendered pages: the whole response body of a page, kept by (user, position, limit)
//! and answered again without reading the store.
//!
//! A page's body depends only on the store's tweets (the continuation token it carries is a
//! signature of its last tweet), so a body stays right for as long as the store's tweets do. Each
//! entry carries the store's [`Store::pages_version`] read before its page was read; it answers
//! only while the store is still at that version, and the first lookup that sees a new version
//! drops every entry. Backends that cannot tell cheaply when their tweets changed (PostgreSQL,
//! which other nodes write) give no version, and their pages are never cached.
//!
//! The cache is bounded by the bytes of the bodies it holds (quick_cache, whose eviction keeps
//! pages asked for again over pages asked for once). Charging is untouched: a page answered from
//! here is charged like any other.
//!
//! [`Store::pages_version`]: xgate_store::Store::pages_version

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use prometheus_client::metrics::counter::Counter;
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use xgate_model::{TweetId, UserId};
use xgate_upstream::metrics::Metrics;

/// What a cached page is kept by: everything of a request that its body depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PageKey {
    pub user: UserId,
    pub after: Option<TweetId>,
    pub limit: usize,
}

#[derive(Clone)]
struct Entry {
    version: u64,
    body: Bytes,
}

/// What an entry costs beyond its body: the key, the version, the `Bytes` handle and the
/// cache's own bookkeeping, roughly.
const ENTRY_OVERHEAD: u64 = 128;
/// A guess at a page's size, for the number of entries the cache sizes its tables for.
const TYPICAL_PAGE: u64 = 24 * 1024;

#[derive(Clone)]
struct BodyBytes;

impl Weighter<PageKey, Entry> for BodyBytes {
    fn weight(&self, _key: &PageKey, entry: &Entry) -> u64 {
        entry.body.len() as u64 + ENTRY_OVERHEAD
    }
}

/// Rendered pages, at most a given number of bytes of them.
pub(crate) struct PageCache {
    entries: Cache<PageKey, Entry, BodyBytes>,
    /// The newest store version a lookup was made at.
    version: AtomicU64,
    hits: Counter,
    misses: Counter,
}

impl PageCache {
    /// A cache of at most `bytes` of pages, counting its hits and misses in `metrics`; `None`
    /// for a size of 0 (caching off).
    pub(crate) fn new(bytes: usize, metrics: &Metrics) -> Option<Self> {
        if bytes == 0 {
            return None;
        }
        let bytes = bytes as u64;
        let (hits, misses) = metrics.page_cache_counters();
        Some(PageCache {
            entries: Cache::with_weighter((bytes / TYPICAL_PAGE).max(1) as usize, bytes, BodyBytes),
            version: AtomicU64::new(0),
            hits,
            misses,
        })
    }

    /// Counts hits and misses in `metrics` from now on.
    pub(crate) fn count_in(&mut self, metrics: &Metrics) {
        (self.hits, self.misses) = metrics.page_cache_counters();
    }

    /// The body of the page `key` as read at `version`, if it is here; counts a hit or a miss.
    pub(crate) fn get(&self, key: &PageKey, version: u64) -> Option<Bytes> {
        // Versions only grow. The first lookup at a newer one drops the older entries: none of
        // them can answer again. (A plain load first: the common lookup only reads the line.)
        if self.version.load(Ordering::Acquire) < version
            && self.version.fetch_max(version, Ordering::AcqRel) < version
        {
            self.entries.clear();
        }
        let found = self
            .entries
            .get(key)
            .filter(|entry| entry.version == version)
            .map(|entry| entry.body);
        match found {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        };
        found
    }

    /// Keeps `body` as the page `key`, read from the store at `version`; a page read before a
    /// change that a lookup has already seen is not kept (it could never answer).
    pub(crate) fn put(&self, key: PageKey, version: u64, body: Bytes) {
        if version < self.version.load(Ordering::Acquire) {
            return;
        }
        self.entries.insert(key, Entry { version, body });
    }

    /// The bytes the cache holds now, bodies and overhead.
    #[cfg(test)]
    pub(crate) fn weight(&self) -> u64 {
        self.entries.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: u64, after: Option<u64>) -> PageKey {
        PageKey {
            user: UserId(user),
            after: after.map(TweetId),
            limit: 10,
        }
    }

    #[test]
    fn caching_is_off_at_size_zero() {
        assert!(PageCache::new(0, &Metrics::default()).is_none());
    }

    #[test]
    fn a_page_answers_at_its_version_and_not_after_the_store_changed() {
        let metrics = Metrics::default();
        let cache = PageCache::new(1 << 20, &metrics).unwrap();
        assert_eq!(cache.get(&key(1, None), 7), None);
        cache.put(key(1, None), 7, Bytes::from_static(b"page one"));
        cache.put(key(1, Some(5)), 7, Bytes::from_static(b"page two"));
        assert_eq!(
            cache.get(&key(1, None), 7).as_deref(),
            Some(&b"page one"[..])
        );
        assert_eq!(
            cache.get(&key(1, Some(5)), 7).as_deref(),
            Some(&b"page two"[..])
        );
        // Another user, another position, another limit: other pages.
        assert_eq!(cache.get(&key(2, None), 7), None);
        assert_eq!(cache.get(&key(1, Some(6)), 7), None);
        let mut other_limit = key(1, None);
        other_limit.limit = 20;
        assert_eq!(cache.get(&other_limit, 7), None);
        // The store changed: everything is dropped, and stays dropped.
        assert_eq!(cache.get(&key(1, None), 8), None);
        assert_eq!(cache.get(&key(1, Some(5)), 8), None);
        assert_eq!(cache.weight(), 0);
        let (hits, misses) = metrics.page_cache_counters();
        assert_eq!((hits.get(), misses.get()), (2, 6));
    }

    #[test]
    fn a_page_read_before_a_change_and_put_after_it_never_answers() {
        let cache = PageCache::new(1 << 20, &Metrics::default()).unwrap();
        // A lookup at version 8 saw the change first; a slower request that read its page at
        // version 7 puts it back afterwards.
        assert_eq!(cache.get(&key(1, None), 8), None);
        cache.put(key(1, None), 7, Bytes::from_static(b"old page"));
        assert_eq!(cache.weight(), 0, "an outdated page is not kept");
        assert_eq!(cache.get(&key(1, None), 8), None);
    }

    #[test]
    fn the_cache_holds_no_more_bytes_than_it_was_given() {
        let size = 256 * 1024;
        let cache = PageCache::new(size, &Metrics::default()).unwrap();
        let body = Bytes::from(vec![b'x'; 10 * 1024]);
        for user in 1..=100 {
            cache.put(key(user, None), 1, body.clone());
        }
        assert!(
            cache.weight() <= size as u64,
            "{} bytes held",
            cache.weight()
        );
        assert!(cache.weight() > 0);
    }
}
