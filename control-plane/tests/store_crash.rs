//! Crash safety of the embedded store: a child process (this test binary,
//! re-executed) writes with 8 concurrent tasks and reports every acknowledged
//! write; the parent `kill -9`s it at a random point, reopens the store and
//! checks that no acknowledged write was lost. Repeated 20+ times.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control_plane::storage::{EmbeddedStore, Store};
use rand::Rng;

const CHILD_ENV: &str = "R8S_STORE_CRASH_CHILD";
const ROUND_ENV: &str = "R8S_STORE_CRASH_ROUND";
const ROUNDS: usize = 24;

/// The value written for a tag printed in an ack line (about 1 KiB).
fn full_value(tag: &str) -> String {
    let fill = if tag.starts_with("upd") {
        "y".repeat(700)
    } else {
        "x".repeat(1000)
    };
    format!("{tag}-{fill}")
}

/// The writer, when run as the child; a no-op in a normal test run.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: usize = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(EmbeddedStore::open(Path::new(&dir)).unwrap());
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "ready {}", store.current_revision().await.unwrap()).unwrap();
            out.flush().unwrap();
        }
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut prev: Option<(String, u64)> = None;
                for i in 0u64.. {
                    // Mostly creates of ~1 KiB values, with an update now and then.
                    let (key, tag, rev) = match prev.take() {
                        Some((key, rev)) if i % 3 == 0 => {
                            let tag = format!("upd-{round}-{t}-{i}");
                            let rev = store
                                .update(&key, full_value(&tag).into_bytes(), rev)
                                .await
                                .unwrap();
                            (key, tag, rev)
                        }
                        _ => {
                            let key = format!("/registry/crash/r{round}/t{t}/k{i}");
                            let tag = format!("new-{round}-{t}-{i}");
                            let rev = store
                                .create(&key, full_value(&tag).into_bytes())
                                .await
                                .unwrap();
                            (key, tag, rev)
                        }
                    };
                    prev = Some((key.clone(), rev));
                    // One short line, one write(2): a kill cannot split it.
                    let line = format!("ack {key} {rev} {tag} end\n");
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn kill9_loses_no_acknowledged_write() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    // key -> (revision, value) of the newest acknowledged write.
    let mut acked: HashMap<String, (u64, String)> = HashMap::new();
    let mut max_acked = 0u64;
    let mut total_acks = 0usize;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill right after start-up in some rounds, after a random number of acks
        // (or a random time) in most, and in some only after a few of the
        // store's checkpoints (one a second), when the write-ahead log has
        // started again over older frames.
        let (kill_after_acks, kill_after_time) = match round % 6 {
            0 => (0, Duration::from_millis(rng.random_range(5..400))),
            3 => (
                usize::MAX,
                Duration::from_millis(rng.random_range(1100..2600)),
            ),
            _ => (
                rng.random_range(1..1200),
                Duration::from_millis(rng.random_range(5..400)),
            ),
        };
        let mut ready_at = None;
        let mut acks_this_round = 0;
        let mut killed = false;
        // A watchdog, so that a bug here cannot leave the test hanging.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let pid = child.id();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(Duration::from_secs(30)).is_err() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("ack ") {
                let parts: Vec<&str> = rest.split(' ').collect();
                assert_eq!(parts.len(), 4, "bad line {line:?}");
                assert_eq!(parts[3], "end", "bad line {line:?}");
                let key = parts[0].to_owned();
                let rev: u64 = parts[1].parse().unwrap();
                let value = full_value(parts[2]);
                assert!(rev > 0);
                max_acked = max_acked.max(rev);
                let e = acked.entry(key).or_insert((0, String::new()));
                if rev > e.0 {
                    *e = (rev, value);
                }
                acks_this_round += 1;
            } else if let Some(idx) = line.find("ready ") {
                // libtest may print "test crash_child_writer ... " on the same line.
                let rev = &line[idx + "ready ".len()..];
                let rev: u64 = rev.parse().unwrap();
                assert!(
                    rev >= max_acked,
                    "reopened at {rev}, below acknowledged {max_acked}"
                );
                ready_at = Some(Instant::now());
            }
            if !killed
                && let Some(t) = ready_at
                && (acks_this_round >= kill_after_acks || t.elapsed() >= kill_after_time)
            {
                if kill_after_acks == 0 {
                    std::thread::sleep(Duration::from_millis(rng.random_range(0..5)));
                }
                child.kill().unwrap(); // SIGKILL
                killed = true;
                // Keep reading: lines already written were acknowledged.
            }
        }
        if !killed {
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        let _ = done_tx.send(());
        watchdog.join().unwrap();
        assert!(killed, "child ended by itself in round {round}: {status}");
        total_acks += acks_this_round;

        // Reopen and check every acknowledged write.
        rt.block_on(async {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let current = store.current_revision().await.unwrap();
            assert!(
                current >= max_acked,
                "round {round}: revision {current} < acknowledged {max_acked}"
            );
            let listed = store.list("/registry/crash/", None).await.unwrap();
            assert_eq!(listed.revision, current);
            let by_key: HashMap<_, _> = listed
                .items
                .iter()
                .map(|kv| (kv.key.as_str(), kv))
                .collect();
            for (key, (rev, value)) in &acked {
                let kv = by_key
                    .get(key.as_str())
                    .unwrap_or_else(|| panic!("round {round}: lost {key}@{rev}"));
                if key.starts_with(&format!("/registry/crash/r{round}/")) {
                    let got = store.get(key, None).await.unwrap().unwrap();
                    assert_eq!(&got, *kv);
                }
                // A later, unacknowledged update may have committed too.
                assert!(
                    kv.mod_revision >= *rev,
                    "round {round}: {key} at {} < acked {rev}",
                    kv.mod_revision
                );
                if kv.mod_revision == *rev {
                    assert_eq!(
                        kv.value,
                        value.as_bytes(),
                        "round {round}: {key} has a wrong value"
                    );
                }
            }
            // Revisions keep increasing after the reopen.
            let r = store
                .create(&format!("/registry/check/{round}"), b"c".to_vec())
                .await
                .unwrap();
            assert_eq!(r, current + 1);
            max_acked = max_acked.max(r);
        });
    }
    eprintln!(
        "{ROUNDS} kill -9 rounds, {total_acks} acknowledged writes, final revision {max_acked}, {:?}",
        started.elapsed()
    );
    assert!(total_acks > 0);
}

/// A clean restart: write, drop, reopen, everything intact.
#[tokio::test]
async fn reopen_after_clean_shutdown() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (rev, compacted);
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut last = 0;
        for i in 0..100 {
            last = store
                .create(&format!("/registry/x/{i:03}"), format!("v{i}").into_bytes())
                .await
                .unwrap();
        }
        last = store
            .update("/registry/x/000", b"changed".to_vec(), 1)
            .await
            .unwrap()
            .max(last);
        let (d, _) = store.delete("/registry/x/099", None).await.unwrap();
        store.compact(50).await.unwrap();
        rev = d.max(last);
        compacted = 50;
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.current_revision().await.unwrap(), rev);
    assert_eq!(store.compacted_revision().await.unwrap(), compacted);
    let l = store.list("/registry/x/", None).await.unwrap();
    assert_eq!(l.items.len(), 99);
    assert_eq!(l.items[0].value, &b"changed"[..]);
    assert_eq!(l.items[5].value, &b"v5"[..]);
    assert_eq!(
        store
            .get("/registry/x/010", Some(60))
            .await
            .unwrap()
            .unwrap()
            .value,
        &b"v10"[..]
    );
    assert!(store.get("/registry/x/010", Some(49)).await.is_err());
    assert_eq!(
        store.create("/registry/x/new", vec![]).await.unwrap(),
        rev + 1
    );
}
