//! The CRI streaming server end to end: Exec/PortForward over gRPC, then the
//! returned URL as kubectl (through kubelet) uses it: WebSocket v5 channels,
//! plain SPDY/3.1, and SPDY tunnelled in a WebSocket. Needs root (CI is root).
mod common;

use std::time::Duration;

use cri::proto;
use cri::streaming::spdy::{Connection, Role};
use cri::streaming::transport;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const LIMIT: Duration = Duration::from_secs(30);

async fn exec_url(env: &common::Runtime, req: proto::ExecRequest) -> String {
    env.runtime()
        .await
        .exec(req)
        .await
        .unwrap()
        .into_inner()
        .url
}

fn exec_req(id: &str, cmd: &[&str], stdin: bool, tty: bool) -> proto::ExecRequest {
    proto::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_connect(url: &str, protocol: &str) -> Ws {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let tcp = TcpStream::connect(host).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
    ws
}

/// Output per channel and the final status, read until the server closes.
#[derive(Default, Debug)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Vec<u8>,
}

async fn collect(ws: &mut Ws) -> Collected {
    let mut c = Collected::default();
    while let Some(msg) = tokio::time::timeout(LIMIT, ws.next()).await.unwrap() {
        match msg {
            Ok(Message::Binary(b)) if !b.is_empty() => match b[0] {
                1 => c.stdout.extend_from_slice(&b[1..]),
                2 => c.stderr.extend_from_slice(&b[1..]),
                3 => c.status.extend_from_slice(&b[1..]),
                other => panic!("unexpected channel {other}"),
            },
            Ok(Message::Close(_)) | Err(_) => break,
            _ => {}
        }
    }
    c
}

fn status(c: &Collected) -> serde_json::Value {
    serde_json::from_slice(&c.status).unwrap_or_else(|e| panic!("{e}: {c:?}"))
}

async fn start_pod(env: &common::Runtime, name: &str, cmd: &[&str]) -> (String, String) {
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod(name).await;
    let id = env
        .create_and_start(
            &pod,
            &sandbox_config,
            env.container_config("main", &image, cmd),
        )
        .await;
    (pod, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_websocket_v5_and_v4_reports_output_and_exit_codes() {
    require_root!();
    let env = common::Runtime::start().await;
    let (pod, id) = start_pod(&env, "ws-exec", &["sleep", "3600"]).await;

    // echo: output on channel 1, then Success.
    let url = exec_url(&env, exec_req(&id, &["echo", "hi"], false, false)).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    let c = collect(&mut ws).await;
    assert_eq!(c.stdout, b"hi\n");
    assert_eq!(c.status, br#"{"metadata":{},"status":"Success"}"#);

    // The token was single-use.
    let again = TcpStream::connect(url.trim_start_matches("http://").split('/').next().unwrap())
        .await
        .unwrap();
    let ws_url = url.replacen("http://", "ws://", 1);
    let err = tokio_tungstenite::client_async(ws_url.as_str(), again)
        .await
        .expect_err("a used token must be refused");
    assert!(err.to_string().contains("404"), "{err}");

    // Non-zero exit: NonZeroExitCode with the code as cause.
    let url = exec_url(
        &env,
        exec_req(&id, &["sh", "-c", "echo oops >&2; exit 3"], false, false),
    )
    .await;
    let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
    let c = collect(&mut ws).await;
    assert_eq!(c.stderr, b"oops\n");
    let s = status(&c);
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["reason"], "NonZeroExitCode");
    assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(s["details"]["causes"][0]["message"], "3");
    assert_eq!(
        s["message"],
        "command terminated with non-zero exit code: error executing command [sh -c echo oops >&2; exit 3], exit code 3"
    );

    // stdin: cat echoes until the client closes stdin with 0xff 0x00.
    let url = exec_url(&env, exec_req(&id, &["cat"], true, false)).await;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    ws.send(Message::binary(b"\x00piped data\n".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(vec![255u8, 0])).await.unwrap();
    let c = collect(&mut ws).await;
    assert_eq!(c.stdout, b"piped data\n");
    assert_eq!(status(&c)["status"], "Success");

    // A client that goes away takes its exec with it.
    let url = exec_url(&env, exec_req(&id, &["sleep", "1234"], false, false)).await;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    let _ = tokio::time::timeout(LIMIT, ws.next()).await.unwrap();
    let running = || async {
        let out = env
            .exec(&id, &["sh", "-c", "ps | grep -c '[s]leep 1234'"])
            .await;
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The first frame may come before the tenant process has exec'd sleep.
    let mut started = false;
    for _ in 0..100 {
        if running().await == "1" {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "sleep 1234 never showed up in the container");
    drop(ws);
    let mut gone = false;
    for _ in 0..100 {
        if running().await == "0" {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "exec survived its client");

    // A missing command is an internal error in the status, not a hang.
    let url = exec_url(&env, exec_req(&id, &["/no/such/binary"], false, false)).await;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    let c = collect(&mut ws).await;
    assert_eq!(status(&c)["status"], "Failure", "{c:?}");

    env.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tty_exec_gets_a_pty_that_follows_resizes() {
    require_root!();
    let env = common::Runtime::start().await;
    let (pod, id) = start_pod(&env, "tty-exec", &["sleep", "3600"]).await;

    let url = exec_url(&env, exec_req(&id, &["tty"], false, true)).await;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    let c = collect(&mut ws).await;
    let out = String::from_utf8_lossy(&c.stdout);
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(status(&c)["status"], "Success");

    // Resize first, then ask the terminal its size through stdin.
    let url = exec_url(&env, exec_req(&id, &["sh"], true, true)).await;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    let mut resize = vec![4u8];
    resize.extend_from_slice(br#"{"Width":123,"Height":45}"#);
    ws.send(Message::binary(resize)).await.unwrap();
    ws.send(Message::binary(b"\x00stty size; exit 7\n".to_vec()))
        .await
        .unwrap();
    let c = collect(&mut ws).await;
    let out = String::from_utf8_lossy(&c.stdout);
    assert!(out.contains("45 123"), "{out:?}");
    assert_eq!(status(&c)["details"]["causes"][0]["message"], "7");

    env.remove_pod(&pod).await;
}

/// Opens a plain SPDY/3.1 connection: HTTP upgrade, then frames on the socket.
async fn spdy_connect(url: &str, protocol: &str) -> (Connection, String) {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(tcp.read(&mut b).await.unwrap(), 1, "closed: {head:?}");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (input, output) = transport::raw(tcp);
    let (conn, _incoming) = Connection::start(input, output, Role::Client);
    (conn, head)
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

async fn read_all(r: &mut cri::streaming::spdy::StreamReader) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = tokio::time::timeout(LIMIT, r.read()).await.unwrap() {
        out.extend_from_slice(&b);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_plain_spdy_v4() {
    require_root!();
    let env = common::Runtime::start().await;
    let (pod, id) = start_pod(&env, "spdy-exec", &["sleep", "3600"]).await;

    let url = exec_url(
        &env,
        exec_req(&id, &["sh", "-c", "cat; echo err >&2; exit 2"], true, false),
    )
    .await;
    let (conn, head) = spdy_connect(&url, "v4.channel.k8s.io").await;
    assert!(
        head.to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    // kubectl's order: error, stdin, stdout, stderr.
    let mut error = conn
        .open_stream(h(&[("streamType", "error")]))
        .await
        .unwrap();
    let stdin = conn
        .open_stream(h(&[("streamType", "stdin")]))
        .await
        .unwrap();
    let mut stdout = conn
        .open_stream(h(&[("streamType", "stdout")]))
        .await
        .unwrap();
    let mut stderr = conn
        .open_stream(h(&[("streamType", "stderr")]))
        .await
        .unwrap();
    error.writer.finish().await.unwrap();
    stdin.writer.write(b"through spdy\n").await.unwrap();
    stdin.writer.finish().await.unwrap();
    assert_eq!(read_all(&mut stdout.reader).await, b"through spdy\n");
    assert_eq!(read_all(&mut stderr.reader).await, b"err\n");
    let status: serde_json::Value =
        serde_json::from_slice(&read_all(&mut error.reader).await).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "2");
    conn.close().await;

    env.remove_pod(&pod).await;
}

async fn forward_one(conn: &Connection, request_id: &str, port: &str) -> (Vec<u8>, Vec<u8>) {
    let mut error = conn
        .open_stream(h(&[
            ("streamType", "error"),
            ("port", port),
            ("requestID", request_id),
        ]))
        .await
        .unwrap();
    error.writer.finish().await.unwrap();
    let mut data = conn
        .open_stream(h(&[
            ("streamType", "data"),
            ("port", port),
            ("requestID", request_id),
        ]))
        .await
        .unwrap();
    data.writer.write(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let body = read_all(&mut data.reader).await;
    let err = read_all(&mut error.reader).await;
    (body, err)
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_over_websocket_tunnel_and_plain_spdy() {
    require_root!();
    let env = common::Runtime::start().await;
    let (pod, _id) = start_pod(
        &env,
        "pf",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-pf > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    )
    .await;
    let pf_url = || async {
        env.runtime()
            .await
            .port_forward(proto::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![8080],
            })
            .await
            .unwrap()
            .into_inner()
            .url
    };

    // kubectl 1.32's first choice: SPDY inside binary WebSocket messages.
    let url = pf_url().await;
    assert!(url.contains("/portforward/"), "{url}");
    let ws = ws_connect(&url, "SPDY/3.1+portforward.k8s.io").await;
    let (input, output) = transport::websocket(ws);
    let (conn, _incoming) = Connection::start(input, output, Role::Client);
    // httpd may still be starting: retry a few connections on the same tunnel.
    let mut last = (Vec::new(), Vec::new());
    for attempt in 0..50 {
        last = forward_one(&conn, &attempt.to_string(), "8080").await;
        if !last.0.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = String::from_utf8_lossy(&last.0);
    assert!(
        body.starts_with("HTTP/1.1 200 OK"),
        "{body:?} {:?}",
        String::from_utf8_lossy(&last.1)
    );
    assert!(body.ends_with("hello-pf\n"), "{body:?}");
    assert!(last.1.is_empty());
    // A closed port reports on the error stream.
    let (body, err) = forward_one(&conn, "closed", "8081").await;
    assert!(body.is_empty());
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.starts_with("error forwarding port 8081 to pod"),
        "{err}"
    );
    conn.close().await;

    // The fallback: plain SPDY/3.1 POST.
    let url = pf_url().await;
    let (conn, _) = spdy_connect(&url, "portforward.k8s.io").await;
    let (body, err) = forward_one(&conn, "0", "8080").await;
    assert!(
        String::from_utf8_lossy(&body).ends_with("hello-pf\n"),
        "{err:?}"
    );
    conn.close().await;

    env.remove_pod(&pod).await;
}

/// A fake API server in front of r8s-cri, for the real kubectl: discovery and
/// the pod come from canned JSON; `…/exec` and `…/portforward` call the CRI
/// RPC and proxy the upgraded connection byte for byte, as kubelet does.
mod fake_apiserver {
    use super::*;

    pub struct Target {
        pub socket: std::path::PathBuf,
        pub container: String,
        pub sandbox: String,
    }

    async fn read_head(tcp: &mut TcpStream) -> Option<String> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if tcp.read(&mut b).await.ok()? == 0 {
                return None;
            }
            head.push(b[0]);
        }
        String::from_utf8(head).ok()
    }

    async fn reply(tcp: &mut TcpStream, status: &str, content_type: &str, body: &str) {
        let msg = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tcp.write_all(msg.as_bytes()).await;
        let _ = tcp.shutdown().await;
    }

    const DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

    fn query(path: &str) -> Vec<(String, String)> {
        path.split_once('?')
            .map(|(_, q)| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), unescape(v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn unescape(v: &str) -> String {
        let b = v.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    }

    async fn proxy(mut client: TcpStream, head: &str, url: &str) {
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap();
        let mut upstream = TcpStream::connect(host).await.unwrap();
        let (first, others) = head.split_once("\r\n").unwrap();
        let method = first.split(' ').next().unwrap();
        let rewritten = format!("{method} /{path} HTTP/1.1\r\n{others}");
        upstream.write_all(rewritten.as_bytes()).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }

    async fn handle(mut tcp: TcpStream, target: std::sync::Arc<Target>) {
        let Some(head) = read_head(&mut tcp).await else {
            return;
        };
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let bare = path.split('?').next().unwrap_or("").to_string();
        let mut cri = cri::client::connect_path(&target.socket).await.unwrap();
        match bare.as_str() {
            "/version" => {
                reply(
                    &mut tcp,
                    "200 OK",
                    "application/json",
                    r#"{"major":"1","minor":"32","gitVersion":"v1.32.0"}"#,
                )
                .await
            }
            "/api" => {
                let body = r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[{"metadata":{"name":""},"versions":[{"version":"v1","resources":[{"resource":"pods","responseKind":{"group":"","version":"v1","kind":"Pod"},"scope":"Namespaced","verbs":["get","list"]}]}]}]}"#;
                reply(&mut tcp, "200 OK", DISCOVERY, body).await
            }
            "/apis" => {
                let body = r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[]}"#;
                reply(&mut tcp, "200 OK", DISCOVERY, body).await
            }
            "/api/v1/namespaces/default/pods/p" => {
                let body = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"main","image":"busybox"}]},"status":{"phase":"Running"}}"#;
                reply(&mut tcp, "200 OK", "application/json", body).await
            }
            "/api/v1/namespaces/default/pods/p/exec" => {
                let q = query(&path);
                let flag = |k: &str| q.iter().any(|(n, v)| n == k && v == "true");
                let req = proto::ExecRequest {
                    container_id: target.container.clone(),
                    cmd: q
                        .iter()
                        .filter(|(n, _)| n == "command")
                        .map(|(_, v)| v.clone())
                        .collect(),
                    tty: flag("tty"),
                    stdin: flag("stdin"),
                    stdout: flag("stdout"),
                    stderr: flag("stderr"),
                };
                let url = cri.runtime.exec(req).await.unwrap().into_inner().url;
                proxy(tcp, &head, &url).await
            }
            "/api/v1/namespaces/default/pods/p/portforward" => {
                let req = proto::PortForwardRequest {
                    pod_sandbox_id: target.sandbox.clone(),
                    port: vec![],
                };
                let url = cri
                    .runtime
                    .port_forward(req)
                    .await
                    .unwrap()
                    .into_inner()
                    .url;
                proxy(tcp, &head, &url).await
            }
            _ => reply(&mut tcp, "404 Not Found", "text/plain", "not found").await,
        }
    }

    /// Serves until dropped (the task is aborted); returns the port.
    pub async fn start(target: Target) -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = std::sync::Arc::new(target);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(handle(tcp, target.clone()));
            }
        });
        (port, task)
    }
}

fn kubectl(dir: &std::path::Path, port: u16, websockets: bool) -> tokio::process::Command {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets.to_string())
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .kill_on_drop(true);
    cmd
}

async fn kubectl_exec(
    dir: &std::path::Path,
    port: u16,
    websockets: bool,
    stdin: &[u8],
    args: &[&str],
) -> std::process::Output {
    let mut cmd = kubectl(dir, port, websockets);
    cmd.arg("exec")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

async fn kubectl_port_forward_get(dir: &std::path::Path, port: u16, websockets: bool) -> String {
    let mut child = kubectl(dir, port, websockets)
        .args(["port-forward", "pod/p", ":8080"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let local = loop {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(LIMIT, out.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "kubectl port-forward exited: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("Forwarding from 127.0.0.1:"))
        {
            let port = line
                .trim_start_matches("Forwarding from 127.0.0.1:")
                .split(' ')
                .next()
                .unwrap()
                .to_string();
            break port;
        }
    };
    let mut tcp = TcpStream::connect(format!("127.0.0.1:{local}"))
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut body = Vec::new();
    tokio::time::timeout(LIMIT, tcp.read_to_end(&mut body))
        .await
        .unwrap()
        .unwrap();
    let _ = child.kill().await;
    String::from_utf8_lossy(&body).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn real_kubectl_exec_and_port_forward_through_a_kubelet_style_proxy() {
    require_root!();
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("skipping: kubectl is not installed");
        return;
    }
    let env = common::Runtime::start().await;
    let (pod, id) = start_pod(
        &env,
        "kubectl",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-kubectl > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    )
    .await;
    let (port, server) = fake_apiserver::start(fake_apiserver::Target {
        socket: env.socket.clone(),
        container: id.clone(),
        sandbox: pod.clone(),
    })
    .await;
    let _stop = scopeguard::guard(server, |s| s.abort());
    let dir = tempfile::tempdir().unwrap();

    for websockets in [true, false] {
        let out = kubectl_exec(
            dir.path(),
            port,
            websockets,
            b"",
            &["p", "--", "sh", "-c", "echo hi; exit 3"],
        )
        .await;
        assert_eq!(out.stdout, b"hi\n", "websockets={websockets} {out:?}");
        assert_eq!(
            out.status.code(),
            Some(3),
            "websockets={websockets} {out:?}"
        );

        let out = kubectl_exec(
            dir.path(),
            port,
            websockets,
            b"via stdin\n",
            &["-i", "p", "--", "cat"],
        )
        .await;
        assert_eq!(
            out.stdout, b"via stdin\n",
            "websockets={websockets} {out:?}"
        );
        assert!(out.status.success(), "websockets={websockets} {out:?}");

        let mut body = String::new();
        for _ in 0..20 {
            body = kubectl_port_forward_get(dir.path(), port, websockets).await;
            if body.contains("hello-kubectl") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            body.ends_with("hello-kubectl\n"),
            "websockets={websockets} {body:?}"
        );
    }
    env.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_feeds_stdin_and_follows_output_until_exit() {
    require_root!();
    let env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod("attach").await;
    let mut config = env.container_config(
        "main",
        &image,
        &[
            "sh",
            "-c",
            "while read l; do echo got-$l; echo err-$l >&2; done; echo bye",
        ],
    );
    config.stdin = true;
    config.stdin_once = true;
    let id = env.create_and_start(&pod, &sandbox_config, config).await;

    let url = env
        .runtime()
        .await
        .attach(proto::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.contains("/attach/"), "{url}");
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    ws.send(Message::binary(b"\x00hello\n".to_vec()))
        .await
        .unwrap();
    // Closing stdin of a StdinOnce container ends its input: the loop exits.
    ws.send(Message::binary(vec![255u8, 0])).await.unwrap();
    let c = collect(&mut ws).await;
    assert_eq!(c.stdout, b"got-hello\nbye\n", "{c:?}");
    assert_eq!(c.stderr, b"err-hello\n", "{c:?}");
    assert_eq!(status(&c)["status"], "Success");
    assert_eq!(env.wait_exited(&id).await.exit_code, 0);

    env.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_a_tty_container_uses_its_console_and_follows_resizes() {
    require_root!();
    let env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod("attach-tty").await;
    let mut config = env.container_config("main", &image, &["sh"]);
    config.stdin = true;
    config.tty = true;
    let id = env.create_and_start(&pod, &sandbox_config, config).await;

    let url = env
        .runtime()
        .await
        .attach(proto::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    let mut resize = vec![4u8];
    resize.extend_from_slice(br#"{"Width":111,"Height":33}"#);
    ws.send(Message::binary(resize)).await.unwrap();
    ws.send(Message::binary(
        b"\x00echo term=$TERM; stty size; exit 5\n".to_vec(),
    ))
    .await
    .unwrap();
    let c = collect(&mut ws).await;
    let out = String::from_utf8_lossy(&c.stdout);
    assert!(out.contains("33 111"), "{out:?}");
    assert!(out.contains("term=xterm"), "{out:?}");
    // A terminal has no separate stderr.
    assert!(c.stderr.is_empty(), "{c:?}");
    assert_eq!(status(&c)["status"], "Success");
    assert_eq!(env.wait_exited(&id).await.exit_code, 5);
    // The console's output is the container's log, as stdout.
    let log = env.logs().join("attach-tty/main/0.log");
    env.wait_for_file_text(&log, "stdout F 33 111").await;

    env.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tty_container_keeps_its_console_across_a_runtime_restart() {
    require_root!();
    let mut env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let (pod, sandbox_config) = env.run_pod("tty-restart").await;
    let mut config = env.container_config("main", &image, &["sh"]);
    config.stdin = true;
    config.tty = true;
    let id = env.create_and_start(&pod, &sandbox_config, config).await;
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.root().join(format!("containers/{id}.json"))).unwrap(),
    )
    .unwrap();
    let holder = record["console_holder"].as_i64().unwrap();
    assert!(holder > 0, "{record}");

    // Without a holder the terminal would hang up (SIGHUP) with the runtime.
    env.kill_runtime();
    env.spawn().await;
    let s = env.status(&id).await;
    assert_eq!(s.state, proto::ContainerState::ContainerRunning as i32);

    let url = env
        .runtime()
        .await
        .attach(proto::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    ws.send(Message::binary(
        b"\x00echo after-$((40+2)); exit 4\n".to_vec(),
    ))
    .await
    .unwrap();
    let c = collect(&mut ws).await;
    assert!(
        String::from_utf8_lossy(&c.stdout).contains("after-42"),
        "{c:?}"
    );
    let log = env.logs().join("tty-restart/main/0.log");
    env.wait_for_file_text(&log, "stdout F after-42").await;

    env.remove_pod(&pod).await;
    let holder_proc = std::path::PathBuf::from(format!("/proc/{holder}/fd/0"));
    for _ in 0..100 {
        if !holder_proc.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !holder_proc.exists(),
        "console holder {holder} outlived its container"
    );
}
