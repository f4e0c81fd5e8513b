//! A host joins with a bootstrap token, as with kubeadm/k3s: `r8s-server
//! token create`, then `r8s-agent --server --token --ca-cert-hash` (fake
//! runtime) registers its Node with a CSR-signed client certificate; wrong
//! tokens and pins fail clearly, and a deleted token no longer joins.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, wait_for};

fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("r8s-agent");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p agent --bin r8s-agent)",
        bin.display()
    );
    bin
}

fn token_cmd(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_r8s-server"))
        .arg("token")
        .args(args)
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .output()
        .expect("run r8s-server token")
}

fn token_ok(server: &Server, args: &[&str]) -> String {
    let out = token_cmd(server, args);
    assert!(
        out.status.success(),
        "r8s-server token {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An r8s-agent process, killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(server: &Server, root: &Path, name: &str, join: &[&str]) -> Self {
        std::fs::create_dir_all(root).expect("agent dir");
        let log = root.join("agent.log");
        let file = std::fs::File::create(&log).expect("agent log");
        let child = Command::new(agent_bin())
            .args(["--server", &format!("https://127.0.0.1:{}", server.port)])
            .args(join)
            .args(["--hostname-override", name, "--fake-runtime"])
            .args([
                "--node-ip",
                "127.0.0.1",
                "--address",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .arg("--root-dir")
            .arg(root.join("root"))
            .arg("--run-dir")
            .arg(root.join("run"))
            .arg("--pod-logs-dir")
            .arg(root.join("logs"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start r8s-agent");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the agent to exit (it must, within 60 s) and returns its log.
    fn wait_failed(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(!status.success(), "the agent should fail");
                return self.log();
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not fail:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- r8s-agent log ---\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ca_cert_hash(server: &Server) -> String {
    let pem = std::fs::read(server.data_dir().join("tls/ca.crt")).expect("read the CA");
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).expect("CA PEM");
    agent::bootstrap::token::ca_cert_hash(&p.contents).expect("CA hash")
}

fn common_name(pem: &[u8]) -> String {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).expect("cert PEM");
    let cert = p.parse_x509().expect("cert");
    let cn = cert.subject().iter_common_name().next().expect("a CN");
    cn.as_str().expect("CN text").to_owned()
}

#[test]
fn a_host_joins_with_a_bootstrap_token() {
    let server = Server::start();
    let work = tempfile::tempdir().expect("tempdir");

    // The first token is in the data dir and listed, never expiring.
    let first = std::fs::read_to_string(server.data_dir().join("token")).expect("token file");
    let first_id = first
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let list = token_ok(&server, &["list"]);
    assert!(list.starts_with("TOKEN "), "{list}");
    assert!(
        list.contains(first.trim()) && list.contains("<forever>"),
        "{list}"
    );

    let token = token_ok(
        &server,
        &["create", "--ttl", "1h", "--description", "join test"],
    );
    let token = token.trim().to_owned();
    let (id, _) = token.split_once('.').expect("id.secret");
    assert!(token_ok(&server, &["list"]).contains("join test"));
    let hash = ca_cert_hash(&server);
    let join = token_ok(&server, &["create", "--print-join-command"]);
    assert!(
        join.starts_with("r8s-agent --server https://127.0.0.1:"),
        "{join}"
    );
    assert!(join.trim().ends_with(&hash), "{join}");

    // Anonymous clients may read cluster-info, and it is signed for the token.
    let cm = server.ok(&[
        "get",
        "configmap",
        "cluster-info",
        "-n",
        "kube-public",
        "-o",
        "jsonpath={.data}",
    ]);
    assert!(cm.contains("kubeconfig"), "{cm}");
    wait_for(30, "cluster-info signed for the new token", || {
        server
            .ok(&[
                "get",
                "configmap",
                "cluster-info",
                "-n",
                "kube-public",
                "-o",
                "json",
            ])
            .contains(&format!("jws-kubeconfig-{id}"))
    });

    // A wrong pin or a wrong secret is refused with kubeadm's errors.
    let bad_pin = format!("sha256:{}", "0".repeat(64));
    let log = Agent::start(
        &server,
        &work.path().join("bad-pin"),
        "join-bad",
        &["--token", &token, "--ca-cert-hash", &bad_pin],
    )
    .wait_failed();
    assert!(log.contains("none of the public keys"), "{log}");
    let wrong = format!("{id}.{}", "x".repeat(16));
    let log = Agent::start(
        &server,
        &work.path().join("bad-secret"),
        "join-bad",
        &["--token", &wrong],
    )
    .wait_failed();
    assert!(log.contains("failed to verify JWS signature"), "{log}");

    // The real join registers the Node with a CSR-signed client certificate.
    let root = work.path().join("n1");
    let agent = Agent::start(
        &server,
        &root,
        "join-n1",
        &["--token", &token, "--ca-cert-hash", &hash],
    );
    wait_for(90, "node join-n1 registered", || {
        server.kubectl(&["get", "node", "join-n1"]).status.success()
    });
    let csrs = server.ok(&["get", "csr", "-o", "json"]);
    let csrs: serde_json::Value = serde_json::from_str(&csrs).expect("csr list");
    let client_csr = csrs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
        .expect("a kubelet client CSR");
    assert_eq!(
        client_csr["spec"]["username"],
        format!("system:bootstrap:{id}")
    );
    assert_eq!(client_csr["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(
        client_csr["status"]["conditions"][0]["reason"],
        "AutoApproved"
    );
    let table = server.ok(&["get", "csr"]);
    assert!(table.contains("Approved,Issued"), "{table}");
    let kubeconfig = std::fs::read_to_string(root.join("root/kubelet.conf")).expect("kubelet.conf");
    assert!(
        kubeconfig.contains("kubelet-client-current.pem"),
        "{kubeconfig}"
    );
    let cert =
        std::fs::read(root.join("root/pki/kubelet-client-current.pem")).expect("client cert");
    assert_eq!(common_name(&cert), "system:node:join-n1");
    // The node then asks, as itself, for the identity its service proxy
    // and pod network read all Nodes with.
    let proxy_cert = std::fs::read(root.join("root/pki/kube-proxy-client-current.pem"))
        .expect("kube-proxy client cert");
    assert_eq!(common_name(&proxy_cert), "system:kube-proxy");
    let proxy_conf =
        std::fs::read_to_string(root.join("root/kube-proxy.conf")).expect("kube-proxy.conf");
    assert!(
        proxy_conf.contains("kube-proxy-client-current.pem"),
        "{proxy_conf}"
    );
    let proxy_csr = csrs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client")
        .expect("a kube-proxy client CSR");
    assert_eq!(proxy_csr["spec"]["username"], "system:node:join-n1");
    assert_eq!(
        proxy_csr["status"]["conditions"][0]["reason"],
        "AutoApproved"
    );
    let whoami = server.ok(&[
        "--kubeconfig",
        root.join("root/kube-proxy.conf").to_str().unwrap(),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami.trim(), "system:kube-proxy");
    let names = server.ok(&[
        "--kubeconfig",
        root.join("root/kube-proxy.conf").to_str().unwrap(),
        "get",
        "nodes",
        "-o",
        "name",
    ]);
    assert!(names.contains("node/join-n1"), "{names}");
    // The kubelet serving certificate comes by CSR too, once the Node has
    // its address.
    wait_for(60, "the kubelet serving certificate", || {
        root.join("root/pki/kubelet-server-current.pem").exists()
    });
    let table = server.ok(&["get", "csr"]);
    assert!(table.contains("kubernetes.io/kubelet-serving"), "{table}");
    drop(agent);

    // A restart reuses the certificate: no token needed. A node that
    // joined before agents had a kube-proxy identity asks for one as itself.
    std::fs::remove_file(root.join("root/kube-proxy.conf")).expect("remove kube-proxy.conf");
    std::fs::remove_file(root.join("root/pki/kube-proxy-client-current.pem"))
        .expect("remove the kube-proxy certificate");
    let agent = Agent::start(&server, &root, "join-n1", &[]);
    wait_for(60, "the restarted agent to reuse its certificate", || {
        agent
            .log()
            .contains("using the existing kubelet client certificate")
    });
    wait_for(60, "a new kube-proxy certificate", || {
        agent.log().contains("wrote the kube-proxy kubeconfig")
    });
    let renewed = std::fs::read(root.join("root/pki/kube-proxy-client-current.pem"))
        .expect("kube-proxy client cert");
    assert_eq!(common_name(&renewed), "system:kube-proxy");
    drop(agent);

    // A deleted token joins no more.
    let deleted = token_ok(&server, &["delete", id]);
    assert_eq!(deleted.trim(), format!("bootstrap token \"{id}\" deleted"));
    wait_for(30, "the deleted token's signature to go", || {
        !server
            .ok(&[
                "get",
                "configmap",
                "cluster-info",
                "-n",
                "kube-public",
                "-o",
                "json",
            ])
            .contains(&format!("jws-kubeconfig-{id}"))
    });
    let log = Agent::start(
        &server,
        &work.path().join("n2"),
        "join-n2",
        &["--token", &token],
    )
    .wait_failed();
    assert!(log.contains("is invalid for this cluster"), "{log}");
    assert!(!server.kubectl(&["get", "node", "join-n2"]).status.success());
    // The first token still works for discovery.
    assert!(token_ok(&server, &["list"]).contains(&first_id));
}

#[test]
fn kubectl_certificate_approve_and_deny_use_the_approval_subresource() {
    let server = Server::start();
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    let pem = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    use base64::Engine;
    let request = base64::engine::general_purpose::STANDARD.encode(pem);
    for name in ["alice", "mallory"] {
        let csr = format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth]\n  username: someone-else\n"
        );
        server.ok_stdin(&["create", "-f", "-"], &csr);
    }
    // The server names the requester, whatever the client sent.
    let user = server.ok(&["get", "csr", "alice", "-o", "jsonpath={.spec.username}"]);
    assert_eq!(user, "admin");
    assert!(server.ok(&["get", "csr", "alice"]).contains("Pending"));
    server.ok(&["certificate", "approve", "alice"]);
    server.ok(&["certificate", "deny", "mallory"]);
    wait_for(30, "alice's certificate", || {
        !server
            .ok(&[
                "get",
                "csr",
                "alice",
                "-o",
                "jsonpath={.status.certificate}",
            ])
            .is_empty()
    });
    assert!(
        server
            .ok(&["get", "csr", "alice"])
            .contains("Approved,Issued")
    );
    let mallory = server.ok(&["get", "csr", "mallory"]);
    assert!(mallory.contains("Denied"), "{mallory}");
    assert!(
        server
            .ok(&[
                "get",
                "csr",
                "mallory",
                "-o",
                "jsonpath={.status.certificate}"
            ])
            .is_empty()
    );
}

fn serial_and_expiry(pem: &[u8]) -> (String, i64) {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).expect("cert PEM");
    let cert = p.parse_x509().expect("cert");
    (
        cert.raw_serial_as_string(),
        cert.validity().not_after.timestamp(),
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// With `--cluster-signing-duration=90s` the agent's client certificate is
/// renewed within a minute or so; after the first one has expired the
/// server restarts (every connection drops), and the agent's Lease keeps
/// being renewed over new connections with the renewed certificate.
#[test]
fn a_joined_agent_uses_its_renewed_client_certificate_without_a_restart() {
    let mut server = Server::start_with(&["--cluster-signing-duration", "90s"]);
    let work = tempfile::tempdir().expect("tempdir");
    let token = std::fs::read_to_string(server.data_dir().join("token")).expect("token file");
    let hash = ca_cert_hash(&server);
    let root = work.path().join("rot");
    let agent = Agent::start(
        &server,
        &root,
        "rot-n1",
        &["--token", token.trim(), "--ca-cert-hash", &hash],
    );
    wait_for(90, "node rot-n1 registered", || {
        server.kubectl(&["get", "node", "rot-n1"]).status.success()
    });
    let cert_file = root.join("root/pki/kubelet-client-current.pem");
    let (first_serial, first_expiry) =
        serial_and_expiry(&std::fs::read(&cert_file).expect("client cert"));
    assert!(
        first_expiry - unix_now() <= 95,
        "the certificate should live 90 s"
    );

    // Renewed before it expires, then past the first one's expiry.
    wait_for(150, "the client certificate to be renewed", || {
        std::fs::read(&cert_file)
            .map(|pem| serial_and_expiry(&pem).0 != first_serial)
            .unwrap_or(false)
    });
    while unix_now() <= first_expiry + 2 {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        agent.log().contains("client certificate changed"),
        "{}",
        agent.log()
    );

    // Old connections go with the restart: heartbeats must come over new
    // ones, which the expired first certificate could not open.
    server.restart();
    let renew_time = || {
        server.ok(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            "rot-n1",
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    let before = renew_time();
    wait_for(60, "the Lease to be renewed after the restart", || {
        renew_time() != before
    });
    let (serial, _) = serial_and_expiry(&std::fs::read(&cert_file).expect("client cert"));
    assert_ne!(serial, first_serial);
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    assert!(
        log.contains(&serial) || {
            // Renewed again since: the one before is the one in use.
            log.lines()
                .filter(|l| l.contains("system:node:rot-n1") && l.contains("serial="))
                .any(|l| !l.contains(&first_serial))
        },
        "the server never saw a renewed certificate"
    );
    drop(agent);
}
