//! Page bodies are written into buffers that are used again.
//!
//! A page is about 24 KB. With billing, a commit of charges releases the responses that waited on
//! it together, so their bodies are freed in a burst and the next round's bodies are allocated
//! anew, often in memory the CPU's cache no longer holds. A buffer given back here goes to the next
//! page as it is, last in first out, so the warmest goes first. It paid with glibc's allocator
//! (docs/BENCHMARKS.md: +5% charged requests per second) and still pays with jemalloc: counted
//! under load with the page cache off, a charged request runs 105,214 instructions with these
//! buffers and 107,893 without (docs/BENCHMARKS.md, "The allocator").

use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;

/// Idle buffers kept at most: with the largest kept size, 16 MiB.
const KEEP: usize = 256;
/// Larger buffers (a page of long tweets) go back to the allocator.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The buffers of page bodies.
pub(crate) static PAGES: Buffers = Buffers::new();

/// A stack of idle buffers.
pub(crate) struct Buffers {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl Buffers {
    const fn new() -> Buffers {
        Buffers {
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty buffer of at least `capacity` bytes: the last one given back, or a new one.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self.idle().pop().unwrap_or_default();
        buf.reserve(capacity);
        buf
    }

    /// `buf` as a response body; the buffer comes back here when the body is dropped.
    pub(crate) fn lend(&'static self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent { buf, home: self })
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() > KEEP_CAPACITY {
            return;
        }
        buf.clear();
        let mut idle = self.idle();
        if idle.len() < KEEP {
            idle.push(buf);
        }
    }
}

/// A buffer out as a body.
struct Lent {
    buf: Vec<u8>,
    home: &'static Buffers,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.home.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffers() -> &'static Buffers {
        Box::leak(Box::new(Buffers::new()))
    }

    #[test]
    fn a_body_s_buffer_is_used_again_once_the_body_is_dropped() {
        let buffers = buffers();
        let mut buf = buffers.take(100);
        buf.extend_from_slice(b"a page");
        let first = buf.as_ptr();
        let body = buffers.lend(buf);
        assert_eq!(&body[..], b"a page");
        let slice = body.slice(2..);
        drop(body);
        // A slice of the body keeps the buffer out.
        let other = buffers.take(100);
        assert_ne!(other.as_ptr(), first);
        drop(slice);
        let again = buffers.take(100);
        assert_eq!(again.as_ptr(), first);
        assert!(again.is_empty(), "a buffer comes back empty");
        assert!(again.capacity() >= 100);
    }

    #[test]
    fn large_buffers_and_buffers_past_the_limit_are_not_kept() {
        let buffers = buffers();
        drop(buffers.lend(Vec::with_capacity(KEEP_CAPACITY + 1)));
        assert_eq!(buffers.idle().len(), 0);
        let bodies: Vec<Bytes> = (0..KEEP + 10)
            .map(|_| buffers.lend(buffers.take(16)))
            .collect();
        drop(bodies);
        assert_eq!(buffers.idle().len(), KEEP);
    }

    #[test]
    fn take_grows_a_smaller_buffer_to_the_capacity_asked() {
        let buffers = buffers();
        drop(buffers.lend(Vec::with_capacity(8)));
        assert!(buffers.take(4096).capacity() >= 4096);
    }
}
