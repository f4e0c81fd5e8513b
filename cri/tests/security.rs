//! Seccomp profiles (RuntimeDefault, Unconfined, Localhost) and the deadline on
//! creating a container whose init gets stuck. Needs root (CI is root).
mod common;

use std::path::Path;
use std::time::Duration;

use cri::proto;

const LIMIT: Duration = Duration::from_secs(60);

fn with_seccomp(
    mut config: proto::ContainerConfig,
    profile: proto::SecurityProfile,
    add_caps: &[&str],
) -> proto::ContainerConfig {
    config.linux = Some(proto::LinuxContainerConfig {
        security_context: Some(proto::LinuxContainerSecurityContext {
            seccomp: Some(profile),
            capabilities: Some(proto::Capability {
                add_capabilities: add_caps.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

fn profile(
    kind: proto::security_profile::ProfileType,
    localhost_ref: &Path,
) -> proto::SecurityProfile {
    proto::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: localhost_ref.display().to_string(),
    }
}

/// What an exec reports about itself and the container's init: seccomp mode,
/// no_new_privs and capability sets, then whether `unshare -U` works.
const EXEC_PROBE: &str = "grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status | sed 's/^/exec-/'; \
    grep -E '^(CapEff|CapBnd):' /proc/1/status | sed 's/^/init-/'; \
    unshare -U true && echo unshare-ok || echo unshare-failed";

/// Runs EXEC_PROBE in container `id` by ExecSync; returns its stdout.
async fn exec_probe(env: &common::Runtime, id: &str) -> String {
    let out = env.exec(id, &["sh", "-c", EXEC_PROBE]).await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `key` in a probe's output (`exec-CapEff:\t...`).
fn probe_value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

/// An exec has the container's filter and exactly the init's capabilities
/// (none of those lent to load the filter), without no_new_privs.
fn assert_exec_confined_like_init(text: &str, seccomp_mode: &str) {
    assert_eq!(probe_value(text, "exec-Seccomp:"), seccomp_mode, "{text}");
    assert_eq!(probe_value(text, "exec-NoNewPrivs:"), "0", "{text}");
    for set in ["CapEff:", "CapBnd:"] {
        assert_eq!(
            probe_value(text, &format!("exec-{set}")),
            probe_value(text, &format!("init-{set}")),
            "{text}"
        );
    }
}

/// Prints the seccomp mode, tries `unshare -U` and a fork, then sleeps.
const PROBE: &str = "grep Seccomp: /proc/self/status; \
    unshare -U true && echo unshare-ok || echo unshare-failed; \
    echo $(echo forked); exec sleep 3600";

#[tokio::test(flavor = "multi_thread")]
async fn seccomp_runtime_default_blocks_unshare_unconfined_allows_it_localhost_sets_errno() {
    use proto::security_profile::ProfileType;
    require_root!();
    let env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod("seccomp").await;
    let logs = env.logs().join("seccomp");

    // RuntimeDefault: filter mode 2, unshare refused with EPERM, fork still fine.
    let config = with_seccomp(
        env.container_config("default", &image, &["sh", "-c", PROBE]),
        profile(ProfileType::RuntimeDefault, Path::new("")),
        &[],
    );
    let default = env.create_and_start(&pod, &sandbox_config, config).await;
    let log = logs.join("default/0.log");
    let text = env.wait_for_file_text(&log, "stdout F forked").await;
    assert!(text.contains("stdout F Seccomp:\t2"), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(text.contains("stdout F unshare-failed"), "{text}");
    // An exec into it is filtered too (libcontainer alone would leave it unconfined).
    let text = exec_probe(&env, &default).await;
    assert_exec_confined_like_init(&text, "2");
    assert!(text.contains("unshare-failed"), "{text}");

    // Unconfined (with CAP_SYS_ADMIN, as unshare of a mount namespace needs it).
    let config = with_seccomp(
        env.container_config(
            "unconfined",
            &image,
            &[
                "sh",
                "-c",
                &format!("unshare -m true && echo mount-ns-ok; {PROBE}"),
            ],
        ),
        profile(ProfileType::Unconfined, Path::new("")),
        &["SYS_ADMIN"],
    );
    let unconfined = env.create_and_start(&pod, &sandbox_config, config).await;
    let log = logs.join("unconfined/0.log");
    let text = env.wait_for_file_text(&log, "stdout F forked").await;
    assert!(text.contains("stdout F Seccomp:\t0"), "{text}");
    assert!(text.contains("stdout F unshare-ok"), "{text}");
    assert!(text.contains("stdout F mount-ns-ok"), "{text}");
    let text = exec_probe(&env, &unconfined).await;
    assert_exec_confined_like_init(&text, "0");
    assert!(text.contains("unshare-ok"), "{text}");

    // Localhost: an OCI profile that fails mkdir with EXDEV (18).
    let path = env.dir.path().join("no-mkdir.json");
    std::fs::write(
        &path,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":18}]}"#,
    )
    .unwrap();
    let config = with_seccomp(
        env.container_config(
            "localhost",
            &image,
            &[
                "sh",
                "-c",
                "mkdir /tmp/x || echo mkdir-failed; echo made > /tmp/file && cat /tmp/file; exec sleep 3600",
            ],
        ),
        profile(ProfileType::Localhost, &path),
        &[],
    );
    let localhost = env.create_and_start(&pod, &sandbox_config, config).await;
    let log = logs.join("localhost/0.log");
    let text = env.wait_for_file_text(&log, "stdout F made").await;
    assert!(text.contains("Invalid cross-device link"), "{text}");
    assert!(text.contains("stdout F mkdir-failed"), "{text}");
    let out = env
        .exec(
            &localhost,
            &["sh", "-c", "mkdir /tmp/y || echo exec-mkdir-failed"],
        )
        .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exec-mkdir-failed"), "{text}");

    // A Localhost profile that does not exist is refused at create.
    let config = with_seccomp(
        env.container_config("missing", &image, &["true"]),
        profile(ProfileType::Localhost, &env.dir.path().join("nope.json")),
        &[],
    );
    let err = env
        .runtime()
        .await
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("cannot load seccomp profile"),
        "{err:?}"
    );

    env.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stuck_container_init_times_out_and_the_runtime_keeps_serving() {
    use proto::security_profile::ProfileType;
    require_root!();
    let env = common::Runtime::start_with_args(&["--container-create-timeout", "3"]).await;
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod("stuck").await;
    let running = env
        .create_and_start(
            &pod,
            &sandbox_config,
            env.container_config("running", &image, &["sleep", "3600"]),
        )
        .await;

    // A seccomp agent that never answers: the init blocks in its first
    // notified syscall (capset, while it drops capabilities) before it is ready.
    let agent = env.dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    let path = env.dir.path().join("notify.json");
    std::fs::write(
        &path,
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": agent,
            "syscalls": [{"names": ["capset"], "action": "SCMP_ACT_NOTIFY"}],
        })
        .to_string(),
    )
    .unwrap();
    let config = with_seccomp(
        env.container_config("stuck", &image, &["sleep", "3600"]),
        profile(ProfileType::Localhost, &path),
        &[],
    );
    let mut stuck_client = env.runtime().await;
    let request = proto::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(config),
        sandbox_config: Some(sandbox_config.clone()),
    };
    let stuck = tokio::spawn(async move { stuck_client.create_container(request).await });

    // Meanwhile requests that need no container creation are answered.
    let mut rt = env.runtime().await;
    let status = tokio::time::timeout(LIMIT, env.status(&running))
        .await
        .expect("status answered while a create is stuck");
    assert_eq!(status.state, proto::ContainerState::ContainerRunning as i32);
    tokio::time::timeout(LIMIT, rt.version(proto::VersionRequest::default()))
        .await
        .expect("version answered while a create is stuck")
        .unwrap();

    let err = tokio::time::timeout(LIMIT, stuck)
        .await
        .expect("stuck create returns")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");

    // The stuck init is gone and libcontainer is free again.
    let list = rt
        .list_containers(proto::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.containers.len(), 1, "{list:?}");
    let after = env
        .create_and_start(
            &pod,
            &sandbox_config,
            env.container_config("after", &image, &["sleep", "3600"]),
        )
        .await;
    let out = env.exec(&after, &["echo", "alive"]).await;
    assert_eq!(out.stdout, b"alive\n");

    env.remove_pod(&pod).await;
}
