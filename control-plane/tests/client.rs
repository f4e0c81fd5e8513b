//! kube-rs and raw HTTPS clients against a real r8s-server: CRUD, watch,
//! paging, restarts, crashes and bad input.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Server;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;

/// Label of the ConfigMaps these tests create, so that lists and watches
/// skip the ones the cluster keeps in every namespace (kube-root-ca.crt).
const OURS: &str = "test=client";

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("test".to_string(), "client".to_string())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

fn rv(cm: &ConfigMap) -> u64 {
    cm.metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<String, Box<Status>> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body)
        .unwrap();
    match client.request_text(req).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(status)) => Err(status),
        Err(other) => panic!("{method} {path}: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_crud_list_watch_and_paging() {
    let s = Server::start();
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let a = api.create(&PostParams::default(), &cm("a")).await.unwrap();
    assert!(a.metadata.uid.is_some());
    assert!(a.metadata.creation_timestamp.is_some());
    let list = api.list(&ListParams::default().labels(OURS)).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let list_rv = list.metadata.resource_version.clone().unwrap();

    let mut events = api
        .watch(&WatchParams::default().labels(OURS), &list_rv)
        .await
        .unwrap()
        .boxed();
    let b = api.create(&PostParams::default(), &cm("b")).await.unwrap();
    assert!(rv(&b) > rv(&a));
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "w"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "w");
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(format!("MODIFIED {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED b", "MODIFIED a", "DELETED b"]);
    let err = api.get("b").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err}"
    );

    // optimistic concurrency
    let mut stale = api.get("a").await.unwrap();
    stale.metadata.resource_version = Some(a.metadata.resource_version.clone().unwrap());
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(
                s.message,
                "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
            );
        }
        other => panic!("{other}"),
    }

    // paging with limit and continue
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("page-{i}")))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().labels(OURS).limit(2);
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(
        names,
        ["a", "page-0", "page-1", "page-2", "page-3", "page-4"]
    );
    if common::selectors_implemented() {
        let one = api
            .list(&ListParams::default().fields("metadata.name=page-3"))
            .await
            .unwrap();
        assert_eq!(one.items.len(), 1);
    }
}

/// The pages of a list are one snapshot: writes after the first page do not
/// show in the next ones; a selector fills each page with matching objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_lists_read_one_snapshot() {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    let s = Server::start();
    let client = s.client().await;
    let mut ns = Namespace::default();
    ns.metadata.name = Some("paging".into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let api: Api<Secret> = Api::namespaced(client.clone(), "paging");
    let secret = |i: usize| {
        let mut s = Secret::default();
        s.metadata.name = Some(format!("s{i}"));
        let half = if i.is_multiple_of(2) { "even" } else { "odd" };
        s.metadata.labels = Some(BTreeMap::from([("half".to_string(), half.to_string())]));
        s
    };
    for i in 0..7 {
        api.create(&PostParams::default(), &secret(i))
            .await
            .unwrap();
    }
    let names = |list: &kube::api::ObjectList<Secret>| -> Vec<String> {
        list.items
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect()
    };

    let first = api.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(names(&first), ["s0", "s1", "s2"]);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let snapshot = first.metadata.resource_version.clone().unwrap();
    // Written after the first page: not in the next ones.
    api.delete("s4", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &secret(7))
        .await
        .unwrap();
    let mut seen = names(&first);
    let mut token = first.metadata.continue_.clone().unwrap();
    loop {
        let page = api
            .list(&ListParams::default().limit(3).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(snapshot.as_str())
        );
        seen.extend(names(&page));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => {
                assert!(page.metadata.remaining_item_count.is_some());
                token = c;
            }
            None => {
                assert_eq!(page.metadata.remaining_item_count, None);
                break;
            }
        }
    }
    assert_eq!(seen, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);

    // A selector: each page holds `limit` matching objects while there are
    // more, and no remainingItemCount (unknown with a selector, as upstream).
    let mut lp = ListParams::default().labels("half=even").limit(2);
    let mut pages = Vec::new();
    loop {
        let page = api.list(&lp).await.unwrap();
        assert_eq!(page.metadata.remaining_item_count, None);
        pages.push(names(&page));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(pages, [vec!["s0", "s2"], vec!["s6"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_objects_and_a_watch_resumes_after_it() {
    let mut s = Server::start();
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = api
        .create(&PostParams::default(), &cm("before"))
        .await
        .unwrap();
    let resume_from = a.metadata.resource_version.clone().unwrap();

    s.restart();
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let got = api.get("before").await.unwrap();
    assert_eq!(got.metadata.uid, a.metadata.uid);
    let b = api
        .create(&PostParams::default(), &cm("after"))
        .await
        .unwrap();
    assert!(
        rv(&b) > rv(&a),
        "resourceVersions must keep increasing across restarts"
    );
    let mut events = api
        .watch(&WatchParams::default().labels(OURS), &resume_from)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("after")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_kill_9() {
    let mut s = Server::start();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut seq = 0u32;
    for round in 0..20u64 {
        if round > 0 {
            s.spawn();
            s.wait_ready();
        }
        let client = s.client().await;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let start = seq;
        let writer = tokio::spawn(async move {
            let mut n = start;
            loop {
                let name = format!("crash-{n}");
                n += 1;
                match api.create(&PostParams::default(), &cm(&name)).await {
                    Ok(_) => {
                        if tx.send(name).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            n
        });
        // A different point in each round: 20..400 ms after the writes start.
        tokio::time::sleep(Duration::from_millis(20 + (round * 97) % 380)).await;
        s.kill9();
        seq = tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .unwrap()
            .unwrap();
        while let Ok(name) = rx.try_recv() {
            acknowledged.push(name);
        }
    }
    s.spawn();
    s.wait_ready();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
    let stored: std::collections::HashSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(
        acknowledged.len() >= 20,
        "too few writes acknowledged: {}",
        acknowledged.len()
    );
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !stored.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged creates lost after kill -9: {lost:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_status_and_the_server_stays_up() {
    let s = Server::start();
    let client = s.client().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let json = "application/json";

    let e = raw(&client, "POST", cms, json, b"{nope".to_vec())
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"), "{e:?}");

    let e = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/foos",
        json,
        b"{}".to_vec(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 404, "{e:?}");

    let pod = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#.to_vec();
    let e = raw(&client, "POST", cms, json, pod).await.unwrap_err();
    assert_eq!(e.code, 400, "{e:?}");

    let bad_name =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#.to_vec();
    let e = raw(&client, "POST", cms, json, bad_name).await.unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e:?}");
    assert!(
        e.message
            .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"),
        "{}",
        e.message
    );

    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"k":"{}"}}}}"#,
        "x".repeat(10 << 20)
    );
    let e = raw(&client, "POST", cms, json, big.into_bytes())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.reason.as_str()),
        (413, "RequestEntityTooLarge"),
        "{e:?}"
    );

    let e = raw(
        &client,
        "GET",
        &format!("{cms}?limit=1&continue=garbage!"),
        json,
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 400, "{e:?}");
    assert!(
        e.message.contains("continue key is not valid"),
        "{}",
        e.message
    );

    let other_ns = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"kube-system"}}"#.to_vec();
    let e = raw(&client, "POST", cms, json, other_ns).await.unwrap_err();
    assert_eq!(
        e.message,
        "the namespace of the provided object does not match the namespace sent on the request"
    );

    let e = raw(
        &client,
        "POST",
        "/api/v1/namespaces/nope/configmaps",
        json,
        br#"{"metadata":{"name":"x"}}"#.to_vec(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );

    let unknown =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"u"},"spec":{"foo":1}}"#
            .to_vec();
    let e = raw(
        &client,
        "POST",
        &format!("{cms}?fieldValidation=Strict"),
        json,
        unknown.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.message, "strict decoding error: unknown field \"spec\"");
    raw(
        &client,
        "POST",
        &format!("{cms}?fieldValidation=Ignore"),
        json,
        unknown,
    )
    .await
    .unwrap();

    let created = raw(
        &client,
        "POST",
        cms,
        json,
        br#"{"metadata":{"name":"rv"}}"#.to_vec(),
    )
    .await
    .unwrap();
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    let stale =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"rv","resourceVersion":"1"}}"#
            .to_vec();
    let e = raw(&client, "PUT", &format!("{cms}/rv"), json, stale)
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"), "{e:?}");

    let e = raw(
        &client,
        "PUT",
        "/api/v1/namespaces/default/configmaps",
        json,
        b"{}".to_vec(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 405, "{e:?}");

    // Aggregated discovery answers with its own content type.
    let req = http::Request::get("/apis")
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let resp = client.send(req.map(Into::into)).await.unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );

    // Anonymous users reach only health and version.
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.auth_info = Default::default();
    let anon = kube::Client::try_from(config).unwrap();
    let e = raw(&anon, "GET", "/api/v1/namespaces", json, Vec::new())
        .await
        .unwrap_err();
    assert_eq!(e.code, 403, "{e:?}");
    raw(&anon, "GET", "/version", json, Vec::new())
        .await
        .unwrap();

    let ok = raw(&client, "GET", "/readyz", json, Vec::new())
        .await
        .unwrap();
    assert_eq!(ok, "ok");
}
