//! What a `loadgen` run measured: the per-thread counters and latency histograms
//! (HdrHistogram, 3 significant digits), merged into a [`Summary`] printed as text or JSON.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::args::Config;

/// Histogram range in nanoseconds: 1 µs resolution at the bottom, an hour at the top
/// (longer than any timeout the command line accepts, so nothing saturates).
const HISTOGRAM_LOW_NS: u64 = 1_000;
const HISTOGRAM_HIGH_NS: u64 = 3_600 * 1_000_000_000;
const HISTOGRAM_DIGITS: u8 = 3;

/// The ways a request can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The connection could not be opened (refused, unreachable, no local port left).
    Connect,
    /// The connection was not open by the connect timeout.
    ConnectTimeout,
    /// The connection broke with an error (reset by the peer, broken pipe) mid-request.
    Reset,
    /// The server closed the connection before sending any byte of the response.
    Closed,
    /// The response was not complete by the request timeout.
    Timeout,
    /// A complete response whose status is not 2xx.
    BadStatus,
    /// The connection ended inside the response head or body (less than Content-Length,
    /// or a chunked body without its last chunk).
    ShortBody,
    /// The bytes were not an HTTP/1.x response.
    Malformed,
}

impl FailureKind {
    /// Every kind, in report order.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Connect,
        FailureKind::ConnectTimeout,
        FailureKind::Reset,
        FailureKind::Closed,
        FailureKind::Timeout,
        FailureKind::BadStatus,
        FailureKind::ShortBody,
        FailureKind::Malformed,
    ];

    /// The name used in reports and JSON keys.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::Reset => "reset",
            FailureKind::Closed => "closed",
            FailureKind::Timeout => "timeout",
            FailureKind::BadStatus => "bad_status",
            FailureKind::ShortBody => "short_body",
            FailureKind::Malformed => "malformed",
        }
    }

    fn index(self) -> usize {
        FailureKind::ALL.iter().position(|&kind| kind == self).unwrap_or(0)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(HISTOGRAM_LOW_NS, HISTOGRAM_HIGH_NS, HISTOGRAM_DIGITS)
        .expect("the constant histogram bounds are valid")
}

/// Counters of one event loop; merged across threads at the end.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Request latency in ns: from the request's start (its connect, its write on a kept
    /// connection, or its scheduled time in rate mode) to the response's last byte.
    pub(crate) latency: Histogram<u64>,
    /// Connect time in ns: connect(2) to the handshake's completion.
    pub(crate) connect_time: Histogram<u64>,
    pub(crate) completed: u64,
    pub(crate) failures: [u64; FailureKind::ALL.len()],
    pub(crate) unfinished: u64,
    pub(crate) connections: u64,
    pub(crate) retries: u64,
    pub(crate) bytes_received: u64,
    pub(crate) body_bytes: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) statuses: BTreeMap<u16, u64>,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            latency: new_histogram(),
            connect_time: new_histogram(),
            completed: 0,
            failures: [0; FailureKind::ALL.len()],
            unfinished: 0,
            connections: 0,
            retries: 0,
            bytes_received: 0,
            body_bytes: 0,
            bytes_sent: 0,
            statuses: BTreeMap::new(),
        }
    }

    pub(crate) fn count_failure(&mut self, kind: FailureKind) {
        if let Some(count) = self.failures.get_mut(kind.index()) {
            *count += 1;
        }
    }

    pub(crate) fn merge(&mut self, other: &Stats) {
        // Every histogram here is made by `new_histogram` with the same bounds, and adding
        // histograms of equal bounds cannot fail.
        let added =
            self.latency.add(&other.latency).and(self.connect_time.add(&other.connect_time));
        debug_assert!(added.is_ok(), "{added:?}");
        self.completed += other.completed;
        for (mine, theirs) in self.failures.iter_mut().zip(other.failures) {
            *mine += theirs;
        }
        self.unfinished += other.unfinished;
        self.connections += other.connections;
        self.retries += other.retries;
        self.bytes_received += other.bytes_received;
        self.body_bytes += other.body_bytes;
        self.bytes_sent += other.bytes_sent;
        for (&status, &count) in &other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
    }
}

/// Percentiles of one latency distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Number of values recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p99_9: Duration,
    /// Largest value.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let at = |quantile: f64| Duration::from_nanos(histogram.value_at_quantile(quantile));
        Percentiles {
            count: histogram.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p99_9: at(0.999),
            max: Duration::from_nanos(histogram.max()),
            mean: Duration::from_nanos(histogram.mean() as u64),
        }
    }
}

/// The result of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The target, as requested.
    pub url: String,
    /// Connections at once (or the cap, in rate mode).
    pub concurrency: usize,
    /// Event-loop threads.
    pub threads: usize,
    /// Whether connections carried many requests.
    pub keep_alive: bool,
    /// The open-loop rate, if any (requests per second).
    pub rate: Option<f64>,
    /// From the first connect to the end of the last request.
    pub elapsed: Duration,
    /// Responses read in full with a 2xx status.
    pub completed: u64,
    /// Requests that failed, by kind (every kind present, zero or not).
    pub failures: BTreeMap<FailureKind, u64>,
    /// Requests still in flight when the time bound ended the run.
    pub unfinished: u64,
    /// Connections whose handshake completed.
    pub connections: u64,
    /// Requests sent again on a new connection because a kept-alive one had been closed by
    /// the server before it read them (not counted as failures).
    pub retries: u64,
    /// Complete responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Bytes read from the server (heads and bodies).
    pub bytes_received: u64,
    /// Body bytes of complete responses, chunked framing removed.
    pub body_bytes: u64,
    /// Bytes of requests written.
    pub bytes_sent: u64,
    /// Latency of completed requests.
    pub latency: Percentiles,
    /// Time to open a connection.
    pub connect_time: Percentiles,
}

impl Summary {
    pub(crate) fn new(config: &Config, elapsed: Duration, stats: &Stats) -> Summary {
        Summary {
            url: config.url.to_string(),
            concurrency: config.concurrency,
            threads: config.threads,
            keep_alive: config.keep_alive,
            rate: config.rate,
            elapsed,
            completed: stats.completed,
            failures: FailureKind::ALL
                .iter()
                .map(|&kind| (kind, stats.failures[kind.index()]))
                .collect(),
            unfinished: stats.unfinished,
            connections: stats.connections,
            retries: stats.retries,
            statuses: stats.statuses.clone(),
            bytes_received: stats.bytes_received,
            body_bytes: stats.body_bytes,
            bytes_sent: stats.bytes_sent,
            latency: Percentiles::of(&stats.latency),
            connect_time: Percentiles::of(&stats.connect_time),
        }
    }

    /// All failed requests.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn per_second(&self, count: u64) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { count as f64 / secs } else { 0.0 }
    }

    /// Completed requests per second of the run.
    pub fn requests_per_sec(&self) -> f64 {
        self.per_second(self.completed)
    }

    /// Connections opened per second of the run.
    pub fn connections_per_sec(&self) -> f64 {
        self.per_second(self.connections)
    }

    /// Bytes received per second, in KiB (1024 bytes, as ab reports it).
    pub fn transfer_kib_per_sec(&self) -> f64 {
        self.per_second(self.bytes_received) / 1024.0
    }

    /// The summary as one JSON object (durations in microseconds).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let _ = self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) -> fmt::Result {
        write!(out, "{{\"url\":{}", json_string(&self.url))?;
        write!(out, ",\"concurrency\":{},\"threads\":{}", self.concurrency, self.threads)?;
        write!(out, ",\"keep_alive\":{}", self.keep_alive)?;
        match self.rate {
            Some(rate) => write!(out, ",\"rate\":{}", json_number(rate))?,
            None => out.push_str(",\"rate\":null"),
        }
        write!(out, ",\"elapsed_s\":{}", json_number(self.elapsed.as_secs_f64()))?;
        write!(out, ",\"completed\":{},\"failed\":{}", self.completed, self.failed())?;
        write!(out, ",\"unfinished\":{},\"retries\":{}", self.unfinished, self.retries)?;
        out.push_str(",\"failures\":{");
        for (index, (kind, count)) in self.failures.iter().enumerate() {
            let comma = if index == 0 { "" } else { "," };
            write!(out, "{comma}\"{kind}\":{count}")?;
        }
        out.push('}');
        write!(out, ",\"requests_per_s\":{}", json_number(self.requests_per_sec()))?;
        write!(out, ",\"connections\":{}", self.connections)?;
        write!(out, ",\"connections_per_s\":{}", json_number(self.connections_per_sec()))?;
        out.push_str(",\"status_codes\":{");
        for (index, (status, count)) in self.statuses.iter().enumerate() {
            let comma = if index == 0 { "" } else { "," };
            write!(out, "{comma}\"{status}\":{count}")?;
        }
        out.push('}');
        write!(
            out,
            ",\"bytes_received\":{},\"body_bytes\":{}",
            self.bytes_received, self.body_bytes
        )?;
        write!(out, ",\"bytes_sent\":{}", self.bytes_sent)?;
        write!(out, ",\"transfer_kib_per_s\":{}", json_number(self.transfer_kib_per_sec()))?;
        for (name, percentiles) in
            [("latency_us", &self.latency), ("connect_us", &self.connect_time)]
        {
            let us = |d: Duration| json_number(d.as_secs_f64() * 1e6);
            write!(
                out,
                ",\"{name}\":{{\"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p99_9\":{},\
                 \"max\":{},\"mean\":{}}}",
                percentiles.count,
                us(percentiles.p50),
                us(percentiles.p90),
                us(percentiles.p99),
                us(percentiles.p99_9),
                us(percentiles.max),
                us(percentiles.mean),
            )?;
        }
        out.push('}');
        Ok(())
    }
}

/// A finite number with at most three decimals (JSON has no NaN or infinity).
fn json_number(value: f64) -> String {
    if value.is_finite() { format!("{}", (value * 1000.0).round() / 1000.0) } else { "null".into() }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A duration in the unit that keeps three or four significant digits readable.
pub(crate) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1e-3 {
        format!("{:.1} µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{secs:.3} s")
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.2} {}", UNITS[unit]) }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_connection =
            if self.keep_alive { "keep-alive" } else { "one request per connection" };
        let loop_kind = match self.rate {
            Some(rate) => {
                format!("open loop at {rate} req/s, up to {} connections", self.concurrency)
            }
            None => format!("{} connections, closed loop", self.concurrency),
        };
        let threads = if self.threads == 1 {
            "1 thread".to_owned()
        } else {
            format!("{} threads", self.threads)
        };
        writeln!(f, "Target:          {}", self.url)?;
        writeln!(f, "Load:            {loop_kind}, {per_connection}, {threads}")?;
        writeln!(f, "Elapsed:         {:.3} s", self.elapsed.as_secs_f64())?;
        writeln!(
            f,
            "Requests:        {} completed, {} failed, {} unfinished",
            self.completed,
            self.failed(),
            self.unfinished
        )?;
        writeln!(f, "Requests/s:      {:.1}", self.requests_per_sec())?;
        writeln!(
            f,
            "Connections/s:   {:.1} ({} connections)",
            self.connections_per_sec(),
            self.connections
        )?;
        let failures: Vec<String> = self
            .failures
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        let failures = if failures.is_empty() { "none".to_owned() } else { failures.join(", ") };
        writeln!(f, "Failed by kind:  {failures}")?;
        if self.retries > 0 {
            writeln!(
                f,
                "Retried:         {} (kept connection closed by the server)",
                self.retries
            )?;
        }
        let statuses: Vec<String> =
            self.statuses.iter().map(|(status, count)| format!("{status}: {count}")).collect();
        writeln!(
            f,
            "Status codes:    {}",
            if statuses.is_empty() { "none".into() } else { statuses.join(", ") }
        )?;
        writeln!(
            f,
            "Transfer:        {} received ({:.1} KiB/s), {} of bodies, {} sent",
            human_bytes(self.bytes_received),
            self.transfer_kib_per_sec(),
            human_bytes(self.body_bytes),
            human_bytes(self.bytes_sent),
        )?;
        let since = match (self.rate, self.keep_alive) {
            (Some(_), _) => "scheduled start",
            (None, false) => "connect",
            (None, true) => "request write",
        };
        for (title, p) in [
            (format!("Latency ({since} to last byte):"), &self.latency),
            ("Connect time:".to_owned(), &self.connect_time),
        ] {
            writeln!(f, "{title}")?;
            writeln!(
                f,
                "  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}  (n = {})",
                human_duration(p.p50),
                human_duration(p.p90),
                human_duration(p.p99),
                human_duration(p.p99_9),
                human_duration(p.max),
                human_duration(p.mean),
                p.count
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::args::Url;

    fn config() -> Config {
        Config::new(Url::parse("http://10.0.0.2/index.html").unwrap())
    }

    fn stats_with(latencies_us: &[u64], completed: u64) -> Stats {
        let mut stats = Stats::new();
        for &us in latencies_us {
            stats.latency.saturating_record(us * 1000);
        }
        stats.completed = completed;
        stats.bytes_received = 1024 * completed;
        stats.statuses.insert(200, completed);
        stats
    }

    #[test]
    fn rates_divide_by_elapsed_time() {
        let mut stats = stats_with(&[], 500);
        stats.connections = 250;
        let summary = Summary::new(&config(), Duration::from_millis(250), &stats);
        assert_eq!(summary.requests_per_sec(), 2000.0);
        assert_eq!(summary.connections_per_sec(), 1000.0);
        assert_eq!(summary.transfer_kib_per_sec(), 2000.0);
        let zero = Summary::new(&config(), Duration::ZERO, &stats);
        assert_eq!(zero.requests_per_sec(), 0.0);
    }

    #[test]
    fn merged_threads_add_counts_and_distributions() {
        let mut a = stats_with(&[100, 200], 2);
        a.count_failure(FailureKind::Reset);
        let mut b = stats_with(&[300, 400, 10_000], 3);
        b.count_failure(FailureKind::Reset);
        b.count_failure(FailureKind::Timeout);
        b.statuses.insert(404, 1);
        a.merge(&b);
        assert_eq!(a.completed, 5);
        assert_eq!(a.statuses, BTreeMap::from([(200, 5), (404, 1)]));
        let summary = Summary::new(&config(), Duration::from_secs(1), &a);
        assert_eq!(summary.failed(), 3);
        assert_eq!(summary.failures[&FailureKind::Reset], 2);
        assert_eq!(summary.failures[&FailureKind::Timeout], 1);
        assert_eq!(summary.failures.len(), FailureKind::ALL.len());
        assert_eq!(summary.latency.count, 5);
        // 3 significant digits: within 0.1 % of the recorded values.
        let close = |d: Duration, us: f64| (d.as_secs_f64() * 1e6 - us).abs() <= us * 0.001;
        assert!(close(summary.latency.p50, 300.0), "{:?}", summary.latency);
        assert!(close(summary.latency.max, 10_000.0), "{:?}", summary.latency);
    }

    #[test]
    fn percentiles_are_ordered() {
        let values: Vec<u64> = (1..=10_000).collect();
        let summary = Summary::new(&config(), Duration::from_secs(1), &stats_with(&values, 10_000));
        let p = summary.latency;
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p99_9 && p.p99_9 <= p.max);
        assert!((p.p99.as_secs_f64() * 1e6 - 9_900.0).abs() < 10.0, "{p:?}");
    }

    #[test]
    fn json_holds_the_figures_scripts_read() {
        let mut stats = stats_with(&[1000], 1);
        stats.count_failure(FailureKind::ShortBody);
        let json = Summary::new(&config(), Duration::from_secs(2), &stats).to_json();
        for needle in [
            "\"url\":\"http://10.0.0.2:80/index.html\"",
            "\"completed\":1,\"failed\":1",
            "\"short_body\":1",
            "\"requests_per_s\":0.5",
            "\"status_codes\":{\"200\":1}",
            "\"rate\":null",
            "\"latency_us\":{\"count\":1,\"p50\":1000",
        ] {
            assert!(json.contains(needle), "{needle} not in {json}");
        }
        assert!(json.starts_with('{') && json.ends_with('}'));
        assert_eq!(json.matches('{').count(), json.matches('}').count());
    }

    #[test]
    fn json_strings_and_numbers_stay_valid() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(json_number(f64::NAN), "null");
        assert_eq!(json_number(1.23456), "1.235");
    }

    #[test]
    fn text_report_names_failures_and_units() {
        let mut stats = stats_with(&[1500], 1);
        stats.count_failure(FailureKind::Connect);
        let text = Summary::new(&config(), Duration::from_secs(1), &stats).to_string();
        assert!(text.contains("Failed by kind:  connect 1"), "{text}");
        assert!(text.contains("p50 1.50 ms"), "{text}");
        assert!(text.contains("Status codes:    200: 1"), "{text}");
    }

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(human_duration(Duration::from_nanos(12_340)), "12.3 µs");
        assert_eq!(human_duration(Duration::from_micros(2_500)), "2.50 ms");
        assert_eq!(human_duration(Duration::from_millis(1_500)), "1.500 s");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.00 MiB");
    }
}
