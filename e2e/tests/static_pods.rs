//! Static pods from `--pod-manifest-path` with real kubectl: a manifest in
//! the directory runs as a pod named `<name>-<node>` and shows in the API as
//! a mirror pod (`kubernetes.io/config.mirror`, owned by the Node) with the
//! status the agent reports; deleting the mirror pod does not stop the static
//! pod (a new mirror appears, same container); removing the manifest stops
//! the pod and its mirror goes. Needs root (CI is root).

use std::path::Path;
use std::time::Duration;

use e2e::cluster::Cluster;
use e2e::registry::Registry;
use e2e::scenario::{first_status, wait_pod};

fn scenario(cluster: &mut Cluster, registry: &Registry, manifests: &Path) -> anyhow::Result<()> {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  labels: {{app: static-web}}\nspec:\n  containers:\n  - name: app\n    image: {}\n    command: [sh, -c, 'echo static; exec sleep 3600']\n",
        registry.busybox()
    );
    std::fs::write(manifests.join("web.yaml"), manifest)?;
    let name = format!("static-web-{}", cluster.node_name);

    let mirror = wait_pod(
        cluster,
        &name,
        "the mirror pod to show the static pod Running",
        Duration::from_secs(120),
        |p| p["status"]["phase"] == "Running" && first_status(p)["ready"] == true,
    )?;
    let annotations = &mirror["metadata"]["annotations"];
    let hash = annotations["kubernetes.io/config.mirror"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!hash.is_empty(), "mirror annotation: {annotations:#}");
    assert_eq!(annotations["kubernetes.io/config.hash"], hash.as_str());
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(
        mirror["metadata"]["ownerReferences"][0]["name"],
        cluster.node_name.as_str()
    );
    let container = first_status(&mirror)["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mirror_uid = mirror["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(mirror_uid, hash, "the mirror has a UID of its own");
    assert_eq!(cluster.kubectl_ok(&["logs", &name], None)?, "static\n");

    // Deleting the mirror pod does not touch the static pod: a new mirror shows it.
    cluster.kubectl_ok(&["delete", "pod", &name, "--wait=false"], None)?;
    let again = wait_pod(
        cluster,
        &name,
        "a new mirror pod",
        Duration::from_secs(90),
        |p| {
            p["metadata"]["uid"] != mirror_uid.as_str()
                && p["metadata"]["deletionTimestamp"].is_null()
                && first_status(p)["containerID"] == container.as_str()
        },
    )?;
    assert_eq!(first_status(&again)["restartCount"], 0);

    // The manifest removed: the pod stops and its mirror goes.
    std::fs::remove_file(manifests.join("web.yaml"))?;
    e2e::wait_for("the mirror pod to go", Duration::from_secs(90), || {
        let out = cluster.kubectl(&["get", "pod", &name], None).ok()?;
        String::from_utf8_lossy(&out.stderr)
            .contains("NotFound")
            .then_some(())
    })?;
    e2e::wait_for(
        "the static pod's containers to go",
        Duration::from_secs(60),
        || {
            let left = e2e::cri_query::containers(&cluster.cri_socket()).ok()?;
            (!left
                .iter()
                .any(|c| c.labels.get("io.kubernetes.pod.uid") == Some(&hash)))
            .then_some(())
        },
    )?;
    Ok(())
}

#[test]
fn a_static_pod_runs_from_the_manifest_dir_and_shows_as_a_mirror_pod() -> anyhow::Result<()> {
    if !e2e::is_root() {
        eprintln!("skipping: this test needs root (CI runs it as root)");
        return Ok(());
    }
    let registry = Registry::start(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("images"))?;
    let manifests = tempfile::tempdir()?;
    let mut cluster = Cluster::new()?;
    cluster.extra_env.push((
        "R8S_POD_MANIFEST_PATH".to_owned(),
        manifests.path().display().to_string(),
    ));
    cluster.spawn()?;
    let result = scenario(&mut cluster, &registry, manifests.path());
    if result.is_err() {
        eprintln!("r8s-server log:\n{}", cluster.log_tail(200));
    }
    result
}
