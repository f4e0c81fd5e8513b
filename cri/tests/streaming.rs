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
        .create_and_start(&pod, &sandbox_config, env.container_config("main", &image, cmd))
        .await;
    (pod, id)
}

async fn remove_pod(env: &common::Runtime, pod: &str) {
    let _ = env
        .runtime()
        .await
        .remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await;
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
        .err()
        .expect("a used token must be refused");
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

    // A missing command is an internal error in the status, not a hang.
    let url = exec_url(&env, exec_req(&id, &["/no/such/binary"], false, false)).await;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    let c = collect(&mut ws).await;
    assert_eq!(status(&c)["status"], "Failure", "{c:?}");

    remove_pod(&env, &pod).await;
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

    remove_pod(&env, &pod).await;
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
    let mut error = conn.open_stream(h(&[("streamType", "error")])).await.unwrap();
    let stdin = conn.open_stream(h(&[("streamType", "stdin")])).await.unwrap();
    let mut stdout = conn.open_stream(h(&[("streamType", "stdout")])).await.unwrap();
    let mut stderr = conn.open_stream(h(&[("streamType", "stderr")])).await.unwrap();
    error.writer.finish().await.unwrap();
    stdin.writer.write(b"through spdy\n").await.unwrap();
    stdin.writer.finish().await.unwrap();
    assert_eq!(read_all(&mut stdout.reader).await, b"through spdy\n");
    assert_eq!(read_all(&mut stderr.reader).await, b"err\n");
    let status: serde_json::Value = serde_json::from_slice(&read_all(&mut error.reader).await).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "2");
    conn.close().await;

    remove_pod(&env, &pod).await;
}

async fn forward_one(conn: &Connection, request_id: &str, port: &str) -> (Vec<u8>, Vec<u8>) {
    let mut error = conn
        .open_stream(h(&[("streamType", "error"), ("port", port), ("requestID", request_id)]))
        .await
        .unwrap();
    error.writer.finish().await.unwrap();
    let mut data = conn
        .open_stream(h(&[("streamType", "data"), ("port", port), ("requestID", request_id)]))
        .await
        .unwrap();
    data.writer
        .write(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
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
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body:?} {:?}", String::from_utf8_lossy(&last.1));
    assert!(body.ends_with("hello-pf\n"), "{body:?}");
    assert!(last.1.is_empty());
    // A closed port reports on the error stream.
    let (body, err) = forward_one(&conn, "closed", "8081").await;
    assert!(body.is_empty());
    let err = String::from_utf8_lossy(&err);
    assert!(err.starts_with("error forwarding port 8081 to pod"), "{err}");
    conn.close().await;

    // The fallback: plain SPDY/3.1 POST.
    let url = pf_url().await;
    let (conn, _) = spdy_connect(&url, "portforward.k8s.io").await;
    let (body, err) = forward_one(&conn, "0", "8080").await;
    assert!(String::from_utf8_lossy(&body).ends_with("hello-pf\n"), "{err:?}");
    conn.close().await;

    remove_pod(&env, &pod).await;
}
