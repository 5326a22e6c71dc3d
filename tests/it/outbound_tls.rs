//! Outgoing HTTPS (issue 10) against a local TLS endpoint: a test CA and a
//! `localhost` certificate made with rcgen, a receiver on 127.0.0.1 served
//! over tokio-rustls, and the rollcall binary in its own process, so that
//! `SSL_CERT_FILE` applies to that process only. Nothing about TLS is
//! mocked: the server's outbound client verifies the receiver's chain
//! against the roots it loaded, exactly as it would a main app's.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use hmac::{Hmac, Mac};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rollcall::domain::{Timestamp, now_millis};
use rollcall::livekit::sign_webhook;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::helpers::{APP_SECRET, GUARD, ROOM, event_id, joined};
use crate::process::ServerProcess;

/// A first report is due within one sweep of the finalization instant;
/// a refused attempt is retried after 500 ms.
const REPORT_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// A test CA and the receiver's certificate.

/// A CA of our own, its certificate written to `ca.pem` for `SSL_CERT_FILE`.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
        Self { issuer, dir }
    }

    fn pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn pem_path_str(&self) -> String {
        self.pem_path().to_str().unwrap().to_string()
    }

    /// A TLS acceptor presenting [`Self::leaf`].
    fn acceptor(&self) -> TlsAcceptor {
        let (chain, key) = self.leaf();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }

    /// A server certificate for `localhost` and 127.0.0.1, signed by this CA.
    fn leaf(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }
}

// ---------------------------------------------------------------------------
// The receiver: an axum app over TLS.

#[derive(Debug)]
struct Received {
    path: String,
    signature: Option<String>,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Connections whose TLS handshake completed are handed to axum; the rest
/// are counted (the client refused our certificate, or gave up).
struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
    addr: std::net::SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

struct TlsReceiver {
    port: u16,
    received: mpsc::Receiver<Received>,
    failed_handshakes: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn record(
    State(sink): State<mpsc::Sender<Received>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let received = Received {
        path: uri.path().to_string(),
        signature: headers
            .get("X-Rollcall-Signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    };
    sink.try_send(received).expect("the test keeps up");
    (StatusCode::OK, r#"{"status":"applied"}"#)
}

impl TlsReceiver {
    /// An HTTPS endpoint on 127.0.0.1 presenting a certificate from `ca`;
    /// it answers every POST 200 and records it.
    async fn start(ca: &TestCa) -> Self {
        let acceptor = ca.acceptor();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (handed, accepted) = mpsc::channel(16);
        let failures = Arc::clone(&failed_handshakes);
        // Handshakes run in their own tasks so that one stuck client
        // cannot hold up the next.
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let handed = handed.clone();
                let failures = Arc::clone(&failures);
                tokio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(tls) => {
                            let _ = handed.send((tls, peer)).await;
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        let (sink, received) = mpsc::channel(64);
        let router = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(sink);
        let server = tokio::spawn(async move {
            axum::serve(TlsListener { accepted, addr }, router)
                .await
                .expect("receiver serves");
        });
        Self {
            port: addr.port(),
            received,
            failed_handshakes,
            tasks: vec![accept_loop, server],
        }
    }

    /// The URL of `path` by name, as a main app's would be: the certificate
    /// is checked against the host name.
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    async fn next(&mut self, what: &str) -> Received {
        tokio::time::timeout(REPORT_WAIT, self.received.recv())
            .await
            .unwrap_or_else(|_| panic!("no request within {REPORT_WAIT:?}: {what}"))
            .expect("the receiver runs")
    }

    fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// A rollcall process reporting to the receiver.

/// A server process reporting to `report_url` and trusting `ca_file`,
/// sweeping every 50 ms and finalizing 100 ms after a window ends.
async fn reporting_server(report_url: &str, ca_file: &str) -> ServerProcess {
    ServerProcess::spawn(&[
        ("SSL_CERT_FILE", ca_file),
        ("ROLLCALL_REPORT_WEBHOOK_URL", report_url),
        ("ROLLCALL_SWEEP_INTERVAL", "50ms"),
        ("ROLLCALL_FINALIZE_DELAY", "100ms"),
    ])
    .await
}

/// One person joins a meeting whose one-minute window ended a minute ago:
/// the next sweep finalizes it and the report is due at once.
async fn finish_a_meeting(server: &ServerProcess) {
    let http = reqwest::Client::new();
    let start = now_millis() - 2 * 60_000;
    let body = joined(ROOM, "1_Ameer_Maher", "PA_a", start + 1_000, &event_id());
    let token = sign_webhook(
        "devkey",
        "secret",
        body.as_bytes(),
        now_millis() / 1000,
        300,
    );
    let res = http
        .post(server.url("/webhooks/livekit"))
        .header("Content-Type", "application/webhook+json")
        .header("Authorization", token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the join is applied");
    let res = http
        .put(server.url(&format!("/api/sessions/{ROOM}/schedule")))
        .bearer_auth(APP_SECRET)
        .json(&json!({"starts_at": Timestamp(start).to_rfc3339(), "duration_minutes": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the schedule is set");
}

/// Counter `name` of the process's `/metrics`.
async fn metric(server: &ServerProcess, name: &str) -> u64 {
    server.metric(name).await
}

async fn metric_reaches(server: &ServerProcess, name: &str, at_least: u64) {
    let started = Instant::now();
    loop {
        let value = metric(server, name).await;
        if value >= at_least {
            return;
        }
        assert!(started.elapsed() < GUARD, "{name} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_final_report_is_delivered_over_https_to_a_receiver_a_trusted_ca_signed() {
    let ca = TestCa::new("rollcall test CA");
    let mut receiver = TlsReceiver::start(&ca).await;
    let server = reporting_server(&receiver.url("/reports"), &ca.pem_path_str()).await;
    finish_a_meeting(&server).await;

    let report = receiver.next("the final report").await;
    assert_eq!(report.path, "/reports");
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).unwrap();
    mac.update(&report.body);
    let signature = hex::encode(mac.finalize().into_bytes());
    assert_eq!(report.signature.as_deref(), Some(signature.as_str()));
    let body = report.json();
    assert_eq!(body["event"], "attendance.finalized");
    assert_eq!(body["room"], ROOM);
    assert_eq!(body["is_final"], true);
    assert_eq!(body["revision"], 1);
    assert_eq!(body["participants"][0]["identity"], "1_Ameer_Maher");
    metric_reaches(&server, "rollcall_reports_delivered_total", 1).await;
    assert_eq!(metric(&server, "rollcall_report_failures_total").await, 0);
    assert_eq!(receiver.failed_handshakes(), 0);
}

#[tokio::test]
async fn a_report_to_a_receiver_no_trusted_ca_signed_is_not_delivered_but_retried() {
    let receivers_ca = TestCa::new("the receiver's CA");
    let trusted_ca = TestCa::new("some other CA");
    let mut receiver = TlsReceiver::start(&receivers_ca).await;
    let mut server = reporting_server(&receiver.url("/reports"), &trusted_ca.pem_path_str()).await;
    finish_a_meeting(&server).await;

    // The first attempt and at least one retry (500 ms later) fail, each
    // at the handshake: the certificate is refused before any byte of the
    // report is sent.
    metric_reaches(&server, "rollcall_finalizations_total", 1).await;
    metric_reaches(&server, "rollcall_report_failures_total", 2).await;
    assert!(
        receiver.failed_handshakes() >= 2,
        "{} refused handshakes",
        receiver.failed_handshakes()
    );
    assert!(
        receiver.received.try_recv().is_err(),
        "the receiver got a request"
    );
    assert_eq!(metric(&server, "rollcall_reports_delivered_total").await, 0);
    // Undelivered reports cost nothing else: the server is healthy.
    assert!(server.is_running());
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_broken_ssl_cert_file_stops_the_server_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    for (file, says) in [
        (&missing, "cannot read trusted certificates"),
        (&empty, "no usable PEM certificate"),
    ] {
        let file = file.to_str().unwrap();
        let output = crate::process::run_to_exit(&[
            ("SSL_CERT_FILE", file),
            ("ROLLCALL_REPORT_WEBHOOK_URL", "https://localhost:1/reports"),
        ])
        .await;
        assert!(
            !output.status.success(),
            "started with SSL_CERT_FILE={file}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(says) && stderr.contains(file),
            "SSL_CERT_FILE={file}: {stderr}"
        );
    }
}

#[tokio::test]
async fn the_webhook_simulator_posts_over_https() {
    let ca = TestCa::new("rollcall test CA");
    let mut receiver = TlsReceiver::start(&ca).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["webhook", "--url", &receiver.url("")])
        .args(["join", "--room", ROOM, "--identity", "1_Ameer_Maher"])
        .env("SSL_CERT_FILE", ca.pem_path())
        .env_remove("SSL_CERT_DIR")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(GUARD, output)
        .await
        .expect("the simulator exits")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let webhook = receiver.next("the simulated webhook").await;
    assert_eq!(webhook.path, "/webhooks/livekit");
    assert_eq!(webhook.json()["event"], "participant_joined");
}

// ---------------------------------------------------------------------------
// LiveKit's RoomService over HTTPS (reconciliation, rules 23–27).

/// Terminates TLS with a certificate from `ca` and relays the plain bytes
/// to `upstream` (the LiveKit double), as LiveKit Cloud's own front would.
/// Returns its port and the relay task.
async fn tls_front(
    ca: &TestCa,
    upstream: std::net::SocketAddr,
) -> (u16, tokio::task::JoinHandle<()>) {
    let acceptor = ca.acceptor();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn reconciliation_asks_a_livekit_behind_https_that_a_trusted_ca_signed() {
    use crate::livekit_double::{FakeParticipant, FakeRoom, LivekitDouble};
    let ca = TestCa::new("rollcall test CA");
    let double = LivekitDouble::start().await;
    let joined_at = now_millis() - 60_000;
    double.put_room(FakeRoom::new(ROOM).with(FakeParticipant::new("1_Ameer_Maher", joined_at)));
    let (port, front) = tls_front(&ca, double.addr()).await;
    let other_ca = TestCa::new("some other CA");
    let http = reqwest::Client::new();
    // LiveKit URLs are usually written `wss://`: the API is then `https://`.
    for (ca_file, expect) in [(other_ca.pem_path_str(), 502), (ca.pem_path_str(), 200)] {
        let server = ServerProcess::spawn(&[
            ("SSL_CERT_FILE", ca_file.as_str()),
            ("LIVEKIT_URL", &format!("wss://localhost:{port}")),
            ("ROLLCALL_RECONCILE_INTERVAL", "0"),
        ])
        .await;
        let res = http
            .post(server.url(&format!("/api/sessions/{ROOM}/reconcile")))
            .bearer_auth(APP_SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), expect, "trusting {ca_file}");
        let body: Value = res.json().await.unwrap();
        if expect == 200 {
            assert_eq!(body["opened"][0]["identity"], "1_Ameer_Maher", "{body}");
        } else {
            assert_eq!(body["error"], "livekit_unavailable", "{body}");
            assert_eq!(
                metric(&server, "rollcall_livekit_errors_total{kind=\"connect\"}").await,
                1,
                "a refused certificate is a connection error"
            );
        }
    }
    front.abort();
}
