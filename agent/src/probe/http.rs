//! HTTP probes and hooks (kubelet's `pkg/probe/http`): one GET per run with
//! `kube-probe/<version>` as User-Agent, no keep-alive, HTTPS without
//! certificate checks; 2xx is success, 3xx a warning (redirects to the same
//! host are followed up to 10 times), anything else a failure.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Outcome;
use super::target::{HttpTarget, Scheme, join_host_port};

/// kubelet reads at most 10 KiB of a probe's response body.
const MAX_BODY: usize = 10 * 1024;
/// Go's client stops after 10 redirects.
const MAX_REDIRECTS: usize = 10;

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(
                    crate::insecure_tls::AcceptAnyServerCert(provider),
                ))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// One response: status, Location, and the start of the body.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

fn request(t: &HttpTarget, user_agent: &str) -> Result<Request<Empty<Bytes>>, String> {
    let mut b = Request::get(t.path.as_str())
        .header(header::HOST, join_host_port(&t.host, t.port))
        .header(header::CONNECTION, "close");
    let has = |name: &str| t.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("user-agent") {
        b = b.header(header::USER_AGENT, user_agent);
    }
    if !has("accept") {
        b = b.header(header::ACCEPT, "*/*");
    }
    let mut req = b.body(Empty::new()).map_err(|e| e.to_string())?;
    for (name, value) in &t.headers {
        let name = header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = header::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        if name == header::HOST {
            req.headers_mut().insert(name, value);
        } else {
            req.headers_mut().append(name, value);
        }
    }
    Ok(req)
}

async fn exchange<S>(io: S, req: Request<Empty<Bytes>>) -> Result<Answer, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let work = async move {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while buf.len() < MAX_BODY {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => break,
            }
        }
        buf.truncate(MAX_BODY);
        Ok(Answer {
            status,
            location,
            body: String::from_utf8_lossy(&buf).into_owned(),
        })
    };
    tokio::pin!(conn, work);
    tokio::select! {
        r = &mut work => r,
        c = &mut conn => match c {
            Ok(()) => work.await,
            Err(e) => Err(e.to_string()),
        },
    }
}

async fn get_once(t: &HttpTarget, user_agent: &str) -> Result<Answer, String> {
    let req = request(t, user_agent)?;
    let addr = join_host_port(&t.host, t.port);
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| super::tcp::dial_error(&addr, &e))?;
    match t.scheme {
        Scheme::Http => exchange(tcp, req).await,
        Scheme::Https => {
            let name = ServerName::try_from(t.host.clone()).map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(tls_config()?)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            exchange(tls, req).await
        }
    }
}

/// The target a `Location` points to, relative to `base`.
fn redirect_target(base: &HttpTarget, location: &str) -> Result<HttpTarget, String> {
    let mut next = base.clone();
    if location.starts_with("http://") || location.starts_with("https://") {
        let uri: http::Uri = location
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        next.scheme = if uri.scheme_str() == Some("https") {
            Scheme::Https
        } else {
            Scheme::Http
        };
        next.host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        next.port = uri.port_u16().unwrap_or(match next.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        next.path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    } else if location.starts_with('/') {
        location.clone_into(&mut next.path);
    } else {
        let path = base.path.split('?').next().unwrap_or("/");
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        next.path = format!("{dir}{location}");
    }
    Ok(next)
}

async fn follow(target: &HttpTarget, user_agent: &str) -> Result<Outcome, String> {
    let mut current = target.clone();
    let mut requests = 0;
    loop {
        let answer = get_once(&current, user_agent).await?;
        requests += 1;
        let follows = matches!(answer.status.as_u16(), 301 | 302 | 303 | 307 | 308);
        if let (true, Some(location)) = (follows, answer.location.as_deref()) {
            let next = redirect_target(&current, location)?;
            // kubelet does not follow redirects to another host: the 3xx
            // answer itself is the (warning) result.
            if next.host == target.host {
                if requests >= MAX_REDIRECTS {
                    return Err("stopped after 10 redirects".to_owned());
                }
                current = next;
                continue;
            }
        }
        return Ok(classify(answer));
    }
}

fn classify(answer: Answer) -> Outcome {
    let code = answer.status.as_u16();
    if (200..300).contains(&code) {
        Outcome::Success(answer.body)
    } else if (300..400).contains(&code) {
        Outcome::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            answer.body
        ))
    } else {
        Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Runs an HTTP GET probe within `timeout`.
pub async fn probe(target: &HttpTarget, timeout: Duration, user_agent: &str) -> Outcome {
    let url = target.url();
    match tokio::time::timeout(timeout, follow(target, user_agent)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Outcome::Failure(format!("Get \"{url}\": {e}")),
        Err(_) => Outcome::Failure(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// Runs an HTTP lifecycle hook: only a failed request is an error, any
/// answer counts (kubelet's `runHTTPHandler`). kubelet gives hooks no
/// timeout of their own; the caller bounds them.
pub async fn hook(target: &HttpTarget, user_agent: &str) -> Result<(), String> {
    follow(target, user_agent)
        .await
        .map(|_| ())
        .map_err(|e| format!("Get \"{}\": {e}", target.url()))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use http::Response;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

    /// A loopback HTTP (or HTTPS) server answering by path; records the
    /// path, User-Agent and X-Probe header of each request.
    async fn serve(tls: bool) -> (u16, Seen, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Seen = Arc::default();
        let acceptor = tls.then(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move {
                            let h = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned)
                            };
                            s.lock().unwrap().push((
                                req.uri().path().to_owned(),
                                h("user-agent"),
                                h("x-probe"),
                            ));
                            let (code, location) = match req.uri().path() {
                                "/ok" => (200, None),
                                "/fail" => (503, None),
                                "/hop" => (302, Some("/ok".to_owned())),
                                "/loop" => (302, Some("/loop".to_owned())),
                                "/away" => (302, Some("http://example.invalid/".to_owned())),
                                _ => (404, None),
                            };
                            let mut resp = Response::builder().status(code);
                            if let Some(l) = location {
                                resp = resp.header("location", l);
                            }
                            Ok::<_, Infallible>(
                                resp.body(Full::new(Bytes::from_static(b"body"))).unwrap(),
                            )
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        (port, seen, task)
    }

    fn target(scheme: Scheme, port: u16, path: &str) -> HttpTarget {
        HttpTarget {
            scheme,
            host: "127.0.0.1".to_owned(),
            port,
            path: path.to_owned(),
            headers: vec![("X-Probe".to_owned(), "yes".to_owned())],
        }
    }

    const SECS: Duration = Duration::from_secs(5);
    const UA: &str = "kube-probe/1.32";

    #[tokio::test]
    async fn status_codes_decide_success_warning_and_failure() {
        let (port, seen, task) = serve(false).await;
        let t = |p| target(Scheme::Http, port, p);
        assert_eq!(
            probe(&t("/ok"), SECS, UA).await,
            Outcome::Success("body".to_owned())
        );
        assert_eq!(
            probe(&t("/fail"), SECS, UA).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".to_owned())
        );
        assert_eq!(
            seen.lock().unwrap()[0],
            (
                "/ok".to_owned(),
                Some(UA.to_owned()),
                Some("yes".to_owned())
            )
        );
        // Same-host redirects are followed; other hosts end in a warning.
        assert_eq!(
            probe(&t("/hop"), SECS, UA).await,
            Outcome::Success("body".to_owned())
        );
        assert_eq!(
            probe(&t("/away"), SECS, UA).await,
            Outcome::Warning("Probe terminated redirects, Response body: body".to_owned())
        );
        let url = format!("http://127.0.0.1:{port}/loop");
        assert_eq!(
            probe(&t("/loop"), SECS, UA).await,
            Outcome::Failure(format!("Get \"{url}\": stopped after 10 redirects"))
        );
        task.abort();
    }

    #[tokio::test]
    async fn https_probes_skip_certificate_verification() {
        let (port, _, task) = serve(true).await;
        assert_eq!(
            probe(&target(Scheme::Https, port, "/ok"), SECS, UA).await,
            Outcome::Success("body".to_owned())
        );
        task.abort();
    }

    #[tokio::test]
    async fn refused_connections_fail_with_the_dial_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert_eq!(
            probe(&target(Scheme::Http, port, "/"), SECS, UA).await,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }

    #[test]
    fn relative_redirects_resolve_against_the_request_path() {
        let base = target(Scheme::Http, 80, "/a/b?x=1");
        assert_eq!(redirect_target(&base, "c").unwrap().path, "/a/c");
        assert_eq!(redirect_target(&base, "/d").unwrap().path, "/d");
        let abs = redirect_target(&base, "https://[fd00::1]:8443/e").unwrap();
        assert_eq!(
            (abs.scheme, abs.host.as_str(), abs.port, abs.path.as_str()),
            (Scheme::Https, "fd00::1", 8443, "/e")
        );
    }
}
