//! Getting tweets into a store: input formats, the streaming ingest pipeline, and synthetic
//! tweets for demos, tests and benchmarks.

pub mod formats;
pub mod reshape;
pub mod synth;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use xgate_model::TweetRecord;
use xgate_store::{Store, StoreError, UpsertSummary};

use formats::{Format, Item};

/// Tweets per store transaction: large enough that commits are a small share of the work, small
/// enough that memory stays flat whatever the input's size.
pub const BATCH: usize = 16384;

/// A part of the input that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `file:line`, or the file alone when the whole file was refused.
    pub place: String,
    pub reason: String,
}

impl Rejection {
    pub fn new(origin: &str, line: u64, reason: impl Into<String>) -> Self {
        Rejection {
            place: format!("{origin}:{line}"),
            reason: reason.into(),
        }
    }

    pub(crate) fn whole(origin: &str, reason: impl Into<String>) -> Self {
        Rejection {
            place: origin.to_owned(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.reason)
    }
}

/// Where tweets come from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// Bytes in memory under a name, such as the demo data built into the binary.
    Bytes {
        name: String,
        data: Vec<u8>,
    },
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Bytes { name, .. } => name.clone(),
        }
    }
}

/// What an ingest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub sources: u64,
    /// Tweets that passed the format's checks.
    pub read: u64,
    /// Tweets stored new or changed, and tweets already stored as given.
    pub stored: UpsertSummary,
    /// Good tweets without media: stored, but not on the media timeline.
    pub without_media: u64,
    /// Lines (or whole sources) refused.
    pub rejected: u64,
}

enum Message {
    Batch(Vec<TweetRecord>),
    Rejected(Rejection),
}

/// Reads every source in `format` (or, with `None`, in the format each source's first bytes
/// show: see [`formats::detect`]) and upserts its tweets into `store`.
///
/// Parsing runs on a blocking thread while the store writes the previous batch, so the two
/// overlap. Each rejection is handed to `on_rejection` as it is found; the good tweets around it
/// are stored all the same. Fails only when the store does, and then stops reading.
pub async fn ingest(
    store: Arc<dyn Store>,
    format: Option<&'static dyn Format>,
    sources: Vec<Source>,
    on_rejection: impl FnMut(&Rejection),
) -> Result<IngestReport, StoreError> {
    ingest_with_progress(store, format, sources, on_rejection, |_| {}).await
}

/// [`ingest`], calling `on_progress` with the totals so far after each stored batch.
pub async fn ingest_with_progress(
    store: Arc<dyn Store>,
    format: Option<&'static dyn Format>,
    sources: Vec<Source>,
    mut on_rejection: impl FnMut(&Rejection),
    mut on_progress: impl FnMut(&IngestReport),
) -> Result<IngestReport, StoreError> {
    let (tx, mut rx) = mpsc::channel::<Message>(1);
    let mut report = IngestReport {
        sources: sources.len() as u64,
        ..IngestReport::default()
    };
    let reader = tokio::task::spawn_blocking(move || read_all(format, sources, &tx));
    while let Some(message) = rx.recv().await {
        match message {
            Message::Batch(batch) => {
                report.read += batch.len() as u64;
                report.without_media += batch.iter().filter(|t| !t.has_media).count() as u64;
                // On error, dropping the receiver stops the reader at its next send.
                report.stored += store.upsert_tweets(batch).await?;
                on_progress(&report);
            }
            Message::Rejected(rejection) => {
                report.rejected += 1;
                on_rejection(&rejection);
            }
        }
    }
    reader
        .await
        .map_err(|e| StoreError::Backend(format!("ingest reader failed: {e}")))?;
    Ok(report)
}

/// The reading side: sources in order, tweets in batches. Returns early when the writing side
/// has gone away.
fn read_all(format: Option<&'static dyn Format>, sources: Vec<Source>, tx: &mpsc::Sender<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut open = true;
    let mut emit = |item: Item| {
        if !open {
            return;
        }
        match item {
            Ok(record) => {
                batch.push(record);
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    open = tx.blocking_send(Message::Batch(full)).is_ok();
                }
            }
            Err(rejection) => open = tx.blocking_send(Message::Rejected(rejection)).is_ok(),
        }
    };
    for source in sources {
        let name = source.name();
        match source {
            Source::File(path) => match format.map_or_else(|| formats::detect_path(&path), Ok) {
                Ok(format) => format.read_path(&path, &name, &mut emit),
                Err(reason) => emit(Err(Rejection::whole(&name, reason))),
            },
            Source::Bytes { data, .. } => match format.or_else(|| formats::detect(&data)) {
                Some(format) => format.read(&mut std::io::Cursor::new(data), &name, &mut emit),
                None => emit(Err(Rejection::whole(&name, formats::unknown()))),
            },
        }
    }
    if open && !batch.is_empty() {
        let _ = tx.blocking_send(Message::Batch(batch));
    }
}
