//! Real `kubectl` against a test cluster's kubeconfig: what every scenario
//! uses to act on a cluster, as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::Context;

/// `kubectl --kubeconfig <path>`.
#[derive(Debug, Clone)]
pub struct Kubectl {
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Self {
        Self {
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// A `kubectl` command with the kubeconfig set, for callers that need
    /// more control (a background `port-forward`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd
    }

    /// Runs kubectl (with `stdin` fed to it if given).
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().context("kubectl must be installed")?;
        if let Some(text) = stdin
            && let Some(mut input) = child.stdin.take()
        {
            use std::io::Write;
            input.write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.run(args, stdin)?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl <args> -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.ok(&all, None)?)?)
    }

    /// Applies a manifest given as JSON.
    pub fn apply(&self, manifest: &serde_json::Value) -> anyhow::Result<()> {
        self.ok(&["apply", "-f", "-"], Some(&manifest.to_string()))?;
        Ok(())
    }
}
