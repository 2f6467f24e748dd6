//! The meter over a real SQLite store: for any interleaving of successes, failures, panics,
//! cancellations and top-ups, the balance never goes below zero, equals the credits added minus
//! the ledger's charges, and no reservation outlives its request.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::task::JoinSet;
use xgate_billing::{Meter, Refusal, clock};
use xgate_store::accounts::{
    Account, AccountStore, AccountTerms, KeyId, MintedId, NewKey, Recorded, RequestId,
    RequestRecord,
};
use xgate_store_sqlite::SqliteStore;

#[derive(Debug, Clone)]
enum Op {
    /// A request that succeeds and is charged.
    Success,
    /// A request that fails after reserving: released, logged at no cost.
    Failure,
    /// A request whose handler panics while holding its reservation.
    Panic,
    /// A request whose client goes away while its charge commits.
    Cancelled,
    TopUp(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Success),
        2 => Just(Op::Failure),
        1 => Just(Op::Panic),
        1 => Just(Op::Cancelled),
        1 => (1i64..5).prop_map(Op::TopUp),
    ]
}

fn record(account: &Account, key: KeyId, n: usize, status: u16, cost: i64) -> RequestRecord {
    RequestRecord {
        request_id: RequestId::Given(format!("req-{n}")),
        ..minted(account, key, status, cost)
    }
}

/// A record with an id of this process's own, as the server makes them: one the charge journal
/// takes.
fn minted(account: &Account, key: KeyId, status: u16, cost: i64) -> RequestRecord {
    RequestRecord {
        request_id: RequestId::Minted(MintedId::new()),
        account: account.id,
        key,
        at_ms: clock::now_ms(),
        endpoint: "POST /user/medias/continuation".into(),
        status,
        cost,
        latency_us: 10,
        idempotency: None,
    }
}

/// Runs one op; returns whether it charged a success the client saw.
async fn run(
    meter: Arc<Meter>,
    store: Arc<SqliteStore>,
    account: Account,
    key: KeyId,
    n: usize,
    op: Op,
    journal: bool,
) -> bool {
    // Through the journal a charge needs an id of the server's own; given ids take the commit's
    // path, which finds one recorded twice.
    let record = |status, cost| {
        if journal {
            minted(&account, key, status, cost)
        } else {
            record(&account, key, n, status, cost)
        }
    };
    match op {
        Op::TopUp(credits) => {
            store
                .add_credits(account.id, credits, "top-up", clock::now_ms())
                .await
                .unwrap();
            false
        }
        Op::Success => match meter.reserve(account.id, 1).await {
            Ok(reservation) => {
                let outcome = reservation.settle(record(200, 1)).await.unwrap();
                matches!(outcome, Recorded::Done { .. })
            }
            Err(Refusal::Insufficient { .. }) => false,
            Err(e) => panic!("{e}"),
        },
        Op::Failure => {
            if let Ok(reservation) = meter.reserve(account.id, 1).await {
                drop(reservation);
                meter.log(record(404, 0));
            }
            false
        }
        Op::Panic => {
            let meter = Arc::clone(&meter);
            let handler = tokio::spawn(async move {
                let _held = meter.reserve(account.id, 1).await;
                panic!("handler bug");
            });
            assert!(handler.await.unwrap_err().is_panic());
            false
        }
        Op::Cancelled => {
            if let Ok(reservation) = meter.reserve(account.id, 1).await {
                let settle = reservation.settle(record(200, 1));
                let _ = tokio::time::timeout(Duration::ZERO, settle).await;
            }
            false
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn the_books_balance_whatever_the_interleaving(
        ops in prop::collection::vec(op(), 1..50),
        initial in 0i64..8,
        allowance in 0i64..3,
        concurrency in 1usize..8,
        journal in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut store = SqliteStore::open(dir.path().join("m.db")).unwrap();
            if journal {
                store = store.with_charge_journal().unwrap();
                prop_assert!(store.charge_journal().is_some());
            }
            let store = Arc::new(store);
            let now = clock::now_ms();
            let account = store.ensure_account("acct", now).await.unwrap();
            let terms = AccountTerms { free_allowance: Some(allowance), rate_limit: None };
            store.set_terms(account.id, terms).await.unwrap();
            if initial > 0 {
                store.add_credits(account.id, initial, "initial", now).await.unwrap();
            }
            let key = store
                .insert_key(account.id, NewKey { hash: [1; 32], prefix: "xg_live_t".into(), label: None }, now)
                .await
                .unwrap()
                .id;
            let meter = Meter::start(store.clone());
            let topped_up: i64 = ops.iter().map(|op| match op { Op::TopUp(c) => *c, _ => 0 }).sum();

            let mut seen_successes = 0;
            for (chunk_index, chunk) in ops.chunks(concurrency).enumerate() {
                let mut set = JoinSet::new();
                for (i, op) in chunk.iter().cloned().enumerate() {
                    let n = chunk_index * concurrency + i;
                    set.spawn(run(meter.clone(), store.clone(), account.clone(), key, n, op, journal));
                }
                while let Some(done) = set.join_next().await {
                    seen_successes += usize::from(done.unwrap());
                }
            }
            // Let fire-and-forget log lines and cancelled charges land.
            let probe = meter.reserve(account.id, 0).await.unwrap();
            let _ = probe.settle(record(&account, key, 10_000, 200, 0)).await.unwrap();
            // Charges answered from the journal too.
            meter.flush().await;

            let audit = store.audit(account.id).await.unwrap();
            prop_assert!(audit.balanced(), "{audit:?}");
            prop_assert_eq!(audit.credits_added, initial + topped_up);
            prop_assert_eq!(audit.charged_failures, 0);
            let usage = store.usage(account.id, 0, None, 10_000).await.unwrap();
            let charged = usage.iter().filter(|r| r.cost > 0).count();
            let spent: i64 = usage.iter().map(|r| r.paid + r.free).sum();
            prop_assert_eq!(spent as usize, charged, "every charge is one credit");
            prop_assert!(charged >= seen_successes, "every success the client saw is charged");
            prop_assert!(charged <= initial as usize + topped_up as usize + allowance as usize);
            // No reservation outlives its request: what the meter offers is what the books hold.
            let fresh = store.account(account.id).await.unwrap().unwrap();
            let books = fresh.balance + fresh.free_left(&clock::month());
            prop_assert_eq!(meter.remaining(account.id).await.unwrap(), books);
            Ok(())
        })?;
    }
}

/// An account holding `credits`, and a key of it whose hash is `key_byte` repeated.
async fn account_with_key(store: &SqliteStore, credits: i64, key_byte: u8) -> (Account, KeyId) {
    let now = clock::now_ms();
    let account = store.ensure_account("acct", now).await.unwrap();
    store
        .add_credits(account.id, credits, "initial", now)
        .await
        .unwrap();
    let key = NewKey {
        hash: [key_byte; 32],
        prefix: format!("xg_live_{key_byte}"),
        label: None,
    };
    let key = store.insert_key(account.id, key, now).await.unwrap().id;
    (account, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_overdraw() {
    // Charges that wait for their commit, and charges answered from the journal.
    for journal in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path().join("c.db")).unwrap();
        if journal {
            store = store.with_charge_journal().unwrap();
        }
        let store = Arc::new(store);
        let (account, key) = account_with_key(&store, 25, 2).await;
        let meter = Meter::start(store.clone());
        let mut set = JoinSet::new();
        for n in 0..200 {
            set.spawn(run(
                meter.clone(),
                store.clone(),
                account.clone(),
                key,
                n,
                Op::Success,
                journal,
            ));
        }
        let mut successes = 0;
        while let Some(done) = set.join_next().await {
            successes += usize::from(done.unwrap());
        }
        assert_eq!(successes, 25, "journal: {journal}");
        meter.flush().await;
        let audit = store.audit(account.id).await.unwrap();
        assert_eq!((audit.balance, audit.paid), (0, 25), "journal: {journal}");
        assert_eq!(meter.remaining(account.id).await.unwrap(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_the_writer_recorded_are_not_recorded_again_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let store = SqliteStore::open(&db)
        .unwrap()
        .with_charge_journal()
        .unwrap();
    let store = Arc::new(store);
    let (account, key) = account_with_key(&store, 50, 6).await;
    let meter = Meter::start(store.clone());
    for _ in 0..10 {
        let reservation = meter.reserve(account.id, 1).await.unwrap();
        let outcome = reservation.settle(minted(&account, key, 200, 1)).await;
        assert!(matches!(outcome, Ok(Recorded::Done { .. })), "{outcome:?}");
    }
    meter.flush().await;
    assert_eq!(store.audit(account.id).await.unwrap().paid, 10);
    drop(meter);
    // The writer's task holds the store until it sees the meter gone.
    while Arc::strong_count(&store) > 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(store);
    let store = SqliteStore::open(&db).unwrap();
    let audit = store.audit(account.id).await.unwrap();
    assert_eq!((audit.paid, audit.balance), (10, 40));
}

#[test]
fn charges_answered_from_the_journal_outlive_their_writer() {
    // A server stops while its charges are answered and unrecorded: the runtime (and the
    // meter's writer with it) is dropped without a flush. Whatever the writer recorded before,
    // the store, opened again, holds every answered charge exactly once.
    const CHARGES: i64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let (account, answered) = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            let store = SqliteStore::open(&db)
                .unwrap()
                .with_charge_journal()
                .unwrap();
            let store = Arc::new(store);
            let (account, key) = account_with_key(&store, 100, 5).await;
            let meter = Meter::start(store.clone());
            let mut answered = 0;
            for _ in 0..CHARGES {
                let reservation = meter.reserve(account.id, 1).await.unwrap();
                let outcome = reservation.settle(minted(&account, key, 200, 1)).await;
                if let Ok(Recorded::Done {
                    balance, free_left, ..
                }) = outcome
                {
                    answered += 1;
                    assert_eq!(balance + free_left, 100 - answered);
                }
            }
            (account, answered)
        });
        drop(rt);
        out
    };
    assert_eq!(answered, CHARGES);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&db).unwrap();
        let audit = store.audit(account.id).await.unwrap();
        assert_eq!((audit.paid, audit.balance), (CHARGES, 100 - CHARGES));
        assert!(audit.balanced(), "{audit:?}");
    });
}

#[tokio::test]
async fn a_top_up_elsewhere_is_seen_once_the_account_looks_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("t.db")).unwrap());
    let account = store.ensure_account("acct", clock::now_ms()).await.unwrap();
    let meter = Meter::start(store.clone());
    assert!(matches!(
        meter.reserve(account.id, 1).await,
        Err(Refusal::Insufficient { remaining: 0 })
    ));
    // Another process (the CLI) adds credits behind the meter's back.
    store
        .add_credits(account.id, 2, "top-up", clock::now_ms())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(meter.reserve(account.id, 1).await.is_ok());
}

#[tokio::test]
async fn charges_beyond_a_full_queue_wait_for_room_and_are_all_recorded() {
    // More charges at once than the meter's queue holds (16 Ki): on this single-threaded runtime
    // every task queues its charge before the writer runs again, so the last ones find the queue
    // full and must wait for room rather than fail.
    const CHARGES: usize = 17_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("q.db")).unwrap());
    let (account, key) = account_with_key(&store, CHARGES as i64 + 5, 3).await;
    let meter = Meter::start(store.clone());
    let mut reservations = Vec::with_capacity(CHARGES);
    for _ in 0..CHARGES {
        reservations.push(meter.reserve(account.id, 1).await.unwrap());
    }
    let mut set = JoinSet::new();
    for (n, reservation) in reservations.into_iter().enumerate() {
        let record = record(&account, key, n, 200, 1);
        set.spawn(reservation.settle(record));
    }
    let mut done = 0;
    while let Some(outcome) = set.join_next().await {
        assert!(matches!(outcome.unwrap(), Ok(Recorded::Done { .. })));
        done += 1;
    }
    assert_eq!(done, CHARGES);
    let audit = store.audit(account.id).await.unwrap();
    assert_eq!((audit.balance, audit.paid), (5, CHARGES as i64));
    assert!(audit.balanced(), "{audit:?}");
    assert_eq!(meter.remaining(account.id).await.unwrap(), 5);
}
