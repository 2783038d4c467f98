//! One `loadgen` event loop: non-blocking sockets on one edge-triggered epoll instance,
//! each connection a small state machine (connect → send → receive → drain or reuse).
//!
//! Load models (see the Gil Tene talk "How NOT to measure latency" for the open/closed
//! loop distinction and coordinated omission):
//! - closed loop (`-c N`): N connections always busy; a request starts when a slot frees,
//!   so its latency runs from its own connect (or, on a kept connection, its write);
//! - open loop (`--rate R`): request k is due at `start + k/R` whether or not earlier
//!   ones were answered; a request that waits for a free connection still has its
//!   latency counted from when it was due, so a stalled server shows up in the
//!   percentiles instead of slowing the generator down.
//!
//! With `Connection: close` the server closes first and this side only closes after
//! reading its FIN, so TIME-WAIT stays on the server (RFC 9293 §3.6) and a long run
//! cannot exhaust the client's ephemeral ports.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Progress;
use super::http::{Progress as Parse, Response, ResponseError, ResponseParser};
use super::report::{FailureKind, Stats};
use super::sys::{self, ERROR, Epoll, HANGUP, NO_EVENT, PEER_CLOSED, READABLE, WRITABLE};

/// How often connection deadlines are checked; timeouts fire up to this late.
const TIMEOUT_SCAN_INTERVAL: Duration = Duration::from_millis(10);
const EVENTS_PER_WAIT: usize = 1024;
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What one event loop is asked to do: its share of the run.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) target: SocketAddr,
    pub(crate) request: Vec<u8>,
    pub(crate) keep_alive: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    /// Connections open at once (closed loop) or the cap (open loop).
    pub(crate) connections: usize,
    /// Requests to finish, if bounded by count.
    pub(crate) requests: Option<u64>,
    /// Requests started per second (open loop).
    pub(crate) rate: Option<f64>,
    pub(crate) start: Instant,
    pub(crate) deadline: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// connect(2) issued; waiting for the handshake.
    Connecting,
    /// Writing the request.
    Sending,
    /// Reading the response.
    Receiving,
    /// Response complete; waiting for the server's FIN before closing.
    Draining,
    /// Kept alive with no request (open loop waiting for the next due request).
    Idle,
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    phase: Phase,
    parser: ResponseParser,
    connect_started: Instant,
    /// Where this request's latency counts from.
    request_started: Instant,
    deadline: Option<Instant>,
    written: usize,
    /// Input was reported while the request was still being written; with edge-triggered
    /// epoll there will be no second report, so it is read once the write is done.
    input_pending: bool,
    /// The connection already carried a complete request.
    reused: bool,
    /// The current request is already a retry (retried at most once).
    retried: bool,
}

#[derive(Debug, Default)]
struct Slot {
    /// Bumped on every reuse of the slot, and part of the epoll token, so events still
    /// queued for a closed connection are not applied to its successor.
    generation: u32,
    connection: Option<Connection>,
}

fn token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

/// One event loop and what it has counted.
#[derive(Debug)]
pub(crate) struct Worker<'a> {
    plan: Plan,
    progress: &'a Progress,
    epoll: Epoll,
    events: Vec<libc::epoll_event>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Kept connections without a request, as (slot, generation); entries may be stale.
    idle: Vec<(usize, u32)>,
    open: usize,
    /// Requests begun (a retry is not a new request).
    started: u64,
    /// Requests completed or failed.
    finished: u64,
    stats: Stats,
    buffer: Vec<u8>,
}

impl<'a> Worker<'a> {
    pub(crate) fn new(plan: Plan, progress: &'a Progress) -> io::Result<Worker<'a>> {
        Ok(Worker {
            plan,
            progress,
            epoll: Epoll::new()?,
            events: vec![NO_EVENT; EVENTS_PER_WAIT],
            slots: Vec::new(),
            free: Vec::new(),
            idle: Vec::new(),
            open: 0,
            started: 0,
            finished: 0,
            stats: Stats::new(),
            buffer: vec![0; READ_BUFFER_BYTES],
        })
    }

    /// Runs until the plan's bound is reached; returns the counters and when it ended.
    pub(crate) fn run(mut self) -> io::Result<(Stats, Instant)> {
        let mut next_scan = Instant::now() + TIMEOUT_SCAN_INTERVAL;
        loop {
            let now = Instant::now();
            if self.done(now) {
                self.account_unfinished(now);
                return Ok((self.stats, now));
            }
            if now >= next_scan {
                self.expire(now);
                next_scan = now + TIMEOUT_SCAN_INTERVAL;
            }
            self.fill(now);
            let wait = self.wait_time(now, next_scan);
            let ready = self.epoll.wait(&mut self.events, wait)?;
            let now = Instant::now();
            for index in 0..ready {
                let Some(&event) = self.events.get(index) else { break };
                self.handle(event.u64, event.events, now);
            }
        }
    }

    fn done(&self, now: Instant) -> bool {
        self.plan.deadline.is_some_and(|deadline| now >= deadline)
            || self.plan.requests.is_some_and(|limit| self.finished >= limit)
    }

    /// Requests in flight when the time bound hit, plus (open loop) those that were due but
    /// had no connection to go on.
    fn account_unfinished(&mut self, now: Instant) {
        let mut unfinished = self.started.saturating_sub(self.finished);
        if self.plan.requests.is_none_or(|limit| self.finished < limit) {
            unfinished += self.due(now).saturating_sub(self.started);
        }
        self.stats.unfinished = unfinished;
    }

    /// Requests due by `now` in the open loop (request 0 is due at the start).
    fn due(&self, now: Instant) -> u64 {
        let Some(rate) = self.plan.rate else { return 0 };
        let elapsed = now.saturating_duration_since(self.plan.start).as_secs_f64();
        let due = (elapsed * rate).floor() as u64 + 1;
        self.plan.requests.map_or(due, |limit| due.min(limit))
    }

    /// Whether another request may begin now (ignoring whether a connection is free).
    fn may_start(&self, now: Instant) -> bool {
        if self.plan.deadline.is_some_and(|deadline| now >= deadline) {
            return false;
        }
        if self.plan.requests.is_some_and(|limit| self.started >= limit) {
            return false;
        }
        self.plan.rate.is_none() || self.started < self.due(now)
    }

    /// When the next request is (or was) due: its scheduled time in the open loop, `now`
    /// in the closed loop.
    fn scheduled_start(&self, now: Instant) -> Instant {
        match self.plan.rate {
            Some(rate) => self.plan.start + Duration::from_secs_f64(self.started as f64 / rate),
            None => now,
        }
    }

    /// Starts every request that may start and has a connection to go on.
    fn fill(&mut self, now: Instant) {
        while self.may_start(now) {
            let scheduled = self.scheduled_start(now);
            if let Some(index) = self.take_idle() {
                self.started += 1;
                self.begin_request(index, scheduled, now);
            } else if self.open < self.plan.connections {
                self.started += 1;
                self.open_connection(scheduled, now, false);
            } else {
                break;
            }
        }
    }

    fn take_idle(&mut self) -> Option<usize> {
        while let Some((index, generation)) = self.idle.pop() {
            let slot = self.slots.get(index)?;
            let idle = slot.connection.as_ref().is_some_and(|c| c.phase == Phase::Idle);
            if slot.generation == generation && idle {
                return Some(index);
            }
        }
        None
    }

    fn wait_time(&self, now: Instant, next_scan: Instant) -> Duration {
        let mut until = next_scan;
        if let Some(deadline) = self.plan.deadline {
            until = until.min(deadline);
        }
        if let Some(rate) = self.plan.rate {
            let capacity = self.open < self.plan.connections || !self.idle.is_empty();
            if capacity && self.plan.requests.is_none_or(|limit| self.started < limit) {
                let next_due =
                    self.plan.start + Duration::from_secs_f64(self.started as f64 / rate);
                until = until.min(next_due);
            }
        }
        until.saturating_duration_since(now)
    }

    fn open_connection(&mut self, scheduled: Instant, now: Instant, retried: bool) {
        let stream = match sys::start_connect(&self.plan.target, self.plan.keep_alive) {
            Ok(stream) => stream,
            Err(_) => return self.fail_request(FailureKind::Connect),
        };
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            self.slots.len() - 1
        });
        let Some(slot) = self.slots.get_mut(index) else { return };
        slot.generation = slot.generation.wrapping_add(1);
        if self.epoll.add(&stream, token(index, slot.generation)).is_err() {
            self.free.push(index);
            return self.fail_request(FailureKind::Connect);
        }
        slot.connection = Some(Connection {
            stream,
            phase: Phase::Connecting,
            parser: ResponseParser::default(),
            connect_started: now,
            request_started: scheduled,
            deadline: Some(now + self.plan.connect_timeout),
            written: 0,
            input_pending: false,
            reused: false,
            retried,
        });
        self.open += 1;
    }

    fn connection(&mut self, index: usize) -> Option<&mut Connection> {
        self.slots.get_mut(index).and_then(|slot| slot.connection.as_mut())
    }

    fn handle(&mut self, token: u64, events: u32, now: Instant) {
        let index = (token & u64::from(u32::MAX)) as usize;
        let generation = (token >> 32) as u32;
        let Some(slot) = self.slots.get_mut(index) else { return };
        if slot.generation != generation {
            return;
        }
        let Some(connection) = slot.connection.as_mut() else { return };
        let input = events & (READABLE | PEER_CLOSED | ERROR | HANGUP) != 0;
        let peer_done = events & (PEER_CLOSED | ERROR | HANGUP) != 0;
        match connection.phase {
            Phase::Connecting if events & (ERROR | HANGUP) != 0 => {
                self.close_failed(index, FailureKind::Connect);
            }
            Phase::Connecting if events & WRITABLE != 0 => {
                connection.phase = Phase::Sending;
                connection.input_pending = input;
                connection.deadline = Some(now + self.plan.request_timeout);
                let connect_ns =
                    now.saturating_duration_since(connection.connect_started).as_nanos();
                self.stats
                    .connect_time
                    .saturating_record(u64::try_from(connect_ns).unwrap_or(u64::MAX));
                self.stats.connections += 1;
                self.progress.connections.fetch_add(1, Ordering::Relaxed);
                self.send(index, now);
            }
            Phase::Connecting => {}
            Phase::Sending => {
                connection.input_pending |= input;
                if events & (WRITABLE | ERROR | HANGUP) != 0 {
                    self.send(index, now);
                }
            }
            Phase::Receiving | Phase::Draining | Phase::Idle => {
                if input {
                    self.receive(index, peer_done, now);
                }
            }
        }
    }

    /// Puts a request on the kept connection in `index`.
    fn begin_request(&mut self, index: usize, scheduled: Instant, now: Instant) {
        let timeout = self.plan.request_timeout;
        let open_loop = self.plan.rate.is_some();
        let Some(connection) = self.connection(index) else { return };
        connection.phase = Phase::Sending;
        connection.parser.reset();
        connection.written = 0;
        connection.retried = false;
        connection.request_started = if open_loop { scheduled } else { now };
        connection.deadline = Some(now + timeout);
        self.send(index, now);
    }

    fn send(&mut self, index: usize, now: Instant) {
        let Some(slot) = self.slots.get_mut(index) else { return };
        let Some(connection) = slot.connection.as_mut() else { return };
        loop {
            let rest = self.plan.request.get(connection.written..).unwrap_or_default();
            if rest.is_empty() {
                connection.phase = Phase::Receiving;
                if std::mem::take(&mut connection.input_pending) {
                    self.receive(index, true, now);
                }
                return;
            }
            match connection.stream.write(rest) {
                Ok(written) => {
                    connection.written += written;
                    self.stats.bytes_sent += written as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.broken(index, now),
            }
        }
    }

    /// Reads what is there. `peer_done` says the FIN or an error was reported, so a short
    /// read does not mean the socket is drained of everything epoll will not report again.
    fn receive(&mut self, index: usize, peer_done: bool, now: Instant) {
        loop {
            let Some(slot) = self.slots.get_mut(index) else { return };
            let Some(connection) = slot.connection.as_mut() else { return };
            let read = match connection.stream.read(&mut self.buffer) {
                Ok(0) => return self.end_of_stream(index, now),
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.broken(index, now),
            };
            self.stats.bytes_received += read as u64;
            match connection.phase {
                Phase::Receiving => {
                    let data = self.buffer.get(..read).unwrap_or_default();
                    match connection.parser.feed(data) {
                        Ok(Parse::NeedMore) => {}
                        Ok(Parse::Complete { response, consumed }) => {
                            self.complete(index, response, consumed < read, false, now);
                            // Only a draining connection has more to read (the FIN).
                            if self.connection(index).is_none_or(|c| c.phase != Phase::Draining) {
                                return;
                            }
                            continue;
                        }
                        Err(error) => return self.close_failed(index, failure_of(error)),
                    }
                }
                Phase::Draining => {}
                // Bytes nobody asked for: the connection's framing can no longer be trusted.
                Phase::Idle | Phase::Connecting | Phase::Sending => return self.close(index),
            }
            if read < self.buffer.len() && !peer_done {
                return;
            }
        }
    }

    fn end_of_stream(&mut self, index: usize, now: Instant) {
        let Some(connection) = self.connection(index) else { return };
        match connection.phase {
            Phase::Receiving => match connection.parser.finish() {
                Ok(response) => self.complete(index, response, false, true, now),
                Err(ResponseError::NoResponse) if connection.reused && !connection.retried => {
                    self.retry(index, now);
                }
                Err(error) => self.close_failed(index, failure_of(error)),
            },
            Phase::Connecting | Phase::Sending => self.close_failed(index, FailureKind::Closed),
            Phase::Draining | Phase::Idle => self.close(index),
        }
    }

    /// The socket reported an error (reset, broken pipe).
    fn broken(&mut self, index: usize, now: Instant) {
        let Some(connection) = self.connection(index) else { return };
        let unanswered = !connection.parser.started();
        match connection.phase {
            Phase::Draining | Phase::Idle => self.close(index),
            // A kept connection the server had already given up on: the request never
            // reached it, so it is sent again once, as browsers do (RFC 9112 §9.3.1).
            Phase::Sending | Phase::Receiving
                if connection.reused && !connection.retried && unanswered =>
            {
                self.retry(index, now);
            }
            Phase::Connecting => self.close_failed(index, FailureKind::Connect),
            Phase::Sending | Phase::Receiving => self.close_failed(index, FailureKind::Reset),
        }
    }

    fn retry(&mut self, index: usize, now: Instant) {
        let Some(connection) = self.connection(index) else { return };
        let scheduled = connection.request_started;
        self.close(index);
        self.stats.retries += 1;
        self.open_connection(scheduled, now, true);
    }

    /// A response was read to its end (`extra`: bytes followed it; `closed`: the
    /// connection already ended).
    fn complete(
        &mut self,
        index: usize,
        response: Response,
        extra: bool,
        closed: bool,
        now: Instant,
    ) {
        *self.stats.statuses.entry(response.status).or_default() += 1;
        if (200..300).contains(&response.status) {
            let Some(connection) = self.connection(index) else { return };
            let latency = now.saturating_duration_since(connection.request_started).as_nanos();
            self.stats.latency.saturating_record(u64::try_from(latency).unwrap_or(u64::MAX));
            self.stats.completed += 1;
            self.stats.body_bytes += response.body_bytes;
            self.finished += 1;
            self.progress.completed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fail_request(FailureKind::BadStatus);
        }
        let reusable = self.plan.keep_alive && response.keep_alive && !extra && !closed;
        let drain_deadline = now + self.plan.request_timeout;
        let generation = self.slots.get(index).map_or(0, |slot| slot.generation);
        let Some(connection) = self.connection(index) else { return };
        connection.reused = true;
        connection.retried = false;
        if reusable {
            connection.phase = Phase::Idle;
            connection.deadline = None;
            self.idle.push((index, generation));
        } else if closed {
            self.close(index);
        } else {
            connection.phase = Phase::Draining;
            connection.deadline = Some(drain_deadline);
        }
    }

    /// Fails connections whose deadline passed.
    fn expire(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let Some(connection) = self.connection(index) else { continue };
            if connection.deadline.is_none_or(|deadline| now < deadline) {
                continue;
            }
            match connection.phase {
                Phase::Connecting => self.close_failed(index, FailureKind::ConnectTimeout),
                Phase::Sending | Phase::Receiving => self.close_failed(index, FailureKind::Timeout),
                Phase::Draining | Phase::Idle => self.close(index),
            }
        }
    }

    fn fail_request(&mut self, kind: FailureKind) {
        self.stats.count_failure(kind);
        self.finished += 1;
        self.progress.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn close_failed(&mut self, index: usize, kind: FailureKind) {
        self.fail_request(kind);
        self.close(index);
    }

    /// Closes the socket (which also removes it from epoll) and frees the slot.
    fn close(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            if slot.connection.take().is_some() {
                self.free.push(index);
                self.open -= 1;
            }
        }
    }
}

fn failure_of(error: ResponseError) -> FailureKind {
    match error {
        ResponseError::NoResponse => FailureKind::Closed,
        ResponseError::Truncated => FailureKind::ShortBody,
        ResponseError::Malformed => FailureKind::Malformed,
    }
}
