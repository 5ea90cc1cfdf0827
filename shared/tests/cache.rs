//! The Valkey cache against a real server: a private redis-server per test, so one can be stopped
//! and restarted without disturbing anything else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::cache::{Cache, Entry, Key, Status};
use quiver::testing::{free_port, PrivateValkey as Server};
use quiver::valkey::Valkey;

fn cache_on(port: u16) -> Cache {
    let v = Valkey::with_timeouts(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_millis(50),
        Duration::from_millis(300),
    )
    .unwrap();
    Cache::new(Some(Arc::new(v)), Duration::from_secs(60))
}

/// Lets the background connect finish before the first lookup, as a warm instance would have.
async fn warm(cache: &Cache) {
    for _ in 0..50 {
        if cache.get(&Key::new("warm", "", "", "")).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the cache never connected");
}

fn body(n: usize) -> Entry {
    Entry::new(
        format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(2000)).as_bytes(),
        "application/json",
    )
}

#[tokio::test]
async fn miss_then_hit_with_identical_bodies() {
    let s = Server::start(free_port());
    let cache = cache_on(s.port);
    warm(&cache).await;
    let key = Key::new("test", "/r", "a=1", "v1");
    let first = cache.get_or_compute(key, || async { Ok(body(1)) }).await.unwrap();
    assert_eq!(first.status, Status::Miss);
    let second = cache.get_or_compute(key, || async { Ok(body(2)) }).await.unwrap();
    assert_eq!(second.status, Status::Hit);
    assert_eq!(second.entry, first.entry, "the HIT serves the stored answer, not a new one");
    assert_eq!(second.entry.body().unwrap(), first.entry.body().unwrap());
    let other = cache
        .get_or_compute(Key::new("test", "/r", "a=1", "v2"), || async { Ok(body(3)) })
        .await
        .unwrap();
    assert_eq!(other.status, Status::Miss, "a new data version is a new key");
}

#[tokio::test]
async fn fifty_concurrent_misses_compute_once() {
    let s = Server::start(free_port());
    let cache = Arc::new(cache_on(s.port));
    warm(&cache).await;
    let computed = Arc::new(AtomicUsize::new(0));
    let key = Key::new("test", "/flight", "", "v1");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (cache, computed) = (cache.clone(), computed.clone());
            tokio::spawn(async move {
                cache
                    .get_or_compute(key, || async {
                        computed.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(body(7))
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut bodies = std::collections::HashSet::new();
    for t in tasks {
        bodies.insert(t.await.unwrap().entry.body().unwrap());
    }
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    assert_eq!(bodies.len(), 1);
}

/// Issue 17, item 9: a computation that outlives its lock must not release the lock another
/// instance took after it expired.
#[tokio::test]
async fn an_expired_lock_taken_by_another_instance_is_not_released() {
    let s = Server::start(free_port());
    let cache = cache_on(s.port);
    warm(&cache).await;
    let key = Key::new("test", "/lock", "", "v1");
    let lock_key = format!("{}:lock", key.redis_key());
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", s.port)).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let taken_over = cache
        .get_or_compute(key, || {
            let (mut raw, lock_key) = (raw.clone(), lock_key.clone());
            async move {
                let ours: Option<String> =
                    redis::cmd("GET").arg(&lock_key).query_async(&mut raw).await.unwrap();
                assert!(ours.is_some(), "the computing instance holds the lock");
                // Our lock expires and another instance takes it while we still compute.
                let _: () = redis::cmd("SET")
                    .arg(&lock_key)
                    .arg("another-instance")
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                Ok(body(1))
            }
        })
        .await
        .unwrap();
    assert_eq!(taken_over.status, Status::Miss);
    let now: Option<String> = redis::cmd("GET").arg(&lock_key).query_async(&mut raw).await.unwrap();
    assert_eq!(now.as_deref(), Some("another-instance"), "the other instance's lock stays");
    // Our own lock is released as before.
    let key2 = Key::new("test", "/lock2", "", "v1");
    cache.get_or_compute(key2, || async { Ok(body(2)) }).await.unwrap();
    let left: Option<String> = redis::cmd("GET")
        .arg(format!("{}:lock", key2.redis_key()))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(left, None);
}

#[tokio::test]
async fn a_stopped_valkey_is_bypassed_and_caching_resumes_after_restart() {
    let port = free_port();
    let s = Server::start(port);
    let cache = cache_on(port);
    warm(&cache).await;
    let key = Key::new("test", "/outage", "", "v1");
    assert_eq!(
        cache.get_or_compute(key, || async { Ok(body(1)) }).await.unwrap().status,
        Status::Miss
    );
    assert_eq!(
        cache.get_or_compute(key, || async { Ok(body(1)) }).await.unwrap().status,
        Status::Hit
    );

    drop(s);
    for _ in 0..5 {
        let t = Instant::now();
        let l = cache.get_or_compute(key, || async { Ok(body(1)) }).await.unwrap();
        assert_eq!(l.status, Status::Bypass);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a down cache must not slow requests: {:?}",
            t.elapsed()
        );
    }

    let _s = Server::start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut statuses = Vec::new();
    while Instant::now() < deadline {
        let st = cache.get_or_compute(key, || async { Ok(body(1)) }).await.unwrap().status;
        statuses.push(st);
        if st == Status::Hit {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("caching never resumed after the restart: {statuses:?}");
}

#[tokio::test]
async fn no_valkey_configured_means_bypass() {
    let cache = Cache::new(None, Duration::from_secs(60));
    let l =
        cache.get_or_compute(Key::new("t", "", "", ""), || async { Ok(body(1)) }).await.unwrap();
    assert_eq!(l.status, Status::Bypass);
}
