//! The packed ledger against a model: whatever batches of requests of several accounts are
//! recorded (charges, failures, refusals, ids met before, ids minted by this process), every
//! account's request log, its pages, its books and the whole ledger read back as the requests
//! were recorded.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use xgate_store::accounts::{
    AccountId, AccountStore, KeyId, MintedId, NewKey, Recorded, RequestId, RequestRecord, UsageRow,
};
use xgate_store::transfer::Transfer;
use xgate_store_sqlite::SqliteStore;

const ACCOUNTS: usize = 3;
const AT_MS: i64 = 1_795_651_200_000;

/// One request of a batch: its account, status and cost, and which earlier request's id it
/// reuses, if any.
#[derive(Debug, Clone)]
struct Planned {
    account: usize,
    status: u16,
    cost: i64,
    reuse: Option<usize>,
}

fn planned() -> impl Strategy<Value = Planned> {
    (
        0..ACCOUNTS,
        prop_oneof![Just(200u16), Just(200), Just(404), Just(500)],
        0..3i64,
        prop::option::weighted(0.1, any::<usize>()),
    )
        .prop_map(|(account, status, cost, reuse)| Planned {
            account,
            status,
            // Only a success is charged; a failure is logged at cost 0.
            cost: if status == 200 { cost } else { 0 },
            reuse,
        })
}

/// The books as the rules say they must be kept.
#[derive(Default)]
struct Model {
    balance: [i64; ACCOUNTS],
    seen: HashSet<String>,
    /// Each account's log, oldest first: (request id, status, cost, paid).
    log: [Vec<(String, u16, i64, i64)>; ACCOUNTS],
}

impl Model {
    /// A request id recorded before is a duplicate, whatever the account holds; otherwise a
    /// charge the account cannot cover is refused, and a refused request's id stays unused.
    fn record(&mut self, account: usize, rec: &RequestRecord) -> Recorded {
        let id = rec.request_id.text().into_owned();
        if self.seen.contains(&id) {
            return Recorded::Duplicate;
        }
        if rec.cost > self.balance[account] {
            return Recorded::Insufficient {
                balance: self.balance[account],
                free_left: 0,
            };
        }
        self.seen.insert(id.clone());
        self.balance[account] -= rec.cost;
        self.log[account].push((id, rec.status, rec.cost, rec.cost));
        Recorded::Done {
            paid: rec.cost,
            free: 0,
            balance: self.balance[account],
            free_left: 0,
        }
    }
}

fn logged(rows: &[UsageRow]) -> Vec<(String, u16, i64, i64)> {
    rows.iter()
        .map(|r| (r.request_id.clone(), r.status, r.cost, r.paid))
        .collect()
}

async fn check(credits: [i64; ACCOUNTS], batches: Vec<Vec<Planned>>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ledger.db")).unwrap();
    let mut model = Model::default();
    let mut accounts: Vec<(AccountId, KeyId)> = Vec::new();
    for (i, credits) in credits.into_iter().enumerate() {
        let account = store.ensure_account(&format!("a{i}"), AT_MS).await.unwrap();
        let key = NewKey {
            hash: [i as u8 + 1; 32],
            prefix: format!("xg_live_{i}"),
            label: None,
        };
        let key = store.insert_key(account.id, key, AT_MS).await.unwrap().id;
        if credits > 0 {
            store
                .add_credits(account.id, credits, "test", AT_MS)
                .await
                .unwrap();
        }
        model.balance[i] = credits;
        accounts.push((account.id, key));
    }

    // Ids given to the store, which a later request may reuse; minted ids never are (each is
    // recorded once, as their contract says).
    let mut given: Vec<String> = Vec::new();
    let mut made = 0usize;
    for batch in batches {
        let mut records = Vec::new();
        let mut expected = Vec::new();
        for plan in batch {
            made += 1;
            let request_id = match plan.reuse.filter(|_| !given.is_empty()) {
                Some(n) => RequestId::Given(given[n % given.len()].clone()),
                // A third of the new ids are minted as the server mints them; a third are UUIDs
                // given as text; a third, other text.
                None => match made % 3 {
                    0 => RequestId::Minted(MintedId::new()),
                    1 => RequestId::Given(uuid::Uuid::now_v7().hyphenated().to_string()),
                    _ => RequestId::Given(format!("r-{made}")),
                },
            };
            if let RequestId::Given(text) = &request_id {
                given.push(text.clone());
            }
            let (account, key) = accounts[plan.account];
            let rec = RequestRecord {
                request_id,
                account,
                key,
                at_ms: AT_MS + made as i64,
                endpoint: "POST /user/medias/continuation".into(),
                status: plan.status,
                cost: plan.cost,
                latency_us: 7,
                idempotency: None,
            };
            expected.push(model.record(plan.account, &rec));
            records.push(rec);
        }
        let outcomes = store.record(records, "2026-11").await.unwrap();
        assert_eq!(outcomes, expected);
    }

    let mut everyone = 0;
    for (i, (account, _)) in accounts.iter().enumerate() {
        let newest_first: Vec<_> = model.log[i].iter().rev().cloned().collect();
        let all = store.usage(*account, 0, None, 10_000).await.unwrap();
        assert_eq!(logged(&all), newest_first, "account {i}'s log");
        // Pages of 3, each after the last one's position, make up the same log.
        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let page = store.usage(*account, 0, before, 3).await.unwrap();
            let Some(last) = page.last() else { break };
            before = Some(last.seq);
            paged.extend(page);
        }
        assert_eq!(paged, all, "account {i}'s log in pages");
        let audit = store.audit(*account).await.unwrap();
        assert!(audit.balanced(), "account {i}: {audit:?}");
        assert_eq!(audit.balance, model.balance[i]);
        assert_eq!(audit.charged_failures, 0);
        everyone += all.len();
    }

    // The whole ledger in seq order: every request once, each account's in its order.
    let rows = store.requests_after(0, 100_000).await.unwrap();
    assert_eq!(rows.len(), everyone);
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut by_account: HashMap<i64, Vec<(String, u16, i64, i64)>> = HashMap::new();
    for r in &rows {
        by_account.entry(r.account_id).or_default().push((
            r.request_id.clone(),
            r.status as u16,
            r.cost,
            r.paid,
        ));
    }
    for (i, (account, _)) in accounts.iter().enumerate() {
        assert_eq!(
            by_account.remove(&account.0).unwrap_or_default(),
            model.log[i]
        );
    }
    // Pages of the whole ledger resume where the last one ended.
    let mut resumed = Vec::new();
    let mut after = 0;
    loop {
        let page = store.requests_after(after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        resumed.extend(page);
    }
    assert_eq!(resumed, rows);
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.requests, everyone as u64);
    assert_eq!(counts.last_seq, rows.last().map_or(0, |r| r.seq));

    // A copy into another store holds the same ledger, numbered the same.
    let copy = SqliteStore::open(dir.path().join("copy.db")).unwrap();
    copy.load_accounts(store.dump_accounts().await.unwrap())
        .await
        .unwrap();
    copy.load_requests(rows.clone()).await.unwrap();
    assert_eq!(copy.requests_after(0, 100_000).await.unwrap(), rows);
    // Loading the same rows again changes nothing.
    copy.load_requests(rows.clone()).await.unwrap();
    assert_eq!(copy.requests_after(0, 100_000).await.unwrap(), rows);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_ledger_reads_back_as_recorded(
        credits in prop::array::uniform3(0..40i64),
        batches in prop::collection::vec(prop::collection::vec(planned(), 0..40), 1..6),
    ) {
        tokio::runtime::Runtime::new().unwrap().block_on(check(credits, batches));
    }
}

/// Ids minted by this process are written to their chunk only; ids given as text are also
/// claimed in `request_ids`, where the next use of one is found.
#[tokio::test]
async fn only_given_ids_are_claimed_in_the_index_of_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.db");
    let store = SqliteStore::open(&path).unwrap();
    let account = store.ensure_account("a", AT_MS).await.unwrap();
    let key = NewKey {
        hash: [1; 32],
        prefix: "xg_live_1".into(),
        label: None,
    };
    let key = store.insert_key(account.id, key, AT_MS).await.unwrap().id;
    store
        .add_credits(account.id, 10, "test", AT_MS)
        .await
        .unwrap();
    let request = |request_id| RequestRecord {
        request_id,
        account: account.id,
        key,
        at_ms: AT_MS,
        endpoint: "POST /user/medias/continuation".into(),
        status: 200,
        cost: 1,
        latency_us: 7,
        idempotency: None,
    };
    let minted = [MintedId::new(), MintedId::new(), MintedId::new()];
    let mut batch: Vec<RequestRecord> = minted
        .iter()
        .map(|id| request(RequestId::Minted(*id)))
        .collect();
    batch.push(request(RequestId::Given("given-1".into())));
    batch.push(request(RequestId::Given(
        uuid::Uuid::now_v7().hyphenated().to_string(),
    )));
    let outcomes = store.record(batch, "2026-11").await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Recorded::Done { .. })));

    let ledger = rusqlite::Connection::open(SqliteStore::ledger_path(&path)).unwrap();
    let claimed: i64 = ledger
        .query_row("SELECT count(*) FROM request_ids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(claimed, 2, "the two given ids, not the three minted ones");
    let logged: Vec<String> = store
        .usage(account.id, 0, None, 10)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(logged[..3], minted.map(|id| id.to_string()));

    // A given id met again is still found, and charged nothing.
    let again = store
        .record(vec![request(RequestId::Given("given-1".into()))], "2026-11")
        .await
        .unwrap();
    assert_eq!(again, [Recorded::Duplicate]);
    assert_eq!(store.audit(account.id).await.unwrap().balance, 5);
}
