//! `loadgen` against small HTTP servers on 127.0.0.1 that misbehave on purpose: every
//! request is accounted for exactly once, as completed or as a failure of the right kind.
//! No privileges needed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command as Process;
use std::thread;
use std::time::Duration;

use netpop_benches::loadgen::{Config, FailureKind, Summary, Url, run};

/// What the test server does with each request.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// 200 with a 4-byte Content-Length body; keeps the connection unless asked to close.
    Ok,
    /// 200 with a chunked body of 3 + 7 bytes.
    Chunked,
    /// 404 with a body.
    NotFound,
    /// Promises 10 body bytes, sends 3, closes.
    ShortBody,
    /// Reads the request and never answers.
    Silent,
    /// Closes as soon as the request has arrived, without reading it (the kernel answers
    /// with a reset because unread data is discarded).
    Reset,
    /// Reads the request and closes without a word.
    CloseWithoutAnswer,
    /// Answers this many requests on a kept connection, then closes it without warning,
    /// as a server does when its keep-alive idle timer fires.
    DropAfter(usize),
}

const OK_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Type: text/html\r\n\r\nabc\n";

/// Starts a server on an ephemeral port of 127.0.0.1; its threads live until the test
/// process ends.
fn serve(behaviour: Behaviour) -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || serve_connection(stream, behaviour));
        }
    });
    Url::parse(&format!("http://127.0.0.1:{port}/index.html")).unwrap()
}

/// Reads one request head; `None` when the client closed first. Returns whether it asked
/// for `Connection: close`.
fn read_request(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<bool> {
    let mut buffer = [0; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            return Some(head.contains("connection: close"));
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buffer[..n]),
        }
    }
}

fn serve_connection(mut stream: TcpStream, behaviour: Behaviour) {
    let mut pending = Vec::new();
    let mut answered = 0;
    if let Behaviour::Reset = behaviour {
        let mut byte = [0; 1];
        let _ = stream.peek(&mut byte);
        return;
    }
    while let Some(close) = read_request(&mut stream, &mut pending) {
        let response: &[u8] = match behaviour {
            Behaviour::Ok | Behaviour::DropAfter(_) => OK_RESPONSE,
            Behaviour::Chunked => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n7;x=y\r\ndefghij\r\n0\r\n\r\n"
            }
            Behaviour::NotFound => b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
            Behaviour::ShortBody => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            Behaviour::Silent => {
                // Hold the connection open until the client gives up.
                let _ = stream.read(&mut [0; 1]);
                return;
            }
            Behaviour::CloseWithoutAnswer => return,
            Behaviour::Reset => return,
        };
        if stream.write_all(response).is_err() {
            return;
        }
        answered += 1;
        let short = matches!(behaviour, Behaviour::ShortBody);
        let dropped = matches!(behaviour, Behaviour::DropAfter(n) if answered >= n);
        if close || short || dropped {
            // Like a server that closes after the response: FIN first, so TIME-WAIT stays
            // here, then wait for the client's close.
            let _ = stream.shutdown(Shutdown::Write);
            let _ = stream.read(&mut [0; 64]);
            return;
        }
    }
}

fn config(url: Url, concurrency: usize, requests: u64) -> Config {
    let mut config = Config::new(url);
    config.concurrency = concurrency;
    config.requests = Some(requests);
    config.duration = None;
    config.connect_timeout = Duration::from_secs(10);
    config.request_timeout = Duration::from_secs(20);
    config
}

fn failures(summary: &Summary, kind: FailureKind) -> u64 {
    summary.failures[&kind]
}

fn assert_percentiles_ordered(summary: &Summary) {
    for p in [summary.latency, summary.connect_time] {
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p99_9 && p.p99_9 <= p.max, "{p:?}");
    }
}

#[test]
fn one_request_per_connection_accounts_for_every_request_and_byte() {
    let summary = run(&config(serve(Behaviour::Ok), 8, 200), |_| {}).unwrap();
    assert_eq!(summary.completed, 200, "{summary}");
    assert_eq!(summary.failed(), 0, "{summary}");
    assert_eq!(summary.unfinished, 0);
    assert_eq!(summary.connections, 200, "one connection per request");
    assert_eq!(summary.statuses.get(&200), Some(&200));
    assert_eq!(summary.body_bytes, 4 * 200);
    assert_eq!(summary.bytes_received, OK_RESPONSE.len() as u64 * 200);
    assert_eq!(summary.latency.count, 200);
    assert_eq!(summary.connect_time.count, 200);
    assert!(summary.latency.max > Duration::ZERO);
    assert!(summary.requests_per_sec() > 0.0);
    assert_percentiles_ordered(&summary);
}

#[test]
fn keep_alive_carries_all_requests_on_the_configured_connections() {
    let mut config = config(serve(Behaviour::Ok), 4, 300);
    config.keep_alive = true;
    let summary = run(&config, |_| {}).unwrap();
    assert_eq!(summary.completed, 300, "{summary}");
    assert_eq!(summary.failed(), 0, "{summary}");
    assert_eq!(summary.connections, 4, "{summary}");
    assert_eq!(summary.retries, 0);
    assert_eq!(summary.body_bytes, 4 * 300);
}

#[test]
fn server_dropping_kept_connections_costs_retries_not_failures() {
    let mut config = config(serve(Behaviour::DropAfter(3)), 2, 60);
    config.keep_alive = true;
    let summary = run(&config, |_| {}).unwrap();
    assert_eq!(summary.completed, 60, "{summary}");
    assert_eq!(summary.failed(), 0, "{summary}");
    assert!(summary.connections >= 20, "3 requests per connection at most: {summary}");
}

#[test]
fn chunked_bodies_are_read_to_the_last_chunk() {
    for keep_alive in [false, true] {
        let mut config = config(serve(Behaviour::Chunked), 3, 30);
        config.keep_alive = keep_alive;
        let summary = run(&config, |_| {}).unwrap();
        assert_eq!((summary.completed, summary.failed()), (30, 0), "{summary}");
        assert_eq!(summary.body_bytes, 10 * 30);
    }
}

#[test]
fn failures_are_counted_by_kind_and_once_per_request() {
    let cases = [
        (Behaviour::NotFound, FailureKind::BadStatus),
        (Behaviour::ShortBody, FailureKind::ShortBody),
        (Behaviour::Reset, FailureKind::Reset),
        (Behaviour::CloseWithoutAnswer, FailureKind::Closed),
    ];
    for (behaviour, kind) in cases {
        let summary = run(&config(serve(behaviour), 4, 40), |_| {}).unwrap();
        assert_eq!(summary.completed, 0, "{behaviour:?}: {summary}");
        assert_eq!(failures(&summary, kind), 40, "{behaviour:?}: {summary}");
        assert_eq!(summary.failed(), 40, "{behaviour:?}: {summary}");
        assert_eq!(summary.latency.count, 0, "failed requests have no latency");
    }
    let not_found = run(&config(serve(Behaviour::NotFound), 1, 5), |_| {}).unwrap();
    assert_eq!(not_found.statuses.get(&404), Some(&5));
}

#[test]
fn unanswered_requests_time_out() {
    let mut config = config(serve(Behaviour::Silent), 3, 6);
    config.request_timeout = Duration::from_millis(200);
    let summary = run(&config, |_| {}).unwrap();
    assert_eq!(failures(&summary, FailureKind::Timeout), 6, "{summary}");
    assert_eq!(summary.connections, 6);
    // The timeout is a lower bound on how long the run took; no upper bound is asserted.
    assert!(summary.elapsed >= Duration::from_millis(400), "two rounds of three timeouts");
}

#[test]
fn refused_connections_are_connect_failures() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let summary = run(&config(url, 2, 10), |_| {}).unwrap();
    assert_eq!(failures(&summary, FailureKind::Connect), 10, "{summary}");
    assert_eq!(summary.connections, 0);
}

#[test]
fn time_bound_ends_the_run_and_reports_requests_in_flight() {
    let mut config = config(serve(Behaviour::Silent), 5, 1);
    config.requests = None;
    config.duration = Some(Duration::from_millis(300));
    let summary = run(&config, |_| {}).unwrap();
    assert_eq!(summary.completed, 0);
    assert_eq!(summary.failed(), 0, "{summary}");
    assert_eq!(summary.unfinished, 5, "{summary}");
    assert!(summary.elapsed >= Duration::from_millis(300));
}

#[test]
fn open_loop_runs_the_schedule_and_counts_from_it() {
    for keep_alive in [false, true] {
        let mut config = config(serve(Behaviour::Ok), 16, 50);
        config.rate = Some(500.0);
        config.keep_alive = keep_alive;
        let summary = run(&config, |_| {}).unwrap();
        assert_eq!((summary.completed, summary.failed()), (50, 0), "{summary}");
        // Request 49 is not due before 49/500 s: the schedule, not the server, sets the pace.
        assert!(summary.elapsed >= Duration::from_millis(98), "{summary}");
        if keep_alive {
            assert!(summary.connections <= 16, "{summary}");
        }
    }
}

#[test]
fn threads_split_the_load_and_the_counts_add_up() {
    let mut config = config(serve(Behaviour::Ok), 6, 101);
    config.threads = 2;
    config.keep_alive = true;
    let summary = run(&config, |_| {}).unwrap();
    assert_eq!((summary.completed, summary.failed()), (101, 0), "{summary}");
    assert_eq!(summary.connections, 6);
    assert_eq!(summary.latency.count, 101);
}

#[test]
fn binary_prints_json_for_scripts_and_text_for_people() {
    let url = serve(Behaviour::Ok).to_string();
    let binary = env!("CARGO_BIN_EXE_loadgen");
    let json = Process::new(binary).args(["-n", "25", "-c", "5", "--json", &url]).output().unwrap();
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let json = String::from_utf8(json.stdout).unwrap();
    assert_eq!(json.lines().count(), 1, "one JSON line and no progress line: {json}");
    for needle in
        ["\"completed\":25,\"failed\":0", "\"status_codes\":{\"200\":25}", "\"body_bytes\":100"]
    {
        assert!(json.contains(needle), "{needle} missing from {json}");
    }

    let text = Process::new(binary).args(["-n", "5", &url]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("Requests:        5 completed, 0 failed"), "{text}");
    assert!(!text.contains('\r'), "no progress line when stdout is not a terminal");

    let usage = Process::new(binary).args(["-n", "0", &url]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage: loadgen"));
}
