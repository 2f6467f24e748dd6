//! The charge journal of a served store: charges a process answered from it and did not record
//! are recorded when the store is next opened, each exactly once; a journal is written by one
//! process at a time, and never applied to a store it does not belong to.

use std::path::Path;
use std::sync::Arc;

use xgate_store::accounts::{
    AccountId, AccountStore, KeyId, MintedId, NewKey, Recorded, RequestId, RequestRecord,
};
use xgate_store::journal::{ChargeJournal, DEFAULT_SLOTS};
use xgate_store_sqlite::SqliteStore;

const NOW: i64 = 1_795_651_200_000;

/// A store with one account holding `credits`, and that account's key.
async fn store_with_account(db: &Path, credits: i64) -> (SqliteStore, AccountId, KeyId) {
    let store = SqliteStore::open(db).unwrap();
    let account = store.ensure_account("acct", NOW).await.unwrap().id;
    store
        .add_credits(account, credits, "initial", NOW)
        .await
        .unwrap();
    let key = NewKey {
        hash: [4; 32],
        prefix: "xg_live_j".into(),
        label: None,
    };
    let key = store.insert_key(account, key, NOW).await.unwrap().id;
    (store, account, key)
}

fn charge(account: AccountId, key: KeyId, n: i64) -> RequestRecord {
    RequestRecord {
        request_id: RequestId::Minted(MintedId::new()),
        account,
        key,
        at_ms: NOW + n,
        endpoint: "POST /user/medias/continuation".into(),
        status: 200,
        cost: 1,
        latency_us: 40,
        idempotency: None,
    }
}

/// Writes `records` to the store's journal as the meter does when it answers them, without
/// recording them: what a process leaves when it dies before its writer commits.
fn answer(journal: &ChargeJournal, records: &[RequestRecord]) -> Vec<u64> {
    records
        .iter()
        .map(|record| {
            let entry = ChargeJournal::encode(record).expect("a charge the journal takes");
            let mut slot = journal.next_slot().expect("a free slot");
            let n = slot.number();
            slot.write(entry);
            n
        })
        .collect()
}

/// The store opened as a server opens it, with its charge journal.
fn served(db: &Path) -> SqliteStore {
    SqliteStore::open(db)
        .unwrap()
        .with_charge_journal()
        .unwrap()
}

async fn paid(store: &SqliteStore, account: AccountId) -> i64 {
    let audit = store.audit(account).await.unwrap();
    assert!(audit.balanced(), "{audit:?}");
    assert_eq!(audit.charged_failures, 0);
    audit.paid
}

#[tokio::test]
async fn charges_left_in_the_journal_are_recorded_once_when_the_store_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let (store, account, key) = store_with_account(&db, 100).await;
    let store = store.with_charge_journal().unwrap();
    let journal = store.charge_journal().expect("the store keeps a journal");
    let records: Vec<RequestRecord> = (0..5).map(|n| charge(account, key, n)).collect();
    assert_eq!(answer(&journal, &records), vec![0, 1, 2, 3, 4]);
    assert_eq!(paid(&store, account).await, 0);
    drop(journal);
    drop(store);

    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(paid(&store, account).await, 5);
    // Each with its own id, as answered.
    let usage = store.usage(account, 0, None, 100).await.unwrap();
    let mut ids: Vec<String> = usage.iter().map(|row| row.request_id.clone()).collect();
    let mut answered: Vec<String> = records
        .iter()
        .map(|r| r.request_id.text().into_owned())
        .collect();
    ids.sort();
    answered.sort();
    assert_eq!(ids, answered);
    drop(store);

    // Opened again, and to serve again: nothing is recorded twice, and numbering goes on.
    let store = served(&db);
    assert_eq!(paid(&store, account).await, 5);
    let journal = store.charge_journal().unwrap();
    assert_eq!(answer(&journal, &[charge(account, key, 9)]), vec![5]);
}

#[tokio::test]
async fn charges_recorded_with_the_mark_are_not_recorded_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let (store, account, key) = store_with_account(&db, 100).await;
    let store = store.with_charge_journal().unwrap();
    let journal = store.charge_journal().unwrap();
    let records: Vec<RequestRecord> = (0..3).map(|n| charge(account, key, n)).collect();
    answer(&journal, &records);
    let outcomes = store
        .record_folding(records.clone(), "2026-11", 2)
        .await
        .unwrap();
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, Recorded::Done { .. }))
    );
    // The mark says 2, though the commit held all three: the third is recorded again. The meter
    // never does this (its mark always follows the last entry it records); it shows that the
    // mark, not the entries, decides.
    drop(journal);
    drop(store);
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(paid(&store, account).await, 4);
    drop(store);

    // With the mark after every entry recorded, reopening records nothing.
    let store = served(&db);
    let journal = store.charge_journal().unwrap();
    let more: Vec<RequestRecord> = (3..6).map(|n| charge(account, key, n)).collect();
    let numbers = answer(&journal, &more);
    let after = numbers.last().unwrap() + 1;
    store.record_folding(more, "2026-11", after).await.unwrap();
    drop(journal);
    drop(store);
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(paid(&store, account).await, 7);
}

#[tokio::test]
async fn a_second_process_on_the_store_serves_without_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let (store, account, key) = store_with_account(&db, 100).await;
    let first = store.with_charge_journal().unwrap();
    let journal = first.charge_journal().unwrap();
    answer(&journal, &[charge(account, key, 0)]);
    // Another handle stands for another process: the lock is the file's, per open.
    let second = served(&db);
    assert!(second.charge_journal().is_none());
    // Nor did it record what the first one holds: that is the first's to record.
    assert_eq!(paid(&second, account).await, 0);
    let err = second
        .record_folding(vec![charge(account, key, 1)], "2026-11", 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no charge journal"), "{err}");
}

#[tokio::test]
async fn a_journal_that_is_not_the_stores_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (store, account, key) = store_with_account(&a, 100).await;
    let store = store.with_charge_journal().unwrap();
    answer(&store.charge_journal().unwrap(), &[charge(account, key, 0)]);
    drop(store);
    let (other, _, _) = store_with_account(&b, 100).await;
    drop(other.with_charge_journal().unwrap());

    // b's journal replaced by a's, as a careless restore might.
    let b_journal = SqliteStore::journal_path(&b);
    std::fs::copy(SqliteStore::journal_path(&a), &b_journal).unwrap();
    let copied = std::fs::read(&b_journal).unwrap();
    let err = SqliteStore::open(&b).err().expect("refused");
    assert!(err.to_string().contains("does not belong"), "{err}");
    assert_eq!(std::fs::read(&b_journal).unwrap(), copied);

    // a itself still opens, and records its charge.
    let store = SqliteStore::open(&a).unwrap();
    assert_eq!(paid(&store, account).await, 1);
}

#[tokio::test]
async fn a_store_whose_journal_was_deleted_takes_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let (store, account, key) = store_with_account(&db, 100).await;
    let store = store.with_charge_journal().unwrap();
    let journal = store.charge_journal().unwrap();
    let records = vec![charge(account, key, 0), charge(account, key, 1)];
    let after = answer(&journal, &records).last().unwrap() + 1;
    store
        .record_folding(records, "2026-11", after)
        .await
        .unwrap();
    drop(journal);
    drop(store);
    std::fs::remove_file(SqliteStore::journal_path(&db)).unwrap();

    // Served again: a new journal, whose charges count and are recorded once.
    let store = served(&db);
    assert_eq!(paid(&store, account).await, 2);
    let journal = store.charge_journal().expect("a new journal");
    assert_eq!(answer(&journal, &[charge(account, key, 2)]), vec![0]);
    drop(journal);
    drop(store);
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(paid(&store, account).await, 3);
    drop(store);
    let store = served(&db);
    assert_eq!(paid(&store, account).await, 3);
}

#[tokio::test]
async fn a_full_journal_takes_no_more_until_the_store_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let (store, account, key) = store_with_account(&db, DEFAULT_SLOTS as i64 + 10).await;
    let store = Arc::new(store.with_charge_journal().unwrap());
    let journal = store.charge_journal().unwrap();
    let records: Vec<RequestRecord> = (0..DEFAULT_SLOTS as i64)
        .map(|n| charge(account, key, n))
        .collect();
    answer(&journal, &records);
    assert!(journal.next_slot().is_none());
    store
        .record_folding(records, "2026-11", DEFAULT_SLOTS)
        .await
        .unwrap();
    journal.folded(DEFAULT_SLOTS);
    assert_eq!(
        journal.next_slot().map(|slot| slot.number()),
        Some(DEFAULT_SLOTS)
    );
}

#[tokio::test]
async fn recovered_charges_take_the_free_allowance_of_the_month_they_were_served_in() {
    // 2026-11-30 23:59 and 2026-12-01 00:01 UTC.
    const NOVEMBER: i64 = 1_796_083_140_000;
    const DECEMBER: i64 = 1_796_083_260_000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let (store, account, key) = store_with_account(&db, 10).await;
    let terms = xgate_store::accounts::AccountTerms {
        free_allowance: Some(2),
        rate_limit: None,
    };
    store.set_terms(account, terms).await.unwrap();
    let store = store.with_charge_journal().unwrap();
    let at = |ms, n| RequestRecord {
        at_ms: ms,
        ..charge(account, key, n)
    };
    // Three in November (two free, one paid), two in December (both free again).
    let records = vec![
        at(NOVEMBER, 0),
        at(NOVEMBER, 0),
        at(NOVEMBER, 0),
        at(DECEMBER, 0),
        at(DECEMBER, 0),
    ];
    answer(&store.charge_journal().unwrap(), &records);
    drop(store);

    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(paid(&store, account).await, 1);
    let usage = store.usage(account, 0, None, 100).await.unwrap();
    let mut free: Vec<(i64, i64)> = usage.iter().map(|row| (row.at_ms, row.free)).collect();
    free.sort();
    assert_eq!(
        free,
        vec![
            (NOVEMBER, 0),
            (NOVEMBER, 1),
            (NOVEMBER, 1),
            (DECEMBER, 1),
            (DECEMBER, 1)
        ]
    );
    let account = store.account(account).await.unwrap().unwrap();
    assert_eq!(account.free_left("2026-12"), 0);
}
