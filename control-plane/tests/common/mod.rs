//! Test harness: runs the real `r8s-server` binary on a temp data dir and a
//! free port, waits for `/readyz`, runs kubectl against it, kills it on drop.
#![allow(dead_code)]

pub mod kubelet;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Flags added to every start.
    extra_args: Vec<String>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Server {
    /// Starts a server on a fresh data dir and waits until it is ready.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// `start` with more r8s-server flags.
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Self {
            dir,
            port: free_port(),
            child: None,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s.wait_ready();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Starts the server process (not waiting for readiness).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the server log");
        let child = Command::new(env!("CARGO_BIN_EXE_r8s-server"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--write-kubeconfig")
            .arg(self.kubeconfig())
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--disable-agent",
            ])
            .args(["--secure-port", &self.port.to_string()])
            .args(&self.extra_args)
            .env("R8S_LOG_LEVEL", "info,control_plane=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start r8s-server");
        self.child = Some(child);
    }

    /// Polls `/readyz` until it answers ok (30 s at most).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("r8s-server exited with {status}:\n{}", self.log_tail());
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "r8s-server not ready in 30s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready();
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A kubectl command against this server.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .arg("--request-timeout=20s")
            .args(args);
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Runs kubectl with `stdin` as its input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns its stdout; panics with stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        check(args, self.kubectl(args))
    }

    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        check(args, self.kubectl_stdin(args, stdin))
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// kubectl's `--validate` value: strict when the server's OpenAPI v3 index
    /// lists the built-in groups (the OpenAPI documents are generated), else
    /// off, since kubectl cannot validate without them.
    pub fn validate(&self) -> &'static str {
        let index = self.ok(&["get", "--raw", "/openapi/v3"]);
        if index.contains("apis/apps/v1") {
            "--validate=strict"
        } else {
            "--validate=false"
        }
    }

    /// A kube-rs client from the kubeconfig the server wrote.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig()).await
    }
}

pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kube config");
    kube::Client::try_from(config).expect("kube client")
}

fn check(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` until it returns true (`secs` at most).
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- r8s-server log tail ---\n{}", self.log_tail());
        }
        self.kill9();
    }
}

/// Whether this build has the selector syntax (the placeholder module
/// matches nothing; the selector checks below wait for the real one).
pub fn selectors_implemented() -> bool {
    let sel = control_plane::selectors::parse_label_selector("a=b").unwrap();
    let ok = sel.matches(&serde_json::json!({"metadata": {"labels": {"a": "b"}}}));
    if !ok {
        eprintln!("selectors are the placeholder: skipping selector checks");
    }
    ok
}
