//! Upkeep against the real PostgreSQL of `quiver-local up`: advisory locks and idempotency keys'
//! expiry, each test in a scratch database of its own, so that a lock it holds or a key it
//! expires touches nobody else.

use std::collections::HashMap;
use std::time::Duration;

use quiver::generate::{Generator, Shape};
use quiver::ingest::{self, Idempotency, Outcome};
use quiver::pg::Pg;
use quiver::testing::{service_config, unique_name};
use quiver::Config;

/// A fresh database on the test server: its configuration (a pool of one, as on Lambda), a raw
/// session on it, and the statement that drops it.
async fn scratch() -> (Config, tokio_postgres::Client, Dropper) {
    let base = service_config();
    let url = base.database_url.clone().unwrap();
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let name = unique_name("locks").replace('-', "_");
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let (head, tail) = url.rsplit_once('/').unwrap();
    let query = tail.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    let scratch_url = format!("{head}/{name}{query}");
    let vars: HashMap<String, String> = [
        ("QUIVER_DATABASE_URL", scratch_url.as_str()),
        ("QUIVER_PG_POOL_SIZE", "1"),
        ("QUIVER_PG_TIMEOUT_MS", "5000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (session, conn) =
        tokio_postgres::connect(&scratch_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    (Config::from_vars(&vars).unwrap(), session, Dropper(admin, name))
}

struct Dropper(tokio_postgres::Client, String);

impl Dropper {
    async fn drop_database(self) {
        let sql = format!("DROP DATABASE {} WITH (FORCE)", self.1);
        self.0.batch_execute(&sql).await.unwrap();
    }
}

/// Advisory locks granted in this database, by anyone.
async fn advisory_locks(session: &tokio_postgres::Client) -> i64 {
    session
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Issue 17, item 10: a migration abandoned while it waits for the lock (a cold start whose
/// request was cancelled) must not leave its pooled connection holding the lock once granted;
/// with a session-level lock, every later migration on this database blocked for good.
#[tokio::test]
async fn an_abandoned_migration_leaves_no_lock_behind() {
    let (cfg, other, scratch) = scratch().await;
    other.batch_execute("SELECT pg_advisory_lock(727000)").await.unwrap();
    let pg = Pg::new(&cfg).unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), quiver::migrate::run(&pg)).await;
    assert!(waited.is_err(), "the migration waits for the lock another session holds");
    other.batch_execute("SELECT pg_advisory_unlock(727000)").await.unwrap();
    let mut held = -1;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        held = advisory_locks(&other).await;
        if held == 0 {
            break;
        }
    }
    assert_eq!(held, 0, "no advisory lock outlives the abandoned migration");
    tokio::time::timeout(Duration::from_secs(5), quiver::migrate::run(&pg))
        .await
        .expect("a later migration does not block")
        .unwrap();
    let tables: i64 = other
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 'user_events'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
    scratch.drop_database().await;
}

/// Writers reserve their ids outside their write's transaction: one writer's open transaction
/// does not hold the reservation lock, and no lock is left once the writes are done.
#[tokio::test]
async fn reserving_ids_holds_no_lock_past_its_statement() {
    let (cfg, other, scratch) = scratch().await;
    let pg = Pg::new(&cfg).unwrap();
    quiver::migrate::run(&pg).await.unwrap();
    let a: i64 = other.query_one("SELECT quiver_reserve_event_ids(10)", &[]).await.unwrap().get(0);
    let b: i64 = other.query_one("SELECT quiver_reserve_event_ids(1)", &[]).await.unwrap().get(0);
    assert_eq!(b, a + 10, "a block is consecutive, and the next one starts after it");
    assert_eq!(advisory_locks(&other).await, 0, "the lock ended with the statement");
    scratch.drop_database().await;
}

fn keyed<'a>(key: &'a str, body_hash: &'a str, ttl: Duration) -> Idempotency<'a> {
    Idempotency { caller: "", key, body_hash, ttl }
}

/// Issue 17, item 3: a key replays its answer within its TTL, and is free for a new body after it.
#[tokio::test]
async fn idempotency_keys_expire_after_their_ttl() {
    let (cfg, other, scratch) = scratch().await;
    let pg = Pg::new(&cfg).unwrap();
    quiver::migrate::run(&pg).await.unwrap();
    let gen = Generator::new(7, Shape::default());
    let batch: Vec<_> = (0..3).map(|i| gen.event(i)).collect();
    let day = Duration::from_secs(86_400);
    let Outcome::Written(first) =
        ingest::insert(&pg, &batch, Some(keyed("k", "a", day))).await.unwrap()
    else {
        panic!("the first use writes")
    };
    let again = ingest::insert(&pg, &batch, Some(keyed("k", "a", day))).await.unwrap();
    assert!(matches!(again, Outcome::Replayed(_)), "within the TTL the answer is replayed");
    let other_body = ingest::insert(&pg, &batch, Some(keyed("k", "b", day))).await;
    assert_eq!(other_body.unwrap_err().status(), 409, "within the TTL another body is a conflict");
    // Past the TTL the key is free: a new body writes, and is what the key replays from then on.
    other
        .batch_execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .await
        .unwrap();
    let Outcome::Written(second) =
        ingest::insert(&pg, &batch, Some(keyed("k", "b", day))).await.unwrap()
    else {
        panic!("an expired key writes again")
    };
    assert!(second.first_id > first.last_id);
    let replay = ingest::insert(&pg, &batch, Some(keyed("k", "b", day))).await.unwrap();
    assert!(matches!(replay, Outcome::Replayed(v) if v["first_id"] == second.first_id));
    scratch.drop_database().await;
}

/// Every keyed write deletes up to 100 expired keys, so the table stays bounded without a job.
#[tokio::test]
async fn keyed_writes_delete_expired_keys() {
    let (cfg, other, scratch) = scratch().await;
    let pg = Pg::new(&cfg).unwrap();
    quiver::migrate::run(&pg).await.unwrap();
    other
        .batch_execute(
            "INSERT INTO idempotency_keys (caller, key, body_hash, status, created_at)
             SELECT 'arn:old', 'old-' || i, 'h', 201, now() - interval '2 days' FROM generate_series(1, 150) i",
        )
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let other = &other;
        async move { other.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let gen = Generator::new(8, Shape::default());
    let batch: Vec<_> = (0..2).map(|i| gen.event(i)).collect();
    let day = Duration::from_secs(86_400);
    ingest::insert(&pg, &batch, Some(keyed("new-1", "h", day))).await.unwrap();
    assert_eq!(count("SELECT count(*) FROM idempotency_keys WHERE caller = 'arn:old'").await, 50);
    ingest::insert(&pg, &batch, Some(keyed("new-2", "h", day))).await.unwrap();
    assert_eq!(count("SELECT count(*) FROM idempotency_keys WHERE caller = 'arn:old'").await, 0);
    assert_eq!(count("SELECT count(*) FROM idempotency_keys").await, 2, "live keys stay");
    scratch.drop_database().await;
}
