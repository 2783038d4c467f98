//! The `loadgen` command line: options, the target URL (RFC 3986 §3, restricted to
//! `http://host[:port][/path]`), and the run [`Config`] they describe.

use std::fmt;
use std::time::Duration;

/// Usage text of the `loadgen` binary.
pub const USAGE: &str = "\
usage: loadgen [options] http://HOST[:PORT][/PATH]

An HTTP/1.1 load generator (GET requests over the kernel's TCP stack).

Bounds (the run always ends by itself; neither given means -t 10):
  -n, --requests N       stop after N requests (completed or failed)
  -t, --time SECONDS     stop after this long; requests still in flight are reported as
                         unfinished

Load:
  -c, --concurrency N    connections open at once (default 1); with --rate, the most
                         connections it may open (default 1000)
  --rate R               open loop: start R requests per second on schedule, whatever
                         the responses do; latency counts from the scheduled start
  -k, --keep-alive       many requests per connection (default: one, Connection: close)
  --threads T            event loops (one per core at most makes sense; default 1)

Requests:
  -H, --header 'NAME: VALUE'   extra request header (repeatable)
  --connect-timeout SECONDS    a connect not finished by then fails (default 5)
  --timeout SECONDS            a request not answered in full by then fails (default 30)

Output:
  --json                 one JSON object on stdout instead of the text summary
  -h, --help             this text

A progress line is shown while the run lasts when stdout is a terminal (not with --json).";

/// Why the command line was not accepted; the message is meant for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The target of the run: `http://HOST[:PORT][/PATH]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Host name or address literal; an IPv6 literal keeps its brackets.
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `http://HOST[:PORT][/PATH]`. Only the `http` scheme exists here: the point is
    /// to load a server's TCP path, not to measure TLS.
    pub fn parse(text: &str) -> Result<Url, UsageError> {
        let bad = |why: &str| UsageError(format!("URL {text:?}: {why}"));
        let rest = match text.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("http://") => text.get(7..).unwrap_or(""),
            _ => return Err(bad("only http:// URLs are supported")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("the path holds spaces or control characters"));
        }
        let path = path.split('#').next().unwrap_or("/").to_owned();
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (inside, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (format!("[{inside}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("no host"));
        }
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_[]:".contains(&b)) {
            return Err(bad("the host holds characters a host name cannot"));
        }
        let port = match port {
            None | Some("") => 80,
            Some(port) => {
                port.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| bad("bad port"))?
            }
        };
        Ok(Url { host, port, path })
    }

    /// The value of the `Host` header (RFC 9110 §7.2): the port only when it is not 80.
    pub fn host_header(&self) -> String {
        if self.port == 80 { self.host.clone() } else { format!("{}:{}", self.host, self.port) }
    }

    /// `host:port` as `ToSocketAddrs` takes it.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Everything that shapes one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// What to request.
    pub url: Url,
    /// Connections open at once (closed loop), or the most it may open (with `rate`).
    pub concurrency: usize,
    /// Stop after this many requests have completed or failed.
    pub requests: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Open loop: requests started per second, on a fixed schedule.
    pub rate: Option<f64>,
    /// Reuse connections for many requests.
    pub keep_alive: bool,
    /// Event-loop threads; load (concurrency, requests, rate) is split between them.
    pub threads: usize,
    /// A connect that has not finished by then fails.
    pub connect_timeout: Duration,
    /// A request not answered in full by then (counted from its start) fails.
    pub request_timeout: Duration,
    /// Extra request header lines, `Name: value`, without CR or LF.
    pub headers: Vec<String>,
}

impl Config {
    /// A closed-loop run of one connection at a time against `url`, bounded by 10 s.
    pub fn new(url: Url) -> Config {
        Config {
            url,
            concurrency: 1,
            requests: None,
            duration: Some(Duration::from_secs(10)),
            rate: None,
            keep_alive: false,
            threads: 1,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            headers: Vec::new(),
        }
    }

    /// Checks the combination of settings (each one alone is checked while parsing).
    pub fn validate(&self) -> Result<(), UsageError> {
        if self.requests.is_none() && self.duration.is_none() {
            return Err(UsageError("give -n or -t: a run must end by itself".into()));
        }
        if self.threads > self.concurrency {
            return Err(UsageError(format!(
                "--threads {} is more than -c {}: each thread needs a connection",
                self.threads, self.concurrency
            )));
        }
        Ok(())
    }
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Print [`USAGE`].
    Help,
    /// Run the load.
    Run {
        /// The run.
        config: Config,
        /// Print one JSON object instead of text.
        json: bool,
    },
}

fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, UsageError> {
    let value = value.ok_or_else(|| UsageError(format!("{flag} needs a value")))?;
    value.parse().map_err(|_| UsageError(format!("{flag}: not a valid number: {value:?}")))
}

fn in_range<T: PartialOrd + fmt::Display>(
    flag: &str,
    value: T,
    low: T,
    high: T,
) -> Result<T, UsageError> {
    if value < low || value > high {
        return Err(UsageError(format!("{flag}: {value} is outside {low}..={high}")));
    }
    Ok(value)
}

fn seconds(flag: &str, value: Option<String>, most: f64) -> Result<Duration, UsageError> {
    let secs: f64 = number(flag, value)?;
    if !(secs > 0.0 && secs <= most) {
        return Err(UsageError(format!("{flag}: {secs} is not in (0, {most}] seconds")));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let mut url = None;
    let mut concurrency = None;
    let mut requests = None;
    let mut duration = None;
    let mut rate = None;
    let mut keep_alive = false;
    let mut threads = 1;
    let mut connect_timeout = Duration::from_secs(5);
    let mut request_timeout = Duration::from_secs(30);
    let mut headers = Vec::new();
    let mut json = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-n" | "--requests" => {
                requests = Some(in_range(&arg, number(&arg, args.next())?, 1, u64::MAX)?);
            }
            "-c" | "--concurrency" => {
                concurrency = Some(in_range(&arg, number(&arg, args.next())?, 1, 1_000_000)?);
            }
            "-t" | "--time" => duration = Some(seconds(&arg, args.next(), 86_400.0)?),
            "--rate" => {
                let value: f64 = number(&arg, args.next())?;
                if !(value > 0.0 && value <= 1e8) {
                    return Err(UsageError(format!("--rate: {value} is not in (0, 1e8]")));
                }
                rate = Some(value);
            }
            "-k" | "--keep-alive" => keep_alive = true,
            "--threads" => threads = in_range(&arg, number(&arg, args.next())?, 1, 1024)?,
            "--connect-timeout" => connect_timeout = seconds(&arg, args.next(), 3600.0)?,
            "--timeout" => request_timeout = seconds(&arg, args.next(), 3600.0)?,
            "-H" | "--header" => {
                let header =
                    args.next().ok_or_else(|| UsageError(format!("{arg} needs a value")))?;
                let valid_name = header.split_once(':').is_some_and(|(name, _)| {
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic())
                });
                if !valid_name || header.bytes().any(|b| b == b'\r' || b == b'\n') {
                    return Err(UsageError(format!("{arg}: {header:?} is not 'Name: value'")));
                }
                headers.push(header);
            }
            "--json" => json = true,
            other if other.starts_with('-') => {
                return Err(UsageError(format!("unknown option {other:?} (see --help)")));
            }
            _ if url.is_some() => return Err(UsageError(format!("a second URL: {arg:?}"))),
            _ => url = Some(Url::parse(&arg)?),
        }
    }
    let url = url.ok_or_else(|| UsageError("no URL given (see --help)".into()))?;
    let mut config = Config::new(url);
    config.concurrency = concurrency.unwrap_or(if rate.is_some() { 1000 } else { 1 });
    config.requests = requests;
    config.duration = match (requests, duration) {
        (None, None) => Some(Duration::from_secs(10)),
        (_, duration) => duration,
    };
    config.rate = rate;
    config.keep_alive = keep_alive;
    config.threads = threads;
    config.connect_timeout = connect_timeout;
    config.request_timeout = request_timeout;
    config.headers = headers;
    config.validate()?;
    Ok(Command::Run { config, json })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, UsageError> {
        parse_args(line.split_whitespace().map(str::to_owned))
    }

    fn config(line: &str) -> (Config, bool) {
        match parse(line) {
            Ok(Command::Run { config, json }) => (config, json),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn ab_style_command_line() {
        let (config, json) = config("-n 20000 -c 50 http://10.0.0.2:80/index.html");
        assert_eq!(config.requests, Some(20000));
        assert_eq!(config.concurrency, 50);
        assert_eq!(config.duration, None, "a count bound alone sets no time bound");
        assert!(!config.keep_alive && !json && config.rate.is_none());
        assert_eq!(
            config.url,
            Url { host: "10.0.0.2".into(), port: 80, path: "/index.html".into() }
        );
    }

    #[test]
    fn every_option_lands_in_the_config() {
        let (config, json) = config(
            "--json -k --threads 2 -c 100 -t 2.5 --rate 5000 --connect-timeout 1 --timeout 0.5 \
             -H X-A:1 http://h:8080",
        );
        assert!(json && config.keep_alive);
        assert_eq!(config.threads, 2);
        assert_eq!(config.concurrency, 100);
        assert_eq!(config.duration, Some(Duration::from_millis(2500)));
        assert_eq!(config.rate, Some(5000.0));
        assert_eq!(config.connect_timeout, Duration::from_secs(1));
        assert_eq!(config.request_timeout, Duration::from_millis(500));
        assert_eq!(config.headers, vec!["X-A:1".to_owned()]);
        assert_eq!(config.url.path, "/");
    }

    #[test]
    fn a_run_without_bounds_gets_ten_seconds() {
        let (config, _) = config("http://h/");
        assert_eq!((config.requests, config.duration), (None, Some(Duration::from_secs(10))));
        assert_eq!(config.concurrency, 1);
    }

    #[test]
    fn rate_mode_defaults_to_a_large_connection_cap() {
        assert_eq!(config("--rate 100 http://h/").0.concurrency, 1000);
        assert_eq!(config("--rate 100 -c 7 http://h/").0.concurrency, 7);
    }

    #[test]
    fn invalid_command_lines_are_refused_with_a_reason() {
        for line in [
            "",
            "-n 0 http://h/",
            "-n many http://h/",
            "-c 0 http://h/",
            "-c",
            "-t 0 http://h/",
            "-t -1 http://h/",
            "--rate 0 http://h/",
            "--rate NaN http://h/",
            "--threads 4 -c 2 http://h/",
            "--timeout 0 http://h/",
            "-H NoColon http://h/",
            "-H :empty-name http://h/",
            "--bogus http://h/",
            "http://a/ http://b/",
            "https://h/",
        ] {
            let result = parse(line);
            assert!(matches!(&result, Err(e) if !e.0.is_empty()), "{line:?} gave {result:?}");
        }
        assert_eq!(parse("-n 1 --help http://h/"), Ok(Command::Help));
    }

    #[test]
    fn urls_parse_into_host_port_and_path() {
        let cases = [
            ("http://10.0.0.2/index.html", "10.0.0.2", 80, "/index.html"),
            ("http://10.0.0.2:8080", "10.0.0.2", 8080, "/"),
            ("HTTP://Example.com:81/a?b=c", "Example.com", 81, "/a?b=c"),
            ("http://h?q", "h", 80, "/?q"),
            ("http://h/p#frag", "h", 80, "/p"),
            ("http://[::1]:8000/x", "[::1]", 8000, "/x"),
        ];
        for (text, host, port, path) in cases {
            let url = Url::parse(text).unwrap();
            assert_eq!(
                (url.host.as_str(), url.port, url.path.as_str()),
                (host, port, path),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_urls_are_refused() {
        for text in [
            "10.0.0.2/index.html",
            "ftp://h/",
            "http://",
            "http:///path",
            "http://h:0/",
            "http://h:65536/",
            "http://h:port/",
            "http://user@h/",
            "http://[::1/",
            "http://[::1]x/",
            "http://h/a b",
            "http://h o/",
        ] {
            assert!(Url::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn host_header_names_the_port_only_when_not_80() {
        assert_eq!(Url::parse("http://h/").unwrap().host_header(), "h");
        assert_eq!(Url::parse("http://h:8080/").unwrap().host_header(), "h:8080");
        assert_eq!(Url::parse("http://[::1]:8080/").unwrap().authority(), "[::1]:8080");
    }
}
