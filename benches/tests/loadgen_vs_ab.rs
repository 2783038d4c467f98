//! `loadgen` and ApacheBench (`ab`) against the same lighttpd on the Linux stack: both see
//! every request answered, with the same bodies, so what one of them reports about a server
//! can be set beside what the other does.
//!
//! Topology: lighttpd runs in a server namespace on one end of a veth pair, the clients in a
//! client namespace on the other end; the test creates both namespaces and uses addresses
//! only inside them. Needs root, `lighttpd` and `ab` (Debian: `lighttpd`, `apache2-utils`;
//! scripts/test.sh installs them) and skips with a message otherwise.
//!
//! Only correctness is asserted here: the shared machine makes timing assertions
//! meaningless. The throughput comparison is a benchmark (scripts/bench-loadgen.sh,
//! BENCHMARKS.md "Load generator").

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ixgbe_user::linux::netns::{NetNamespace, VethPair, move_into, skip_unless_root, unique_name};
use netpop_benches::loadgen::{Config, Summary, Url, run};

const CLIENT_ADDRESS: &str = "10.78.0.1";
const SERVER_ADDRESS: &str = "10.78.0.2";
const PORT: u16 = 80;
const BODY: &[u8] = b"abc\n";
const REQUESTS: u64 = 20_000;
const CONCURRENCY: usize = 50;

/// Where `program` is, looking in PATH and the sbin directories a non-login root shell may
/// lack.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The two namespaces and the veth pair between them, removed on drop.
struct Topology {
    client: NetNamespace,
    server: NetNamespace,
    _veth: VethPair,
}

impl Topology {
    fn create() -> Topology {
        let server = NetNamespace::create(&unique_name("lgs")).unwrap();
        let client = NetNamespace::create(&unique_name("lgc")).unwrap();
        let veth = VethPair::create(&unique_name("lgc"), &unique_name("lgs"), &server, 1).unwrap();
        move_into(veth.local(), &client).unwrap();
        client.ip(&["addr", "add", &format!("{CLIENT_ADDRESS}/24"), "dev", veth.local()]).unwrap();
        client.ip(&["link", "set", veth.local(), "up"]).unwrap();
        server.ip(&["addr", "add", &format!("{SERVER_ADDRESS}/24"), "dev", veth.peer()]).unwrap();
        Topology { client, server, _veth: veth }
    }
}

/// lighttpd serving a 4-byte index.html from a temporary directory, killed and cleaned up
/// on drop whether or not the test passed.
struct Lighttpd {
    child: Child,
    dir: PathBuf,
}

impl Lighttpd {
    fn start(namespace: &NetNamespace, program: &Path) -> Lighttpd {
        let dir = std::env::temp_dir().join(unique_name("lgt"));
        fs::create_dir_all(dir.join("www")).unwrap();
        fs::write(dir.join("www/index.html"), BODY).unwrap();
        let config = format!(
            "server.document-root = \"{dir}/www\"\n\
             server.bind = \"{SERVER_ADDRESS}\"\n\
             server.port = {PORT}\n\
             server.pid-file = \"{dir}/lighttpd.pid\"\n\
             server.errorlog = \"{dir}/error.log\"\n\
             server.max-connections = 1024\n\
             server.max-fds = 2048\n\
             index-file.names = ( \"index.html\" )\n\
             mimetype.assign = ( \".html\" => \"text/html\" )\n",
            dir = dir.display()
        );
        let config_path = dir.join("lighttpd.conf");
        fs::write(&config_path, config).unwrap();
        // `ip netns exec` execs the program after joining the namespace, so the child is
        // lighttpd itself and killing it stops the server.
        let child = Command::new("ip")
            .args(["netns", "exec", namespace.name()])
            .arg(program)
            .arg("-D")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Lighttpd { child, dir }
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Lighttpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Waits until something accepts connections on the server address, from the client side.
fn wait_until_listening(client: &NetNamespace, server: &mut Lighttpd) {
    let address: SocketAddr = format!("{SERVER_ADDRESS}:{PORT}").parse().unwrap();
    let started = Instant::now();
    loop {
        let connected = client
            .run_inside(|| TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok())
            .unwrap();
        if connected {
            return;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("lighttpd exited with {status}: {}", server.error_log());
        }
        assert!(started.elapsed() < Duration::from_secs(20), "lighttpd never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The figures read from ab's report.
#[derive(Debug)]
struct AbReport {
    complete: u64,
    failed: u64,
    non_2xx: u64,
    html_bytes: u64,
    requests_per_sec: f64,
}

fn ab_field(report: &str, label: &str) -> Option<String> {
    let line = report.lines().find(|line| line.starts_with(label))?;
    let value = line.get(label.len()..)?.split_whitespace().next()?;
    Some(value.to_owned())
}

fn parse_ab(report: &str) -> AbReport {
    let number = |label: &str| -> u64 {
        ab_field(report, label).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            panic!("no {label:?} in ab's report:\n{report}");
        })
    };
    AbReport {
        complete: number("Complete requests:"),
        failed: number("Failed requests:"),
        // ab prints this line only when there were such responses.
        non_2xx: ab_field(report, "Non-2xx responses:").map_or(0, |v| v.parse().unwrap()),
        html_bytes: number("HTML transferred:"),
        requests_per_sec: ab_field(report, "Requests per second:")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no requests/s in ab's report:\n{report}")),
    }
}

fn run_ab(client: &NetNamespace, ab: &Path, url: &str) -> AbReport {
    let ab = ab.to_string_lossy();
    let report = client
        .exec(&ab, &["-q", "-n", &REQUESTS.to_string(), "-c", &CONCURRENCY.to_string(), url])
        .unwrap();
    parse_ab(&report)
}

fn assert_loadgen_correct(summary: &Summary, requests: u64) {
    assert_eq!(summary.failed(), 0, "{summary}");
    assert_eq!(summary.completed, requests, "{summary}");
    assert_eq!(summary.unfinished, 0, "{summary}");
    assert_eq!(summary.statuses.len(), 1, "{summary}");
    assert_eq!(summary.statuses.get(&200), Some(&requests), "{summary}");
    assert_eq!(summary.body_bytes, BODY.len() as u64 * requests, "{summary}");
    assert_eq!(summary.latency.count, requests);
    for p in [summary.latency, summary.connect_time] {
        assert!(p.p50 > Duration::ZERO, "{p:?}");
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p99_9 && p.p99_9 <= p.max, "{p:?}");
    }
}

#[test]
fn loadgen_and_ab_see_the_same_lighttpd() {
    if skip_unless_root("loadgen_and_ab_see_the_same_lighttpd") {
        return;
    }
    let (Some(lighttpd), Some(ab)) = (find_program("lighttpd"), find_program("ab")) else {
        println!(
            "SKIPPED loadgen_and_ab_see_the_same_lighttpd: needs lighttpd and ab \
             (apt-get install lighttpd apache2-utils; scripts/test.sh does this as root)"
        );
        return;
    };
    let topology = Topology::create();
    let mut server = Lighttpd::start(&topology.server, &lighttpd);
    wait_until_listening(&topology.client, &mut server);

    let url = format!("http://{SERVER_ADDRESS}:{PORT}/index.html");
    let mut config = Config::new(Url::parse(&url).unwrap());
    config.concurrency = CONCURRENCY;
    config.requests = Some(REQUESTS);
    config.duration = None;

    // Alternate the two so neither always runs on a warmer (or busier) machine.
    for round in 0..2 {
        let ab_report = run_ab(&topology.client, &ab, &url);
        assert_eq!(ab_report.complete, REQUESTS, "round {round}: {ab_report:?}");
        assert_eq!(ab_report.failed, 0, "round {round}: {ab_report:?}");
        assert_eq!(ab_report.non_2xx, 0, "round {round}: {ab_report:?}");
        assert_eq!(ab_report.html_bytes, BODY.len() as u64 * REQUESTS, "{ab_report:?}");

        let summary = topology.client.run_inside(|| run(&config, |_| {})).unwrap().unwrap();
        assert_loadgen_correct(&summary, REQUESTS);
        assert_eq!(summary.connections, REQUESTS, "one connection per request, as ab");
        assert_eq!(summary.body_bytes, ab_report.html_bytes, "both read every body in full");
        println!(
            "round {round}: ab {:.0} req/s, loadgen {:.0} req/s (figures only; see \
             scripts/bench-loadgen.sh for the comparison)",
            ab_report.requests_per_sec,
            summary.requests_per_sec()
        );
    }

    // Keep-alive: lighttpd closes a connection after its max-keep-alive-requests (default
    // 1000) with `Connection: close`; loadgen opens a new one and nothing fails.
    let mut kept = config.clone();
    kept.keep_alive = true;
    kept.requests = Some(5_000);
    let summary = topology.client.run_inside(|| run(&kept, |_| {})).unwrap().unwrap();
    assert_loadgen_correct(&summary, 5_000);
    assert!(summary.connections >= CONCURRENCY as u64, "{summary}");
    assert!(summary.connections < 5_000 / 10, "connections were reused: {summary}");

    // The binary, as scripts run it, from inside the client namespace.
    let output = topology
        .client
        .exec(env!("CARGO_BIN_EXE_loadgen"), &["-n", "1000", "-c", "10", "--json", &url])
        .unwrap();
    assert!(output.contains("\"completed\":1000,\"failed\":0"), "{output}");
    assert!(server.child.try_wait().unwrap().is_none(), "lighttpd died: {}", server.error_log());
}
