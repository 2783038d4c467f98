//! `loadgen`: an HTTP/1.1 load generator over the kernel's TCP stack, in the spirit of
//! `ab` and `wrk`, built to saturate a server from a small machine.
//!
//! Each thread runs one event loop over non-blocking sockets and an edge-triggered epoll
//! instance, so one core drives thousands of connections
//! without a thread per connection. Requests are `GET` over HTTP/1.1 (RFC 9112), one per
//! connection with `Connection: close` (like `ab` without `-k`) or many per connection
//! (keep-alive); load is a fixed number of connections (closed loop) or a fixed request
//! rate (open loop, latency counted from each request's scheduled start so that a stalled
//! server cannot hide behind a stalled generator). Latency and connect time go into
//! HdrHistograms; failures are counted by [`FailureKind`].
//!
//! ```no_run
//! use netpop_benches::loadgen::{Config, Url, run};
//!
//! let mut config = Config::new(Url::parse("http://10.0.0.2/index.html")?);
//! config.concurrency = 50;
//! config.requests = Some(20_000);
//! config.duration = None;
//! let summary = run(&config, |_| {})?;
//! println!("{summary}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod args;
mod http;
pub mod report;
mod sys;
mod worker;

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use args::{Command, Config, USAGE, Url, UsageError, parse_args};
pub use report::{FailureKind, Percentiles, Summary};

use report::Stats;
use worker::{Plan, Worker};

/// How often `run` hands a [`Snapshot`] to its caller.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Descriptors kept free for everything that is not a load connection.
const SPARE_FILES: u64 = 64;

/// Why a run could not take place.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadgenError {
    /// The settings do not make a run.
    Usage(UsageError),
    /// The host name did not resolve to an address.
    Resolve {
        /// `host:port` as given.
        target: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// The process may not open as many sockets as connections were asked for.
    OpenFileLimit {
        /// Descriptors the run needs.
        needed: u64,
        /// The limit that could be reached.
        limit: u64,
    },
    /// An event loop could not be set up or could not wait (epoll failed).
    EventLoop(io::Error),
    /// An event loop thread panicked.
    WorkerPanicked,
}

impl fmt::Display for LoadgenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadgenError::Usage(error) => write!(f, "{error}"),
            LoadgenError::Resolve { target, source } => {
                write!(f, "cannot resolve {target}: {source}")
            }
            LoadgenError::OpenFileLimit { needed, limit } => write!(
                f,
                "{needed} open files needed but the limit is {limit} (raise the hard limit with \
                 `ulimit -Hn` as root, or lower -c)"
            ),
            LoadgenError::EventLoop(error) => write!(f, "event loop: {error}"),
            LoadgenError::WorkerPanicked => f.write_str("an event loop thread panicked"),
        }
    }
}

impl std::error::Error for LoadgenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadgenError::Resolve { source, .. } | LoadgenError::EventLoop(source) => Some(source),
            LoadgenError::Usage(error) => Some(error),
            _ => None,
        }
    }
}

/// Counters every event loop adds to as it goes, read for the progress line.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) connections: AtomicU64,
}

/// The state of a run in progress, as handed to the progress callback of [`run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Time since the run started.
    pub elapsed: Duration,
    /// Requests completed so far.
    pub completed: u64,
    /// Requests failed so far.
    pub failed: u64,
    /// Connections opened so far.
    pub connections: u64,
}

impl Snapshot {
    /// One status line: totals and the rates since `previous`.
    pub fn progress_line(&self, previous: &Snapshot) -> String {
        let secs = self.elapsed.saturating_sub(previous.elapsed).as_secs_f64();
        let rate = |now: u64, before: u64| {
            if secs > 0.0 { now.saturating_sub(before) as f64 / secs } else { 0.0 }
        };
        format!(
            "{:7.1} s  {:>10} done  {:>9.0} req/s  {:>9.0} conn/s  {} failed",
            self.elapsed.as_secs_f64(),
            self.completed,
            rate(self.completed, previous.completed),
            rate(self.connections, previous.connections),
            self.failed
        )
    }
}

/// The first address `url` resolves to, IPv4 preferred.
fn resolve(url: &Url) -> Result<SocketAddr, LoadgenError> {
    let target = url.authority();
    let resolve_error = |source| LoadgenError::Resolve { target: target.clone(), source };
    let addresses: Vec<SocketAddr> = target.to_socket_addrs().map_err(resolve_error)?.collect();
    addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| resolve_error(io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// Thread `index` of `threads` gets this share of `total`.
fn share(total: u64, index: usize, threads: usize) -> u64 {
    let threads = threads.max(1) as u64;
    let index = index as u64;
    total / threads + u64::from(index < total % threads)
}

/// Runs the load `config` describes and returns what it measured. `on_progress` is called
/// about once a second from the calling thread while the event loops run on their own.
pub fn run(
    config: &Config,
    mut on_progress: impl FnMut(&Snapshot),
) -> Result<Summary, LoadgenError> {
    config.validate().map_err(LoadgenError::Usage)?;
    let target = resolve(&config.url)?;
    let needed = config.concurrency as u64 + SPARE_FILES;
    let limit = sys::raise_open_file_limit(needed).map_err(LoadgenError::EventLoop)?;
    if limit < needed {
        return Err(LoadgenError::OpenFileLimit { needed, limit });
    }
    let request = http::build_request(
        &config.url.host_header(),
        &config.url.path,
        config.keep_alive,
        &config.headers,
    );

    let progress = Progress::default();
    let start = Instant::now();
    let plans: Vec<Plan> = (0..config.threads)
        .map(|index| Plan {
            target,
            request: request.clone(),
            keep_alive: config.keep_alive,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            connections: share(config.concurrency as u64, index, config.threads) as usize,
            requests: config.requests.map(|total| share(total, index, config.threads)),
            rate: config.rate.map(|rate| rate / config.threads as f64),
            start,
            deadline: config.duration.map(|duration| start + duration),
        })
        .collect();

    let results = std::thread::scope(|scope| {
        let progress = &progress;
        let handles: Vec<_> = plans
            .into_iter()
            .map(|plan| scope.spawn(move || Worker::new(plan, progress)?.run()))
            .collect();
        let mut previous_report = start;
        while !handles.iter().all(|handle| handle.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
            if previous_report.elapsed() >= PROGRESS_INTERVAL {
                previous_report = Instant::now();
                on_progress(&Snapshot {
                    elapsed: start.elapsed(),
                    completed: progress.completed.load(Ordering::Relaxed),
                    failed: progress.failed.load(Ordering::Relaxed),
                    connections: progress.connections.load(Ordering::Relaxed),
                });
            }
        }
        handles.into_iter().map(|handle| handle.join()).collect::<Vec<_>>()
    });

    let mut total = Stats::new();
    let mut end = start;
    for result in results {
        let (stats, ended) =
            result.map_err(|_| LoadgenError::WorkerPanicked)?.map_err(LoadgenError::EventLoop)?;
        total.merge(&stats);
        end = end.max(ended);
    }
    Ok(Summary::new(config, end.saturating_duration_since(start), &total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for (total, threads) in [(20_000, 3), (5, 8), (0, 2), (7, 1)] {
            let shares: Vec<u64> = (0..threads).map(|i| share(total, i, threads)).collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(max - min <= 1, "{shares:?}");
        }
    }

    #[test]
    fn progress_line_shows_rates_since_the_previous_snapshot() {
        let previous = Snapshot {
            elapsed: Duration::from_secs(1),
            completed: 100,
            failed: 0,
            connections: 100,
        };
        let now = Snapshot {
            elapsed: Duration::from_secs(3),
            completed: 700,
            failed: 2,
            connections: 500,
        };
        let line = now.progress_line(&previous);
        assert!(line.contains("700 done"), "{line}");
        assert!(line.contains("300 req/s"), "{line}");
        assert!(line.contains("200 conn/s"), "{line}");
        assert!(line.contains("2 failed"), "{line}");
    }

    #[test]
    fn unresolvable_hosts_are_reported() {
        let url = Url { host: "no-such-host.invalid".into(), port: 80, path: "/".into() };
        assert!(matches!(resolve(&url), Err(LoadgenError::Resolve { .. })));
        let literal = Url { host: "127.0.0.1".into(), port: 8080, path: "/".into() };
        assert_eq!(resolve(&literal).unwrap(), "127.0.0.1:8080".parse().unwrap());
    }
}
