//! Where a credit is charged: reserve before the work, settle after it, in group commits.
//!
//! - **Reserve** happens in memory, before a request runs: the account's known balance and free
//!   allowance, less what requests in flight have reserved, must cover the price. It never waits
//!   on the database (except to load an account it has not seen, or to re-read one that looks
//!   empty, in case it was topped up), and it holds no lock across the request.
//! - **Settle** sends the charge to one writer task, which records every charge that arrived
//!   meanwhile in one transaction (group commit) and answers each. The database applies each
//!   charge only if the account covers it, so the balance never goes below zero even when another
//!   node spent the same credits: such a request is answered 402 and not charged. A request's
//!   response leaves only after its charge is committed, as durably as the store commits charges
//!   (docs/BILLING.md, "Guarantees").
//! - **Settle through the journal**, when the store keeps a charge journal for this process
//!   ([`xgate_store::journal`]: the embedded store's serving process): the charge is written to
//!   the journal, which a crash of the process does not lose, and answered at once from this
//!   node's view of the account; the writer records it with the next commit, moving the journal's
//!   mark in the same transaction. This node is then the account's only spender, so its view is
//!   exact. A charge the journal cannot take (its slots all wait for the writer, an id given by
//!   a caller, a kept response) waits for its commit as above.
//! - **Release** happens when a reservation is dropped unsettled: a failed request, a panic (the
//!   stack unwinds through it), a client that went away (its future is dropped).
//!
//! The writer task, not the waiting request, applies each commit's outcome to the in-memory
//! account, so a request cancelled while its charge commits leaves the books and the cache right.

use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use xgate_store::StoreError;
use xgate_store::accounts::{Account, AccountId, AccountStore, Recorded, RequestRecord};
use xgate_store::journal::ChargeJournal;

use crate::clock;

/// How many charges one commit takes at most.
const MAX_BATCH: usize = 1024;
/// Scheduler rounds the writer lets pass before a commit, for more charges to join it (measured:
/// 1 round +5%, 4 to 16 rounds +22% charged requests per second at 32 connections; see
/// docs/BENCHMARKS.md).
const YIELDS: usize = 4;
/// Charges waiting for the writer before senders wait too.
const QUEUE: usize = 16 * 1024;
/// An account that looks unable to pay is re-read at most this often (a top-up shows after it).
const RECHECK: Duration = Duration::from_millis(250);
/// How long the writer first waits before it records again charges already answered from the
/// journal whose commit failed; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long a commit that no response waits for (each of its charges answered from the journal
/// already) waits for more charges to join it. Every commit costs a sync of the ledger and the
/// hand-offs to and from the threads that write it; with the journal they need not come as fast
/// as responses do (measured: a quarter of the syncs, a third of the context switches; see
/// docs/BENCHMARKS.md).
const LINGER: Duration = Duration::from_millis(10);

/// Why a reservation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("insufficient credits")]
    Insufficient { remaining: i64 },
    #[error("unknown account")]
    UnknownAccount,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The meter of every account this node serves.
pub struct Meter {
    store: Arc<dyn AccountStore>,
    /// By account id (this server's own numbers), so hashed with a fast hash, not SipHash.
    accounts: Mutex<HashMap<AccountId, Local>>,
    queue: mpsc::Sender<Message>,
    /// The store's charge journal, if it keeps one for this process.
    journal: Option<Arc<ChargeJournal>>,
}

/// What this node knows of an account.
#[derive(Debug)]
struct Local {
    balance: i64,
    free_left: i64,
    /// The month `free_left` belongs to.
    month: Arc<str>,
    /// Credits held by requests in flight on this node.
    reserved: i64,
    /// Of `reserved`, the credits of charges answered from the journal and not yet recorded.
    journaled: i64,
    /// Charges of the account in commits under way: the store may hold them already, while
    /// `reserved` still does.
    committing: u32,
    /// Charges of the account whose commits have ended: a read of the account during which this
    /// moved may have seen the store before or after them.
    committed: u64,
    read_at: Instant,
}

/// How many of an account's charges had ended their commits when a read of it began: `None` if
/// this node did not know the account yet. A commit under way then is still under way at the end
/// of the read, or has ended and moved the count.
type ReadMark = Option<u64>;

impl Local {
    fn new(account: &Account, month: &Arc<str>) -> Local {
        Local {
            balance: account.balance,
            free_left: account.free_left(month),
            month: Arc::clone(month),
            reserved: 0,
            journaled: 0,
            committing: 0,
            committed: 0,
            read_at: Instant::now(),
        }
    }

    fn available(&self) -> i64 {
        self.balance + self.free_left - self.reserved
    }

    /// One of the account's charges is out of its commit, whatever the commit's outcome.
    fn commit_ended(&mut self) {
        // Saturating: a log line's account may have become known while its commit ran.
        self.committing = self.committing.saturating_sub(1);
        self.committed += 1;
    }

    fn mark(&self) -> ReadMark {
        Some(self.committed)
    }

    /// Takes `account` as read from the store, the read having begun at `mark`, unless a commit
    /// of the account's charges was under way at any moment of the read: the store may then have
    /// held charges that `reserved` still counts, and the read would count them twice (refusing
    /// requests the account can pay for), or not hold charges this node has already released.
    /// That commit's own outcome brings the balance up to date instead. A read for a new month
    /// is always taken: the free allowance must be the month's.
    fn take_read(&mut self, account: &Account, month: &Arc<str>, mark: ReadMark) -> bool {
        let quiet = self.committing == 0 && mark == Some(self.committed);
        if !quiet && self.month == *month {
            return false;
        }
        self.balance = account.balance;
        self.free_left = account.free_left(month);
        self.month = Arc::clone(month);
        self.read_at = Instant::now();
        true
    }
}

#[allow(
    clippy::large_enum_variant,
    reason = "a job moves through the channel's preallocated blocks by value: boxing it cost an \
              allocation per charge"
)]
enum Message {
    Job(Job),
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
}

struct Job {
    record: RequestRecord,
    /// Credits this job's reservation holds, released when the job's outcome is known.
    reserved: i64,
    reply: Option<oneshot::Sender<Result<Recorded, StoreError>>>,
    /// The charge's entry in the journal, when it was answered from there.
    entry: Option<u64>,
}

impl Meter {
    /// Starts the meter and its writer task on the current runtime.
    pub fn start(store: Arc<dyn AccountStore>) -> Arc<Meter> {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let meter = Arc::new(Meter {
            journal: store.charge_journal(),
            store,
            accounts: Mutex::new(HashMap::new()),
            queue,
        });
        tokio::spawn(writer(Arc::downgrade(&meter), meter.store.clone(), jobs));
        meter
    }

    fn accounts(&self) -> MutexGuard<'_, HashMap<AccountId, Local>> {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `cost` credits of `account` for a request about to run.
    pub async fn reserve(
        self: &Arc<Self>,
        account: AccountId,
        cost: i64,
    ) -> Result<Reservation, Refusal> {
        let month = clock::month();
        let mut reread = false;
        loop {
            {
                let mut accounts = self.accounts();
                if let Some(local) = accounts.get_mut(&account).filter(|l| l.month == month) {
                    if local.available() >= cost {
                        local.reserved += cost;
                        return Ok(Reservation {
                            meter: Arc::clone(self),
                            account,
                            cost,
                            held: true,
                        });
                    }
                    if reread || local.read_at.elapsed() < RECHECK {
                        return Err(Refusal::Insufficient {
                            remaining: local.available().max(0),
                        });
                    }
                }
            }
            let mark = self.read_mark(account);
            let fresh = self
                .store
                .account(account)
                .await?
                .ok_or(Refusal::UnknownAccount)?;
            self.refresh(&fresh, &month, mark);
            reread = true;
        }
    }

    fn read_mark(&self, account: AccountId) -> ReadMark {
        self.accounts().get(&account).and_then(Local::mark)
    }

    /// Takes `account`, read from the store since `mark`, as this node's view of it where that
    /// is safe ([`Local::take_read`]).
    fn refresh(&self, account: &Account, month: &Arc<str>, mark: ReadMark) {
        match self.accounts().entry(account.id) {
            Entry::Vacant(vacant) => {
                vacant.insert(Local::new(account, month));
            }
            Entry::Occupied(mut known) => {
                known.get_mut().take_read(account, month, mark);
            }
        }
    }

    /// Counts the charges of `waiters` as being committed, before their commit begins.
    fn committing(&self, waiters: &[Waiter]) {
        let mut accounts = self.accounts();
        for waiter in waiters {
            if let Some(local) = accounts.get_mut(&waiter.account) {
                local.committing += 1;
            }
        }
    }

    /// A charge whose commit failed and which stays held, to be committed again.
    fn held_over(&self, waiter: &Waiter) {
        if let Some(local) = self.accounts().get_mut(&waiter.account) {
            local.commit_ended();
        }
    }

    /// Credits `account` has left as this node knows it (free and purchased, less reservations).
    pub async fn remaining(&self, account: AccountId) -> Result<i64, StoreError> {
        let month = clock::month();
        if let Some(local) = self.accounts().get(&account).filter(|l| l.month == month) {
            return Ok(local.available().max(0));
        }
        let mark = self.read_mark(account);
        match self.store.account(account).await? {
            Some(fresh) => {
                self.refresh(&fresh, &month, mark);
                Ok((fresh.balance + fresh.free_left(&month)).max(0))
            }
            None => Ok(0),
        }
    }

    /// Logs a request that costs nothing (a failure, a free endpoint), without waiting for it.
    pub fn log(&self, record: RequestRecord) {
        debug_assert_eq!(record.cost, 0);
        let job = Job {
            record,
            reserved: 0,
            reply: None,
            entry: None,
        };
        if let Err(e) = self.queue.try_send(Message::Job(job)) {
            // The log of free requests is best effort under overload; charges never are.
            tracing::warn!(error = %e, "request log queue full, a free request goes unlogged");
        }
    }

    /// Waits until everything recorded so far (the request log included) is committed: for a
    /// clean shutdown.
    pub async fn flush(&self) {
        let (done, committed) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = committed.await;
        }
    }

    /// Returns once every charge this node has answered is in the store, so that what the store
    /// says of an account counts them: at once, unless charges are answered from the journal
    /// before they are recorded; then after the writer's commit of all that is queued. (Should
    /// that commit fail, the writer keeps the charges to record later, and the store does not
    /// count them yet.)
    pub async fn recorded(&self) {
        if self.journal.is_some() {
            self.flush().await;
        }
    }

    fn release(&self, account: AccountId, credits: i64) {
        if credits == 0 {
            return;
        }
        if let Some(local) = self.accounts().get_mut(&account) {
            local.reserved -= credits;
        }
    }

    /// Applies the outcomes of one commit, a [`Waiter`] and its outcome a charge (`None`: the
    /// commit failed): each reservation ends, and the database's balances replace what this node
    /// believed.
    fn committed<'a>(&self, charges: impl Iterator<Item = (&'a Waiter, Option<&'a Recorded>)>) {
        let now = Instant::now();
        let mut accounts = self.accounts();
        for (waiter, outcome) in charges {
            if let Some(local) = accounts.get_mut(&waiter.account) {
                apply(local, waiter, outcome, now);
            }
        }
    }

    /// A charge of `cost` to `account` written to the journal: counted as answered, and its
    /// outcome as the ledger will have it once every charge answered before it is recorded
    /// (free allowance first). `None` if this node does not know the account (it always does
    /// after a reservation).
    fn answered(&self, account: AccountId, cost: i64) -> Option<Recorded> {
        let mut accounts = self.accounts();
        let local = accounts.get_mut(&account)?;
        let before = local.journaled;
        local.journaled += cost;
        let free_left = |journaled: i64| (local.free_left - journaled).max(0);
        let paid_by = |journaled: i64| (journaled - local.free_left).max(0);
        let free = free_left(before) - free_left(local.journaled);
        Some(Recorded::Done {
            paid: cost - free,
            free,
            balance: local.balance - paid_by(local.journaled),
            free_left: free_left(local.journaled),
        })
    }
}

/// Applies one committed outcome, read at `now`, to what this node knows of its account.
fn apply(local: &mut Local, waiter: &Waiter, outcome: Option<&Recorded>, now: Instant) {
    local.commit_ended();
    local.reserved -= waiter.reserved;
    if waiter.entry.is_some() {
        local.journaled -= waiter.reserved;
    }
    match outcome {
        Some(
            Recorded::Done {
                balance, free_left, ..
            }
            | Recorded::Insufficient { balance, free_left },
        ) => {
            local.balance = *balance;
            local.free_left = *free_left;
            local.read_at = now;
        }
        Some(Recorded::Duplicate) | None => {}
    }
}

/// Credits held for one request. Settle it on success; drop it otherwise.
pub struct Reservation {
    meter: Arc<Meter>,
    account: AccountId,
    cost: i64,
    held: bool,
}

impl Reservation {
    pub fn cost(&self) -> i64 {
        self.cost
    }

    /// Charges the reserved credits with `record` (whose `cost` must be the reservation's) and
    /// waits until the charge is committed. `Recorded::Insufficient` means another node spent the
    /// credits first: the request must fail, and was not charged.
    pub async fn settle(mut self, record: RequestRecord) -> Result<Recorded, StoreError> {
        debug_assert_eq!(record.cost, self.cost);
        // From here the writer task releases the reservation, whatever happens to this future.
        self.held = false;
        let meter = &self.meter;
        if let Some(journal) = &meter.journal
            && let Some(entry) = ChargeJournal::encode(&record)
            && let Ok(permit) = meter.queue.try_reserve()
            && let Some(mut slot) = journal.next_slot()
        {
            // Counted as answered before the writer can see the job, so that its commit finds
            // the charge counted; sent before the slot is let go, so that the writer gets the
            // journal's entries in their order.
            if let Some(outcome) = meter.answered(self.account, self.cost) {
                let number = slot.number();
                slot.write(entry);
                permit.send(Message::Job(Job {
                    record,
                    reserved: self.cost,
                    reply: None,
                    entry: Some(number),
                }));
                return Ok(outcome);
            }
        }
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            record,
            reserved: self.cost,
            reply: Some(reply),
            entry: None,
        };
        let sent = match self.meter.queue.try_send(Message::Job(job)) {
            Ok(()) => true,
            // The writer is `QUEUE` charges behind: wait for room. Boxed, so that the wait's
            // state is not carried by every charge's future, which is allocated and moved per
            // request.
            Err(TrySendError::Full(message)) => {
                Box::pin(self.meter.queue.send(message)).await.is_ok()
            }
            Err(TrySendError::Closed(_)) => false,
        };
        if !sent {
            self.meter.release(self.account, self.cost);
            return Err(StoreError::Unavailable("the meter has stopped".into()));
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the meter has stopped".into())))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held {
            self.meter.release(self.account, self.cost);
        }
    }
}

/// A charge in a commit: whose it is, what it holds, who waits for it.
struct Waiter {
    account: AccountId,
    reserved: i64,
    reply: Option<oneshot::Sender<Result<Recorded, StoreError>>>,
    entry: Option<u64>,
}

/// The writer task: takes every charge waiting, commits them in one transaction, answers each.
async fn writer(
    meter: std::sync::Weak<Meter>,
    store: Arc<dyn AccountStore>,
    mut messages: mpsc::Receiver<Message>,
) {
    let journal = store.charge_journal();
    let mut batch: Vec<Message> = Vec::with_capacity(MAX_BATCH);
    // Charges answered from the journal whose commit failed: recorded first in the next commit,
    // their reservations held meanwhile.
    let mut unrecorded: Vec<Job> = Vec::new();
    let mut retry = RETRY_FIRST;
    let mut open = true;
    loop {
        if unrecorded.is_empty() {
            if !open || messages.recv_many(&mut batch, MAX_BATCH).await == 0 {
                break;
            }
            retry = RETRY_FIRST;
        } else {
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
        // Requests that are ready to run go first: their charges join this commit. Each commit
        // costs a sync and two thread hand-offs, so fewer, fuller commits leave more of the core
        // to requests. No timer (tokio's are 1 ms coarse, far too long here): the writer only
        // steps behind the tasks that can run now, a few times.
        for _ in 0..YIELDS {
            if batch.len() >= MAX_BATCH {
                break;
            }
            tokio::task::yield_now().await;
            while batch.len() < MAX_BATCH {
                match messages.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
        }
        if journal.is_some() && unrecorded.is_empty() && open {
            open = linger(
                &mut messages,
                &mut batch,
                tokio::time::Instant::now() + LINGER,
            )
            .await;
        }
        let mut records = Vec::with_capacity(unrecorded.len() + batch.len());
        let mut waiters = Vec::with_capacity(records.capacity());
        let mut flushes = Vec::new();
        let mut folded = None;
        let jobs =
            unrecorded
                .drain(..)
                .chain(batch.drain(..).filter_map(|message| match message {
                    Message::Job(job) => Some(job),
                    Message::Flush(done) => {
                        flushes.push(done);
                        None
                    }
                }));
        for job in jobs {
            let Job {
                record,
                reserved,
                reply,
                entry,
            } = job;
            if let Some(n) = entry {
                folded = Some(n + 1);
            }
            waiters.push(Waiter {
                account: record.account,
                reserved,
                reply,
                entry,
            });
            records.push(record);
        }
        if records.is_empty() {
            notify(flushes);
            continue;
        }
        let count = records.len();
        let month = clock::month();
        let meter = meter.upgrade();
        if let Some(meter) = &meter {
            meter.committing(&waiters);
        }
        let result = match folded {
            Some(folded) => store.record_folding(records, &month, folded).await,
            None => store.record(records, &month).await,
        };
        match result {
            Ok(outcomes) => {
                if let (Some(journal), Some(folded)) = (&journal, folded) {
                    journal.folded(folded);
                }
                if let Some(meter) = &meter {
                    meter.committed(waiters.iter().zip(outcomes.iter().map(Some)));
                }
                for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                    if let Some(reply) = waiter.reply {
                        let _ = reply.send(Ok(outcome));
                    } else if waiter.entry.is_some() && !matches!(outcome, Recorded::Done { .. }) {
                        // Only when another process spent the account's credits meanwhile.
                        tracing::warn!(
                            account = waiter.account.0,
                            outcome = ?outcome,
                            "a charge answered from the journal could not be recorded: served \
                             uncharged"
                        );
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, charges = count, "recording charges failed");
                for waiter in waiters {
                    // Answered already: read back from the journal, which holds it until it is
                    // recorded, and recorded with the next commit.
                    let kept = waiter
                        .entry
                        .zip(journal.as_ref())
                        .and_then(|(n, journal)| journal.entry(n));
                    if let Some(record) = kept {
                        if let Some(meter) = &meter {
                            meter.held_over(&waiter);
                        }
                        unrecorded.push(Job {
                            record,
                            reserved: waiter.reserved,
                            reply: None,
                            entry: waiter.entry,
                        });
                        continue;
                    }
                    if let Some(n) = waiter.entry {
                        tracing::error!(
                            entry = n,
                            "a charge answered from the journal is not in it"
                        );
                    }
                    if let Some(meter) = &meter {
                        meter.committed(std::iter::once((&waiter, None)));
                    }
                    if let Some(reply) = waiter.reply {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                if !unrecorded.is_empty() && !open {
                    tracing::error!(
                        charges = unrecorded.len(),
                        "charges answered from the journal are left in it; they are recorded \
                         when the store is next opened"
                    );
                    notify(flushes);
                    break;
                }
            }
        }
        notify(flushes);
    }
}

/// Adds to `batch` what arrives before `deadline`, for as long as nothing in it waits for its
/// commit and it has room. Returns `false` once every sender is gone.
async fn linger(
    messages: &mut mpsc::Receiver<Message>,
    batch: &mut Vec<Message>,
    deadline: tokio::time::Instant,
) -> bool {
    let mut seen = 0;
    while batch.len() < MAX_BATCH && batch[seen..].iter().all(answered) {
        seen = batch.len();
        let room = MAX_BATCH - seen;
        match tokio::time::timeout_at(deadline, messages.recv_many(batch, room)).await {
            Ok(0) => return false,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    true
}

/// Whether nothing waits for this message's commit: a charge answered from the journal, or a
/// request logged without a charge.
fn answered(message: &Message) -> bool {
    matches!(message, Message::Job(Job { reply: None, .. }))
}

fn notify(flushes: Vec<oneshot::Sender<()>>) {
    for done in flushes {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(balance: i64) -> Account {
        Account {
            id: AccountId(1),
            name: "a".into(),
            balance,
            free_allowance: 0,
            free_used: 0,
            free_period: String::new(),
            rate_limit: None,
            created_ms: 0,
        }
    }

    fn waiter(reserved: i64) -> Waiter {
        Waiter {
            account: AccountId(1),
            reserved,
            reply: None,
            entry: None,
        }
    }

    /// An account of 10 credits with 4 reserved, as this node knows it.
    fn known(month: &Arc<str>) -> Local {
        let mut local = Local::new(&account(10), month);
        local.reserved = 4;
        local
    }

    fn commit_starts(local: &mut Local) {
        local.committing += 1;
    }

    fn commit_ends(local: &mut Local, balance: i64) {
        let outcome = Recorded::Done {
            paid: 4,
            free: 0,
            balance,
            free_left: 0,
        };
        apply(local, &waiter(4), Some(&outcome), Instant::now());
    }

    #[test]
    fn a_read_with_no_commit_about_is_taken() {
        let month: Arc<str> = "2026-12".into();
        let mut local = known(&month);
        let mark = local.mark();
        // A top-up elsewhere: 10 more.
        assert!(local.take_read(&account(20), &month, mark));
        assert_eq!(local.available(), 16);
    }

    #[test]
    fn a_read_that_may_have_seen_a_commit_not_yet_released_is_not_taken() {
        // The store holds the commit's 4 credits charged (balance 6) while this node still
        // holds them reserved: taken, the read would leave 2 available instead of 6.
        let month: Arc<str> = "2026-12".into();
        let mut local = known(&month);
        commit_starts(&mut local);
        let mark = local.mark();
        assert!(!local.take_read(&account(6), &month, mark));
        commit_ends(&mut local, 6);
        assert_eq!(local.available(), 6);
    }

    #[test]
    fn a_read_a_whole_commit_ran_during_is_not_taken() {
        // Read before the commit reached the store (balance 10), taken after the commit's outcome
        // released the reservation: taken, it would leave 10 available instead of 6.
        let month: Arc<str> = "2026-12".into();
        let mut local = known(&month);
        let mark = local.mark();
        commit_starts(&mut local);
        commit_ends(&mut local, 6);
        assert!(!local.take_read(&account(10), &month, mark));
        assert_eq!(local.available(), 6);
        // The next read, with nothing under way, is taken.
        let mark = local.mark();
        assert!(local.take_read(&account(6), &month, mark));
    }

    #[test]
    fn a_new_month_is_always_read() {
        let month: Arc<str> = "2026-12".into();
        let mut local = known(&month);
        commit_starts(&mut local);
        let mark = local.mark();
        let next: Arc<str> = "2027-01".into();
        assert!(local.take_read(&account(10), &next, mark));
        assert_eq!(local.month, next);
    }

    #[test]
    fn a_read_begun_before_this_node_knew_the_account_is_not_taken_over_it() {
        let month: Arc<str> = "2026-12".into();
        let mut local = known(&month);
        assert!(!local.take_read(&account(10), &month, None));
    }

    /// A charge answered from the journal (`waits` false) or one whose response waits for it.
    fn job(n: u64, waits: bool) -> Message {
        Message::Job(Job {
            record: RequestRecord {
                request_id: xgate_store::accounts::RequestId::Given(format!("r{n}")),
                account: AccountId(1),
                key: xgate_store::accounts::KeyId(1),
                at_ms: 0,
                endpoint: "POST /user/medias/continuation".into(),
                status: 200,
                cost: 1,
                latency_us: 0,
                idempotency: None,
            },
            reserved: 1,
            reply: waits.then(|| oneshot::channel().0),
            entry: (!waits).then_some(n),
        })
    }

    /// Sends each message after its delay from the previous one, on the runtime's clock.
    fn send_later(tx: mpsc::Sender<Message>, messages: Vec<(u64, Message)>) {
        tokio::spawn(async move {
            for (ms, message) in messages {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Lingers over a batch that holds one answered charge; gives what the batch then holds, how
    /// long it took, and whether the channel is still open.
    async fn linger_after(rx: &mut mpsc::Receiver<Message>) -> (Vec<Message>, Duration, bool) {
        let mut batch = vec![job(0, false)];
        let start = tokio::time::Instant::now();
        let open = linger(rx, &mut batch, start + LINGER).await;
        (batch, start.elapsed(), open)
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_nobody_waits_for_takes_what_comes_until_its_deadline() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        // One every 3 ms: three arrive within the 10 ms, the rest are left for the next commit.
        let spaced = (1..=20).map(|n| (3, job(n, false))).collect();
        send_later(tx.clone(), spaced);
        let (batch, took, open) = linger_after(&mut rx).await;
        assert_eq!((batch.len(), took, open), (4, LINGER, true));
        drop(tx);
        let mut rest = Vec::new();
        while rx.recv_many(&mut rest, QUEUE).await > 0 {}
        assert_eq!(rest.len(), 17);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_that_waits_ends_the_linger_with_its_charge() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        send_later(
            tx.clone(),
            vec![(2, job(1, false)), (1, job(2, true)), (1, job(3, false))],
        );
        let (batch, took, _) = linger_after(&mut rx).await;
        assert_eq!((batch.len(), took), (3, Duration::from_millis(3)));
        assert!(!answered(&batch[2]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_ends_the_linger() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        send_later(tx.clone(), vec![(4, Message::Flush(oneshot::channel().0))]);
        let (batch, took, _) = linger_after(&mut rx).await;
        assert_eq!((batch.len(), took), (2, Duration::from_millis(4)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_is_waited_for_or_full_does_not_linger() {
        let (_tx, mut rx) = mpsc::channel(QUEUE);
        let start = tokio::time::Instant::now();
        let mut waited = vec![job(0, false), job(1, true)];
        assert!(linger(&mut rx, &mut waited, start + LINGER).await);
        let mut full: Vec<Message> = (0..MAX_BATCH as u64).map(|n| job(n, false)).collect();
        assert!(linger(&mut rx, &mut full, start + LINGER).await);
        assert_eq!((waited.len(), full.len()), (2, MAX_BATCH));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_linger_stops_at_a_full_batch_and_when_the_senders_are_gone() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        for n in 1..=MAX_BATCH as u64 + 5 {
            tx.send(job(n, false)).await.unwrap();
        }
        let (batch, took, open) = linger_after(&mut rx).await;
        assert_eq!((batch.len(), took, open), (MAX_BATCH, Duration::ZERO, true));
        send_later(tx, vec![(3, job(0, false))]);
        let mut rest = Vec::new();
        let start = tokio::time::Instant::now();
        assert!(!linger(&mut rx, &mut rest, start + LINGER).await);
        // The six the full batch left, and the one sent 3 ms on; then the channel closed.
        assert_eq!((rest.len(), start.elapsed()), (7, Duration::from_millis(3)));
    }
}
