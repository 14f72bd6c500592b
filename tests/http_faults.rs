//! The client against misbehaving servers. These are small hand-scripted HTTP servers on
//! loopback (std TcpListener in a thread, plain HTTP mode, and one raw TCP listener that
//! never speaks TLS): no installable peer sends 429s, closes mid-body or stalls on demand.

#[path = "support/wait.rs"]
mod wait;

use csipd::http::{Backoff, BackoffPolicy, Client, ClientConfig, HttpError, Method};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use wait::{PATIENCE, wait_until};

/// Reads one request head (and its Content-Length body); returns the request line.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => data.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&data).to_string();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    head.lines().next().map(str::to_string)
}

/// A scripted server: `answer(connection_index, request_index_on_connection, request_line,
/// stream)` writes the response and returns whether to keep the connection open.
struct Scripted {
    port: u16,
    connections: Arc<AtomicUsize>,
    /// Connections the server has closed (its socket dropped).
    closed: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn start<F>(answer: F) -> Scripted
    where
        F: Fn(usize, usize, &str, &mut TcpStream) -> bool + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let (c, r, done) = (connections.clone(), requests.clone(), closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let index = c.fetch_add(1, Ordering::SeqCst);
                let (answer, r, done) = (answer.clone(), r.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while let Some(line) = read_request(&mut stream) {
                        r.lock().unwrap().push(line.clone());
                        if !answer(index, n, &line, &mut stream) {
                            break;
                        }
                        n += 1;
                    }
                    drop(stream);
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Scripted {
            port,
            connections,
            closed,
            requests,
        }
    }

    fn client(&self, read_timeout: Duration) -> Client {
        let mut config = ClientConfig::new(&format!("http://127.0.0.1:{}", self.port));
        config.read_timeout = read_timeout;
        config.connect_timeout = Duration::from_secs(5);
        Client::new(config).unwrap()
    }
}

fn send(stream: &mut TcpStream, text: &str) {
    let _ = stream.write_all(text.as_bytes());
}

#[test]
fn too_many_requests_carries_retry_after_and_retry_waits_for_it() {
    let server = Scripted::start(|_, _, _, s| {
        // Odd requests are refused with Retry-After: 1, even ones served.
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        if SEEN.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            send(
                s,
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nslow",
            );
        } else {
            send(s, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n<a/>");
        }
        true
    });
    let mut client = server.client(Duration::from_secs(5));
    let err = smol::block_on(client.get("/edev/1/fsa")).expect_err("429");
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        "GET /edev/1/fsa: HTTP 429 Too Many Requests (retry after 1 s): slow"
    );
    // Served now (request 2), then 429 again (request 3), then retried after >= 1 s.
    assert_eq!(smol::block_on(client.get("/x")).unwrap().status, 200);
    let mut backoff = Backoff::new(
        BackoffPolicy {
            initial: Duration::from_millis(10),
            ..BackoffPolicy::default()
        },
        7,
    );
    let started = Instant::now();
    let response = smol::block_on(client.request_with_retry(
        Method::Get,
        "/edev/1/fsa",
        None,
        &mut backoff,
        3,
    ))
    .expect("second try succeeds");
    assert_eq!(response.body, b"<a/>");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "did not wait for Retry-After"
    );
    assert_eq!(server.requests.lock().unwrap().len(), 4);
    // All of it over one kept-alive connection.
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn service_unavailable_with_an_http_date() {
    let server = Scripted::start(|_, _, _, s| {
        let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        send(
            s,
            &format!(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {at}\r\nContent-Length: 0\r\n\r\n"
            ),
        );
        true
    });
    let mut client = server.client(Duration::from_secs(5));
    let err = smol::block_on(client.get("/dcap")).expect_err("503");
    let wait = err.retry_after().expect("retry after");
    // The date is two minutes after the server wrote it (whole seconds); the client
    // read it later, by how much depends on the machine's load.
    assert!(
        wait > Duration::from_secs(60) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
}

#[test]
fn server_closing_mid_response_is_an_error_naming_the_path() {
    let server = Scripted::start(|_, _, _, s| {
        send(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/sep+xml\r\nContent-Length: 100\r\n\r\n<EndDeviceList ",
        );
        false // close now
    });
    let mut client = server.client(Duration::from_secs(5));
    let err = smol::block_on(client.get("/edev")).expect_err("truncated");
    let message = err.to_string();
    assert!(matches!(err, HttpError::Closed { .. }), "{message}");
    assert!(
        message.starts_with(
            "GET /edev: the server closed the connection before the Content-Length body"
        ),
        "{message}"
    );
    assert!(err.is_transient());
    // Chunked body cut off too.
    let server = Scripted::start(|_, _, _, s| {
        send(
            s,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n<EndDevice",
        );
        false
    });
    let mut client = server.client(Duration::from_secs(5));
    let err = smol::block_on(client.get("/edev/3")).expect_err("truncated chunked");
    assert!(err.to_string().contains("inside a chunked body"), "{err}");
}

#[test]
fn silent_server_hits_the_read_timeout() {
    // The server holds the connection, silent, until the test has its answer (a server
    // that closed after a guessed time would race the client on a loaded machine).
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(held);
    let server = Scripted::start(move |_, _, _, _| {
        let _ = held.lock().unwrap().recv();
        false
    });
    let mut client = server.client(Duration::from_millis(300));
    let err = smol::block_on(client.get("/tm")).expect_err("timeout");
    drop(release);
    assert!(matches!(err, HttpError::ReadTimeout { .. }), "{err}");
    assert_eq!(err.to_string(), "GET /tm: no response within 0.3 s");
}

/// A server that sends the head of a `Content-Length: N` response for `GET /tm/N`, then
/// one body byte every 100 ms; counts the body bytes it got out before the client hung
/// up, or `usize::MAX` when it sent them all.
fn trickling_server() -> (Scripted, Arc<Mutex<Vec<usize>>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    let server = Scripted::start(move |_, _, line, stream| {
        let n: usize = line
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.strip_prefix("/tm/"))
            .and_then(|n| n.parse().ok())
            .expect("GET /tm/N");
        send(
            stream,
            &format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/sep+xml\r\nContent-Length: {n}\r\n\r\n"
            ),
        );
        for i in 0..n {
            // sleep-ok: the peer's behaviour under test (a body trickled a byte at a time); the
            // test waits for the client's timeout, not for this pace.
            std::thread::sleep(Duration::from_millis(100));
            if stream.write_all(b"x").is_err() {
                record.lock().unwrap().push(i);
                return false;
            }
        }
        record.lock().unwrap().push(usize::MAX);
        true
    });
    (server, sent)
}

#[test]
fn trickling_server_hits_the_response_deadline() {
    // One body byte every 100 ms: never silent for the 2 s read timeout (unless the
    // machine stalls the server thread for 2 s), but the 100-byte body would take 10 s;
    // the whole exchange may take 2 s.
    let (server, sent) = trickling_server();
    let mut config = ClientConfig::new(&format!("http://127.0.0.1:{}", server.port));
    config.read_timeout = Duration::from_secs(2);
    config.response_deadline = Duration::from_secs(2);
    let mut deadline_client = Client::new(config).unwrap();
    let err = smol::block_on(deadline_client.get("/tm/100")).expect_err("deadline");
    assert!(matches!(err, HttpError::ResponseDeadline { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "GET /tm/100: response not complete within 2.0 s (the server sends too slowly); \
         connection dropped"
    );
    assert!(err.is_transient());
    // Dropped: the server's writes fail before the body is out.
    drop(deadline_client);
    let cut_at = wait_until(PATIENCE, "the server to see the connection dropped", || {
        sent.lock().unwrap().first().copied()
    });
    assert!(
        cut_at < 100,
        "the whole body went out: the client did not hang up"
    );

    // With the default deadline (120 s) the read timeout alone never fires: 30 bytes at
    // 100 ms take 3 s, longer than the 2 s read timeout.
    let mut config = ClientConfig::new(&format!("http://127.0.0.1:{}", server.port));
    config.read_timeout = Duration::from_secs(2);
    let mut client = Client::new(config).unwrap();
    let response = smol::block_on(client.get("/tm/30")).expect("slow but complete");
    assert_eq!(response.body.len(), 30);
}

#[test]
fn stalled_tls_handshake_hits_the_connect_timeout() {
    // Accepts TCP but never says a word of TLS.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The connection is held until the test has its answer.
    let (release, held) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _held: Vec<TcpStream> = listener.incoming().take(1).filter_map(Result::ok).collect();
        let _ = held.recv();
    });
    let mut config = ClientConfig::new(&format!("https://127.0.0.1:{port}"));
    config.connect_timeout = Duration::from_millis(300);
    let mut client = Client::new(config).unwrap();
    let err = smol::block_on(client.get("/dcap")).expect_err("stall");
    drop(release);
    assert!(matches!(err, HttpError::ConnectTimeout { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn idle_connection_closed_by_server_is_replaced_transparently() {
    // Keeps the connection for one request, then closes it while idle.
    let server = Scripted::start(|_, _, line, s| {
        let body = format!("<p>{line}</p>");
        send(
            s,
            &format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        false
    });
    let mut client = server.client(Duration::from_secs(5));
    smol::block_on(async {
        for i in 0..3 {
            let r = client.get(&format!("/r{i}")).await.expect("reconnects");
            assert_eq!(r.body_text(), format!("<p>GET /r{i} HTTP/1.1</p>"));
            // The next request goes out once the server has closed this connection
            // (waited for: a guessed pause would race the server on a loaded machine).
            wait_until(PATIENCE, "the server to close the idle connection", || {
                server.closed.load(Ordering::SeqCst) > i
            });
        }
        // POST too: the close was seen before sending, so nothing is sent twice.
        let r = client.post("/mup", b"<x/>").await.expect("post");
        assert_eq!(r.status, 200);
    });
    assert_eq!(server.connections.load(Ordering::SeqCst), 4);
    assert_eq!(server.requests.lock().unwrap().len(), 4);
    assert_eq!(client.stats().connections, 4);
}

#[test]
fn http10_close_chunked_and_created_with_location() {
    let server = Scripted::start(|conn, _, line, s| {
        if line.starts_with("POST") {
            send(
                s,
                "HTTP/1.1 201 Created\r\nLocation: /edev/7\r\nContent-Length: 0\r\n\r\n",
            );
            true
        } else if line.starts_with("PUT") {
            send(s, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            false
        } else if conn == 0 {
            send(
                s,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<Time\r\n3\r\n/>\n\r\n0\r\n\r\n",
            );
            true
        } else {
            send(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: application/sep+xml\r\n\r\n<DeviceCapability/>",
            );
            false
        }
    });
    let mut client = server.client(Duration::from_secs(5));
    smol::block_on(async {
        assert_eq!(client.get("/tm").await.unwrap().body, b"<Time/>\n");
        let created = client.post("/edev", b"<EndDevice/>").await.unwrap();
        assert_eq!((created.status, created.location()), (201, Some("/edev/7")));
        let put = client.put("/edev/7/rg", b"<Registration/>").await.unwrap();
        assert_eq!(put.status, 204);
        // New connection after Connection: close; this one is HTTP/1.0 read-to-close.
        let dcap = client.get("/dcap").await.unwrap();
        assert_eq!(dcap.body, b"<DeviceCapability/>");
        assert_eq!(dcap.header("content-type"), Some("application/sep+xml"));
        // And another new one after the HTTP/1.0 close.
        assert_eq!(client.get("/dcap").await.unwrap().status, 200);
    });
    assert_eq!(server.connections.load(Ordering::SeqCst), 3);
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests[1], "POST /edev HTTP/1.1");
}

#[test]
fn not_found_is_a_typed_error_with_the_body() {
    let server = Scripted::start(|_, _, _, s| {
        send(
            s,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno such x",
        );
        true
    });
    let mut client = server.client(Duration::from_secs(5));
    let err = smol::block_on(client.delete("/edev/9")).expect_err("404");
    match &err {
        HttpError::Status(s) => {
            assert_eq!(
                (s.status, s.path.as_str(), s.method),
                (404, "/edev/9", Method::Delete)
            );
            assert_eq!(s.body, b"no such x");
        }
        other => panic!("{other}"),
    }
    assert!(!err.is_transient());
    // The connection stays usable after an error status.
    assert!(smol::block_on(client.get("/edev/9")).is_err());
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn reused_connection_dying_unanswered_resends_get_but_not_post() {
    // Connection 0: answers its first request, then reads the second and hangs up
    // without a byte (a server restarting at the wrong moment). Later connections work.
    let server = Scripted::start(|conn, n, _, s| {
        if conn == 0 && n == 1 {
            return false;
        }
        send(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        true
    });
    let mut client = server.client(Duration::from_secs(5));
    smol::block_on(async {
        assert_eq!(client.get("/a").await.unwrap().body, b"ok");
        // The GET is sent again on a new connection.
        assert_eq!(client.get("/b").await.unwrap().body, b"ok");
    });
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        vec!["GET /a HTTP/1.1", "GET /b HTTP/1.1", "GET /b HTTP/1.1"]
    );

    // A POST is not: it may have been acted on, so the caller decides.
    let server = Scripted::start(|conn, n, _, s| {
        if conn == 0 && n == 1 {
            return false;
        }
        send(
            s,
            "HTTP/1.1 201 Created\r\nLocation: /rsp/1\r\nContent-Length: 0\r\n\r\n",
        );
        true
    });
    let mut client = server.client(Duration::from_secs(5));
    let err = smol::block_on(async {
        client.post("/rsps", b"<Response/>").await.unwrap();
        client.post("/rsps", b"<Response/>").await.unwrap_err()
    });
    assert!(matches!(err, HttpError::Closed { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "POST /rsps: the server closed the connection without answering"
    );
    assert_eq!(server.requests.lock().unwrap().len(), 2);
}
