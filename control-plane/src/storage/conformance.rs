//! A backend-independent conformance suite for [`Store`] implementations.
//!
//! Every function takes a store that no one else writes to while it runs (it
//! checks exact revisions) and panics on a failure. Keys live under a root of
//! their own per function, so they can share a store; run [`compaction`] last
//! (it compacts the whole store) — [`run_all`] does.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{Event, Revision, Store, StoreError, WatchStream};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the whole suite on one store.
pub async fn run_all(store: Arc<dyn Store>) {
    revisions_increase_by_one(store.clone()).await;
    create_update_delete(store.clone()).await;
    reads_at_past_revisions(store.clone()).await;
    list_prefix_isolation(store.clone()).await;
    list_pages(store.clone()).await;
    watch_replays_then_live(store.clone()).await;
    watch_concurrent_writers(store.clone()).await;
    compaction(store).await;
}

/// The next watch event, failing the test on an error, the end or a timeout.
pub async fn next_event(w: &mut WatchStream) -> Event {
    match tokio::time::timeout(TIMEOUT, w.next()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {TIMEOUT:?}"),
    }
}

/// Asserts that no event arrives within a short while.
pub async fn assert_quiet(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

fn put_of(e: &Event) -> (&str, &[u8], Revision) {
    match e {
        Event::Put { kv, .. } => (&kv.key, &kv.value, kv.mod_revision),
        Event::Delete { .. } => panic!("expected a put, got {e:?}"),
    }
}

/// Every successful write takes exactly the next revision; failed writes take none.
pub async fn revisions_increase_by_one(s: Arc<dyn Store>) {
    let root = "/conformance/revisions/";
    let base = s.current_revision().await.unwrap();
    let r1 = s.create(&format!("{root}a"), b"1".to_vec()).await.unwrap();
    assert_eq!(r1, base + 1);
    let r2 = s.create(&format!("{root}b"), b"2".to_vec()).await.unwrap();
    assert_eq!(r2, base + 2);
    assert!(s.create(&format!("{root}a"), vec![]).await.is_err());
    let r3 = s
        .update(&format!("{root}a"), b"3".to_vec(), r1)
        .await
        .unwrap();
    assert_eq!(r3, base + 3);
    assert!(s.update(&format!("{root}a"), vec![], r1).await.is_err());
    let (r4, prev) = s.delete(&format!("{root}b"), None).await.unwrap();
    assert_eq!(r4, base + 4);
    assert_eq!(prev.value, &b"2"[..]);
    assert_eq!(prev.mod_revision, r2);
    assert_eq!(s.current_revision().await.unwrap(), base + 4);
    let list = s.list(root, None).await.unwrap();
    assert_eq!(list.revision, base + 4);
    assert_eq!(list.items.len(), 1);
}

/// create / update / delete semantics and their errors.
pub async fn create_update_delete(s: Arc<dyn Store>) {
    let key = "/conformance/crud/pods/default/web";
    let r1 = s.create(key, b"v1".to_vec()).await.unwrap();
    match s.create(key, b"again".to_vec()).await {
        Err(StoreError::AlreadyExists(k)) => assert_eq!(k, key),
        other => panic!("second create: {other:?}"),
    }
    let kv = s.get(key, None).await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_ref(), kv.create_revision, kv.mod_revision),
        (&b"v1"[..], r1, r1)
    );

    let r2 = s.update(key, b"v2".to_vec(), r1).await.unwrap();
    assert!(r2 > r1);
    match s.update(key, b"stale".to_vec(), r1).await {
        Err(StoreError::Conflict {
            key: k,
            expected,
            found,
        }) => {
            assert_eq!((k.as_str(), expected, found), (key, r1, r2));
        }
        other => panic!("stale update: {other:?}"),
    }
    let kv = s.get(key, None).await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_ref(), kv.create_revision, kv.mod_revision),
        (&b"v2"[..], r1, r2)
    );

    match s.update("/conformance/crud/missing", vec![], 1).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("update of a missing key: {other:?}"),
    }
    match s.delete("/conformance/crud/missing", None).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("delete of a missing key: {other:?}"),
    }
    match s.delete(key, Some(r1)).await {
        Err(StoreError::Conflict {
            expected, found, ..
        }) => assert_eq!((expected, found), (r1, r2)),
        other => panic!("stale delete: {other:?}"),
    }
    assert!(s.get(key, None).await.unwrap().is_some());

    let (r3, prev) = s.delete(key, Some(r2)).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(
        (prev.value.as_ref(), prev.mod_revision, prev.create_revision),
        (&b"v2"[..], r2, r1)
    );
    assert!(s.get(key, None).await.unwrap().is_none());
    match s.update(key, vec![], r2).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("update after delete: {other:?}"),
    }

    // Re-create: a new create revision.
    let r4 = s.create(key, b"v3".to_vec()).await.unwrap();
    let kv = s.get(key, None).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r4, r4));
    // Delete without a precondition.
    let (r5, prev) = s.delete(key, None).await.unwrap();
    assert_eq!(r5, r4 + 1);
    assert_eq!(prev.value, &b"v3"[..]);
    // Empty and binary values survive.
    let bin: Vec<u8> = (0..=255u8).collect();
    s.create("/conformance/crud/bin", bin.clone())
        .await
        .unwrap();
    s.create("/conformance/crud/empty", Vec::new())
        .await
        .unwrap();
    assert_eq!(
        s.get("/conformance/crud/bin", None)
            .await
            .unwrap()
            .unwrap()
            .value,
        bin
    );
    assert_eq!(
        s.get("/conformance/crud/empty", None)
            .await
            .unwrap()
            .unwrap()
            .value,
        &b""[..]
    );
}

/// get and list at past revisions see the state as of that revision.
pub async fn reads_at_past_revisions(s: Arc<dyn Store>) {
    let root = "/conformance/past/";
    let a = format!("{root}a");
    let b = format!("{root}b");
    let c = format!("{root}c");
    let r1 = s.create(&a, b"a1".to_vec()).await.unwrap();
    let r2 = s.create(&b, b"b1".to_vec()).await.unwrap();
    let r3 = s.update(&a, b"a2".to_vec(), r1).await.unwrap();
    let (r4, _) = s.delete(&b, None).await.unwrap();
    let r5 = s.create(&c, b"c1".to_vec()).await.unwrap();
    let r6 = s.create(&b, b"b2".to_vec()).await.unwrap();

    assert!(s.get(&a, Some(r1 - 1)).await.unwrap().is_none());
    assert_eq!(
        s.get(&a, Some(r1)).await.unwrap().unwrap().value,
        &b"a1"[..]
    );
    assert_eq!(
        s.get(&a, Some(r2)).await.unwrap().unwrap().value,
        &b"a1"[..]
    );
    let a3 = s.get(&a, Some(r3)).await.unwrap().unwrap();
    assert_eq!(
        (a3.value.as_ref(), a3.mod_revision, a3.create_revision),
        (&b"a2"[..], r3, r1)
    );
    assert_eq!(
        s.get(&b, Some(r3)).await.unwrap().unwrap().value,
        &b"b1"[..]
    );
    assert!(s.get(&b, Some(r4)).await.unwrap().is_none());
    assert!(s.get(&b, Some(r5)).await.unwrap().is_none());
    let b6 = s.get(&b, Some(r6)).await.unwrap().unwrap();
    assert_eq!((b6.value.as_ref(), b6.create_revision), (&b"b2"[..], r6));

    let names = |l: &super::ListResult| {
        l.items
            .iter()
            .map(|kv| {
                format!(
                    "{}={}",
                    kv.key.trim_start_matches(root),
                    String::from_utf8_lossy(&kv.value)
                )
            })
            .collect::<Vec<_>>()
    };
    let at = |r| {
        let s = s.clone();
        async move { s.list(root, Some(r)).await.unwrap() }
    };
    let l = at(r1 - 1).await;
    assert!(l.items.is_empty());
    assert_eq!(l.revision, r1 - 1);
    assert_eq!(names(&at(r2).await), ["a=a1", "b=b1"]);
    assert_eq!(names(&at(r3).await), ["a=a2", "b=b1"]);
    assert_eq!(names(&at(r4).await), ["a=a2"]);
    assert_eq!(names(&at(r5).await), ["a=a2", "c=c1"]);
    let l6 = at(r6).await;
    assert_eq!(l6.revision, r6);
    assert_eq!(names(&l6), ["a=a2", "b=b2", "c=c1"]);
    assert_eq!(
        names(&s.list(root, None).await.unwrap()),
        ["a=a2", "b=b2", "c=c1"]
    );

    let cur = s.current_revision().await.unwrap();
    match s.get(&a, Some(cur + 1)).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (cur + 1, cur))
        }
        other => panic!("get in the future: {other:?}"),
    }
    assert!(matches!(
        s.list(root, Some(cur + 5)).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

/// A list by prefix returns exactly the keys under it, in key order.
pub async fn list_prefix_isolation(s: Arc<dyn Store>) {
    let root = "/conformance/prefix/";
    for k in [
        "pods/ns/b",
        "pods/ns/a",
        "pods/a",
        "podsx/a",
        "pods",
        "pod/a",
        "pods0",
        "pods/ns2/c",
    ] {
        s.create(&format!("{root}{k}"), k.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let keys = |prefix: &'static str| {
        let s = s.clone();
        async move {
            let l = s.list(&format!("{root}{prefix}"), None).await.unwrap();
            let rev = s.current_revision().await.unwrap();
            assert_eq!(l.revision, rev);
            let past = s.list(&format!("{root}{prefix}"), Some(rev)).await.unwrap();
            assert_eq!(past.items, l.items);
            l.items
                .into_iter()
                .map(|kv| kv.key.trim_start_matches(root).to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        keys("pods/").await,
        ["pods/a", "pods/ns/a", "pods/ns/b", "pods/ns2/c"]
    );
    assert_eq!(keys("pods/ns/").await, ["pods/ns/a", "pods/ns/b"]);
    assert_eq!(keys("podsx/").await, ["podsx/a"]);
    assert_eq!(keys("pod/").await, ["pod/a"]);
    assert!(keys("nothing/").await.is_empty());
    assert_eq!(keys("").await.len(), 8);
}

/// Pages of any size, each starting after the last key of the one before,
/// add up to the whole list at their revision, past revisions included.
pub async fn list_pages(s: Arc<dyn Store>) {
    let root = "/conformance/pages/";
    let prefix = format!("{root}pods/");
    let key = |k: &str| format!("{root}{k}");
    for k in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        s.create(&key(&format!("pods/{k}")), k.as_bytes().to_vec())
            .await
            .unwrap();
    }
    s.create(&key("podsx/a"), vec![]).await.unwrap();
    let c = s.get(&key("pods/c"), None).await.unwrap().unwrap();
    let r = s
        .update(&key("pods/c"), b"c2".to_vec(), c.mod_revision)
        .await
        .unwrap();
    s.update(&key("pods/c"), b"c3".to_vec(), r).await.unwrap();
    s.delete(&key("pods/e"), None).await.unwrap();
    let past = s.current_revision().await.unwrap();
    s.create(&key("pods/i"), b"i".to_vec()).await.unwrap();
    s.delete(&key("pods/b"), None).await.unwrap();
    let a = s.get(&key("pods/a"), None).await.unwrap().unwrap();
    s.update(&key("pods/a"), b"a2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    let now = s.current_revision().await.unwrap();
    for rev in [past, now] {
        let whole = s.list(&prefix, Some(rev)).await.unwrap().items;
        for limit in [1, 2, 3, 7, 100] {
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = s
                    .list_page(&prefix, after.as_deref(), rev, limit)
                    .await
                    .unwrap();
                assert!(page.items.len() <= limit);
                seen.extend(page.items.iter().cloned());
                if rev == now {
                    let left = if page.items.len() == limit {
                        whole.len() - seen.len()
                    } else {
                        0
                    };
                    assert_eq!(page.remaining, left as u64, "limit {limit} after {after:?}");
                }
                if page.items.len() < limit {
                    break;
                }
                after = page.items.last().map(|kv| kv.key.clone());
            }
            assert_eq!(seen, whole, "revision {rev}, limit {limit}");
        }
    }
    // A start key that is not (or no longer) stored.
    let from_deleted = s
        .list_page(&prefix, Some(&key("pods/b")), now, 2)
        .await
        .unwrap();
    let names: Vec<&[u8]> = from_deleted
        .items
        .iter()
        .map(|kv| kv.value.as_ref())
        .collect();
    assert_eq!(names, [b"c3".as_slice(), b"d".as_slice()]);
    assert!(matches!(
        s.list_page(&prefix, None, now + 1, 2).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

/// A watch replays history after its revision, then live events, in order with
/// no gap, only for its prefix.
pub async fn watch_replays_then_live(s: Arc<dyn Store>) {
    let root = "/conformance/watch/";
    let a = format!("{root}items/a");
    let b = format!("{root}items/b");
    let base = s.current_revision().await.unwrap();
    let r1 = s.create(&a, b"a1".to_vec()).await.unwrap();
    s.create(&format!("{root}other/x"), b"x".to_vec())
        .await
        .unwrap();
    let r3 = s.update(&a, b"a2".to_vec(), r1).await.unwrap();
    let r4 = s.create(&b, b"b1".to_vec()).await.unwrap();

    let prefix = format!("{root}items/");
    let mut w = s.watch(&prefix, base).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(put_of(&e), (a.as_str(), &b"a1"[..], r1));
    assert!(matches!(&e, Event::Put { prev: None, .. }));
    let e = next_event(&mut w).await;
    assert_eq!(put_of(&e), (a.as_str(), &b"a2"[..], r3));
    match &e {
        Event::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!((prev.value.as_ref(), prev.mod_revision), (&b"a1"[..], r1));
            assert_eq!(kv.create_revision, r1);
        }
        other => panic!("update event without prev: {other:?}"),
    }
    assert_eq!(
        put_of(&next_event(&mut w).await),
        (b.as_str(), &b"b1"[..], r4)
    );

    // A watch from the middle of history.
    let mut w2 = s.watch(&prefix, r3).await.unwrap();
    assert_eq!(next_event(&mut w2).await.revision(), r4);
    // A watch from now.
    let mut w3 = s.watch(&prefix, r4).await.unwrap();

    // Live events.
    s.create(&format!("{root}other/y"), vec![]).await.unwrap();
    let (r6, _) = s.delete(&a, Some(r3)).await.unwrap();
    let r7 = s.update(&b, b"b2".to_vec(), r4).await.unwrap();
    for w in [&mut w, &mut w2, &mut w3] {
        match next_event(w).await {
            Event::Delete { prev, revision } => {
                assert_eq!(revision, r6);
                assert_eq!(
                    (prev.key.as_str(), prev.value.as_ref(), prev.mod_revision),
                    (a.as_str(), &b"a2"[..], r3)
                );
            }
            other => panic!("expected a delete: {other:?}"),
        }
        assert_eq!(put_of(&next_event(w).await), (b.as_str(), &b"b2"[..], r7));
        assert_quiet(w).await;
    }

    // Replay of a delete from history.
    let mut w4 = s.watch(&prefix, r4).await.unwrap();
    assert!(matches!(next_event(&mut w4).await, Event::Delete { revision, .. } if revision == r6));
    assert_eq!(next_event(&mut w4).await.revision(), r7);

    let cur = s.current_revision().await.unwrap();
    match s.watch(&prefix, cur + 10).await {
        Err(StoreError::FutureRevision { .. }) => {}
        Err(e) => panic!("watch in the future: {e}"),
        Ok(_) => {
            // Some backends accept future watches; they must then stay quiet.
        }
    }
}

/// Concurrent writers and watchers started at different points: every watcher
/// sees every event after its start exactly once, in revision order.
pub async fn watch_concurrent_writers(s: Arc<dyn Store>) {
    let root = "/conformance/concurrent/";
    let base = s.current_revision().await.unwrap();
    let writers = 8;
    let per_writer = 60;
    let total = (writers * per_writer) as u64;
    let mut early = s.watch(root, base).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..writers {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let key = format!("{root}w{t}/k{}", i % 10);
                if i < 10 {
                    s.create(&key, vec![t as u8; 64]).await.unwrap();
                } else {
                    let cur = s.get(&key, None).await.unwrap().unwrap();
                    s.update(&key, vec![i as u8; 64], cur.mod_revision)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    // Watchers that start while the writes go on.
    let mut late = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let from = s.current_revision().await.unwrap();
        late.push((from, s.watch(root, from).await.unwrap()));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.current_revision().await.unwrap(), base + total);
    for rev in base + 1..=base + total {
        assert_eq!(next_event(&mut early).await.revision(), rev);
    }
    for (from, mut w) in late {
        for rev in from + 1..=base + total {
            assert_eq!(next_event(&mut w).await.revision(), rev);
        }
        assert_quiet(&mut w).await;
    }
}

/// Compaction: reads and watches before the compacted revision fail with
/// `Compacted`, the state at and after it is intact, and later watches work.
pub async fn compaction(s: Arc<dyn Store>) {
    let root = "/conformance/compaction/";
    let a = format!("{root}a");
    let b = format!("{root}b");
    let c = format!("{root}c");
    let r1 = s.create(&a, b"a1".to_vec()).await.unwrap();
    let r2 = s.create(&b, b"b1".to_vec()).await.unwrap();
    let r3 = s.update(&a, b"a2".to_vec(), r1).await.unwrap();
    let (r4, _) = s.delete(&b, None).await.unwrap();
    let r5 = s.create(&c, b"c1".to_vec()).await.unwrap();
    let r6 = s.update(&a, b"a3".to_vec(), r3).await.unwrap();

    s.compact(r5).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), r5);
    // Compacting to an older revision is a no-op.
    let _ = s.compact(r2).await;
    assert_eq!(s.compacted_revision().await.unwrap(), r5);

    for r in [r1, r2, r3, r4] {
        match s.get(&a, Some(r)).await {
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => assert_eq!((requested, compacted), (r, r5)),
            other => panic!("get at a compacted revision: {other:?}"),
        }
        assert!(matches!(
            s.list(root, Some(r)).await,
            Err(StoreError::Compacted { .. })
        ));
        match s.watch(root, r).await {
            Err(StoreError::Compacted { .. }) => {}
            Err(e) => panic!("watch at a compacted revision: {e}"),
            Ok(mut w) => match tokio::time::timeout(TIMEOUT, w.next()).await {
                Ok(Some(Err(StoreError::Compacted { .. }))) => {}
                other => panic!("watch at a compacted revision: {other:?}"),
            },
        }
    }
    // The state at the compacted revision is intact.
    let l = s.list(root, Some(r5)).await.unwrap();
    let vals: Vec<_> = l
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_ref(), kv.mod_revision))
        .collect();
    assert_eq!(
        vals,
        [(a.as_str(), &b"a2"[..], r3), (c.as_str(), &b"c1"[..], r5)]
    );
    assert!(s.get(&b, Some(r5)).await.unwrap().is_none());
    assert_eq!(
        s.get(&a, Some(r6)).await.unwrap().unwrap().value,
        &b"a3"[..]
    );

    // A watch from the compacted revision sees later events with their prev values.
    let mut w = s.watch(root, r5).await.unwrap();
    match next_event(&mut w).await {
        Event::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!((kv.mod_revision, kv.value.as_ref()), (r6, &b"a3"[..]));
            assert_eq!((prev.mod_revision, prev.value.as_ref()), (r3, &b"a2"[..]));
        }
        other => panic!("after compaction: {other:?}"),
    }
    let (r7, prev) = s.delete(&c, Some(r5)).await.unwrap();
    assert_eq!(prev.value, &b"c1"[..]);
    match next_event(&mut w).await {
        Event::Delete { prev, revision } => {
            assert_eq!(revision, r7);
            assert_eq!(prev.value, &b"c1"[..]);
        }
        other => panic!("live delete after compaction: {other:?}"),
    }
    // Writes keep going; compacting up to the newest revision works.
    let r8 = s.create(&b, b"b2".to_vec()).await.unwrap();
    s.compact(r8).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), r8);
    let l = s.list(root, None).await.unwrap();
    let keys: Vec<_> = l.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, [a.as_str(), b.as_str()]);
    assert_eq!(
        s.get(&a, Some(r8)).await.unwrap().unwrap().value,
        &b"a3"[..]
    );
    assert!(matches!(
        s.compact(r8 + 100).await,
        Err(StoreError::FutureRevision { .. })
    ));
    let mut w = s.watch(root, r8).await.unwrap();
    let r9 = s.update(&b, b"b3".to_vec(), r8).await.unwrap();
    match next_event(&mut w).await {
        Event::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!(kv.mod_revision, r9);
            assert_eq!(prev.value, &b"b2"[..]);
        }
        other => panic!("after second compaction: {other:?}"),
    }
}
