//! One figure per benchmark, built from its result file in `bench-results/` (see
//! [`super::RESULTS`] for the names and shapes):
//! - `pktio`: Mpps per backend, TX and RX bars;
//! - `loadgen`: loadgen against ab, requests/s and p99 per round;
//! - `tcp`: tcp-core, smoltcp and Linux, connections/s (1 and 1,000 in flight), bulk
//!   Gbit/s, and callgrind's instructions per connection lifecycle;
//! - `e2e`, `balance`: requests/s and p99 against concurrency or instances, one line per
//!   server and stack ([`sweep`]).

use std::fmt;

use super::chart::{Figure, Kind, Panel, Series};
use super::json::Value;

/// Why a result file could not be drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FigureError {
    /// No figure is defined for this benchmark name.
    UnknownBenchmark(String),
    /// The file holds nothing to draw (no results, or a field every entry needs is absent).
    NoData(String),
}

impl fmt::Display for FigureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FigureError::UnknownBenchmark(name) => write!(f, "no figure is defined for {name:?}"),
            FigureError::NoData(why) => write!(f, "nothing to draw: {why}"),
        }
    }
}

impl std::error::Error for FigureError {}

/// The figure for benchmark `name` from its parsed result file and, when present, the
/// run's metadata (`bench-all.sh` writes `command`, `date`, `commit`, `machine`,
/// `load_average`, `seconds`) for the footer.
pub fn figure_for(name: &str, result: &Value, meta: Option<&Value>) -> Result<Figure, FigureError> {
    let mut figure = match name {
        "pktio" => pktio(result)?,
        "loadgen" => loadgen(result)?,
        "tcp" => tcp(result)?,
        "e2e" => sweep(result, "End to end: servers on netpop and on Linux")?,
        "balance" => sweep(result, "Flow-group balancing")?,
        other => return Err(FigureError::UnknownBenchmark(other.to_string())),
    };
    figure.footer.extend(footer(meta));
    Ok(figure)
}

/// Footer lines from the run's metadata: the command, then when and where.
fn footer(meta: Option<&Value>) -> Vec<String> {
    let Some(meta) = meta else {
        return vec!["Regenerate: scripts/bench-all.sh".into()];
    };
    let mut lines = Vec::new();
    if let Some(command) = meta.string("command") {
        lines.push(format!("Command: {command}   (all figures: scripts/bench-all.sh)"));
    }
    let mut when = Vec::new();
    if let Some(date) = meta.string("date") {
        when.push(date.to_string());
    }
    if let Some(commit) = meta.string("commit") {
        when.push(format!("commit {commit}"));
    }
    if let Some(machine) = meta.string("machine") {
        when.push(machine.to_string());
    }
    if let Some(load) = meta.string("load_average") {
        when.push(format!(
            "load average {load} (1, 5, 15 min) at the start: a shared machine, noisy figures"
        ));
    }
    if !when.is_empty() {
        lines.push(when.join(" · "));
    }
    lines
}

fn nonempty<T>(items: Vec<T>, what: &str) -> Result<Vec<T>, FigureError> {
    if items.is_empty() { Err(FigureError::NoData(what.to_string())) } else { Ok(items) }
}

/// `pktio --json`: `results[]` with `backend`, `direction` (`tx`/`rx`), `mpps`; `skipped[]`
/// with `backend`, `reason`.
fn pktio(result: &Value) -> Result<Figure, FigureError> {
    let rows = nonempty(result.array("results").to_vec(), "pktio: no results")?;
    let mut backends: Vec<String> = Vec::new();
    for row in &rows {
        if let Some(b) = row.string("backend").filter(|b| !backends.iter().any(|x| x == b)) {
            backends.push(b.to_string());
        }
    }
    let series = ["tx", "rx"]
        .iter()
        .map(|&dir| {
            let values = backends
                .iter()
                .map(|backend| {
                    rows.iter()
                        .find(|r| {
                            r.string("backend") == Some(backend)
                                && r.string("direction") == Some(dir)
                        })
                        .and_then(|r| r.number("mpps"))
                })
                .collect();
            Series::new(dir.to_uppercase(), values)
        })
        .collect();
    let mut subtitle = vec![format!(
        "One queue per backend, {} B frames ({} B on the wire), batch {}, {} s counted after {} s warm-up; all backends in one process, one after the other.",
        result.number("frame_len").unwrap_or(60.0),
        result.number("frame_len").unwrap_or(60.0) + 4.0,
        result.number("batch").unwrap_or(32.0),
        result.number("duration_s").unwrap_or(f64::NAN),
        result.number("warmup_s").unwrap_or(f64::NAN),
    )];
    for skipped in result.array("skipped") {
        subtitle.push(format!(
            "Skipped {}: {}",
            skipped.string("backend").unwrap_or("?"),
            skipped.string("reason").unwrap_or("?")
        ));
    }
    Ok(Figure {
        title: "Packet I/O per queue (ixgbe-user backends)".into(),
        subtitle,
        footer: Vec::new(),
        panels: vec![Panel {
            title: "Packets per second, 64 B frames".into(),
            y_label: "Mpps".into(),
            x_label: String::new(),
            categories: backends,
            series,
            kind: Kind::Bars,
        }],
        columns: 1,
    })
}

/// `plot convert loadgen`: `runs[]` with `client` (`ab`/`loadgen`), `round`,
/// `requests_per_s`, `p99_ms`; `setup` (the script's "each run" line).
fn loadgen(result: &Value) -> Result<Figure, FigureError> {
    let runs = nonempty(result.array("runs").to_vec(), "loadgen: no runs")?;
    let mut rounds: Vec<u64> =
        runs.iter().filter_map(|r| r.number("round")).map(|r| r as u64).collect();
    rounds.sort_unstable();
    rounds.dedup();
    let categories: Vec<String> = rounds.iter().map(|r| format!("round {r}")).collect();
    let column = |client: &str, field: &str| -> Series {
        let values = rounds
            .iter()
            .map(|&round| {
                runs.iter()
                    .find(|r| {
                        r.string("client") == Some(client)
                            && r.number("round") == Some(round as f64)
                    })
                    .and_then(|r| r.number(field))
            })
            .collect();
        Series::new(client, values)
    };
    let panel = |title: &str, y_label: &str, field: &str| Panel {
        title: title.into(),
        y_label: y_label.into(),
        x_label: String::new(),
        categories: categories.clone(),
        series: vec![column("ab", field), column("loadgen", field)],
        kind: Kind::Bars,
    };
    let mut subtitle = Vec::new();
    if let Some(setup) = result.string("setup") {
        subtitle.push(format!("lighttpd on the Linux stack across a veth pair; {setup}"));
    }
    subtitle.push(
        "Each round runs ab, then loadgen. p99: loadgen to the last body byte (µs resolution), ab from connect to close (whole ms): compare latencies within a client, not across.".into(),
    );
    Ok(Figure {
        title: "Load generator: loadgen against ApacheBench (ab)".into(),
        subtitle,
        footer: Vec::new(),
        panels: vec![
            panel("Requests per second", "requests/s", "requests_per_s"),
            panel("p99 latency", "p99 (ms)", "p99_ms"),
        ],
        columns: 2,
    })
}

/// The stacks of the in-memory comparison, as (JSON key, legend name).
const TCP_STACKS: [(&str, &str); 3] =
    [("tcp-core", "tcp-core"), ("smoltcp", "smoltcp"), ("linux", "Linux (loopback)")];

/// `plot convert tcp`: `workloads[]` with `workload`, `unit` and a median per stack
/// (`tcp-core`, `smoltcp`, `linux`); `callgrind[]` with `stack`, `at_a_time`,
/// `ir_per_lifecycle`. One panel per unit, then one for the instruction counts.
fn tcp(result: &Value) -> Result<Figure, FigureError> {
    let workloads = result.array("workloads");
    let mut units: Vec<&str> = Vec::new();
    for w in workloads {
        if let Some(unit) = w.string("unit").filter(|u| !units.contains(u)) {
            units.push(unit);
        }
    }
    let mut panels: Vec<Panel> = units
        .iter()
        .map(|&unit| {
            let rows: Vec<&Value> =
                workloads.iter().filter(|w| w.string("unit") == Some(unit)).collect();
            let categories = rows
                .iter()
                .map(|w| {
                    let label = w.string("workload").unwrap_or("?");
                    label.strip_prefix("short connections, ").unwrap_or(label).to_string()
                })
                .collect();
            let series = TCP_STACKS
                .iter()
                .map(|&(key, name)| Series::new(name, rows.iter().map(|w| w.number(key)).collect()))
                .collect();
            let title = if unit == "connections/s" {
                "Short connections (SYN, 4 B each way, close)".to_string()
            } else if unit == "Gbit/s" {
                "Bulk transfer, one connection".to_string()
            } else {
                unit.to_string()
            };
            Panel {
                title,
                y_label: format!("{unit} per CPU-second"),
                x_label: String::new(),
                categories,
                series,
                kind: Kind::Bars,
            }
        })
        .collect();
    let callgrind = result.array("callgrind");
    if !callgrind.is_empty() {
        let mut levels: Vec<u64> =
            callgrind.iter().filter_map(|r| r.number("at_a_time")).map(|n| n as u64).collect();
        levels.sort_unstable();
        levels.dedup();
        let series = TCP_STACKS[..2]
            .iter()
            .map(|&(key, name)| {
                let values = levels
                    .iter()
                    .map(|&level| {
                        callgrind
                            .iter()
                            .find(|r| {
                                r.string("stack") == Some(key)
                                    && r.number("at_a_time") == Some(level as f64)
                            })
                            .and_then(|r| r.number("ir_per_lifecycle"))
                    })
                    .collect();
                Series::new(name, values)
            })
            .collect();
        panels.push(Panel {
            title: "Instructions per connection lifecycle".into(),
            y_label: "instructions (callgrind)".into(),
            x_label: "connections at a time (lower is better)".into(),
            categories: levels
                .iter()
                .map(|&l| format!("{} at a time", crate::tcp::report::thousands(l)))
                .collect(),
            series,
            kind: Kind::Bars,
        });
    }
    let panels = nonempty(panels, "tcp: no workloads")?;
    let mut subtitle = vec![
        "Both ends of each stack on one pinned CPU, one thread; medians of the rounds, per CPU-second of that thread (higher is better).".to_string(),
    ];
    if let Some(header) = result.string("header") {
        subtitle.push(header.trim_start_matches("# ").to_string());
    }
    let columns = panels.len().min(3);
    Ok(Figure {
        title: "tcp-core in memory beside smoltcp and the Linux kernel".into(),
        subtitle,
        footer: Vec::new(),
        panels,
        columns,
    })
}

/// Keys that may name a point's line when it has no `series`, in legend order.
const SERIES_KEYS: [&str; 5] = ["server", "stack", "backend", "mode", "instances"];
/// Keys that may hold a point's position along x when it has no `x`, by preference.
const X_KEYS: [&str; 4] = ["x", "concurrency", "instances", "groups"];

/// The key that holds `point`'s position along x.
fn x_key(point: &Value) -> Option<&'static str> {
    X_KEYS.iter().copied().find(|k| point.get(k).is_some())
}

/// `point`'s position along x as a category label, and as a number when it is one.
fn x_of(point: &Value) -> Option<(String, Option<f64>)> {
    match point.get(x_key(point)?)? {
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
            let digits = crate::tcp::report::thousands(n.abs() as u64);
            Some((if *n < 0.0 { format!("-{digits}") } else { digits }, Some(*n)))
        }
        Value::Number(n) => Some((super::scale::format_label(*n), Some(*n))),
        Value::String(s) => Some((s.clone(), s.parse().ok())),
        _ => None,
    }
}

/// The line `point` belongs to: `series`, or the naming keys it has (not the x key) joined.
fn series_of(point: &Value) -> String {
    if let Some(s) = point.string("series") {
        return s.to_string();
    }
    let x = x_key(point);
    let parts: Vec<String> = SERIES_KEYS
        .iter()
        .filter(|&&k| Some(k) != x)
        .filter_map(|&k| match point.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if k == "instances" => {
                Some(format!("{n} instance{}", if *n == 1.0 { "" } else { "s" }))
            }
            _ => None,
        })
        .collect();
    if parts.is_empty() { "result".into() } else { parts.join(", ") }
}

/// The 99th percentile in milliseconds: `p99_ms`, or loadgen's `latency_us.p99`.
fn p99_ms(point: &Value) -> Option<f64> {
    point
        .number("p99_ms")
        .or_else(|| point.get("latency_us").and_then(|l| l.number("p99")).map(|us| us / 1000.0))
}

fn requests_per_s(point: &Value) -> Option<f64> {
    point.number("requests_per_s")
}

/// A sweep: `points[]` (or `results[]`/`runs[]`), each with a line name (`series`, or
/// `server`/`stack`/`backend`/`mode`/`instances` joined), a position (`x`, or
/// `concurrency`/`instances`/`groups`), `requests_per_s`, and the 99th percentile as
/// `p99_ms` or as loadgen's `latency_us.p99`; `x_label` names the x axis, `setup` and `title`
/// are optional. Repeated points are reduced to their median. Drawn as two line panels,
/// requests/s and p99 against x. This is the shape `scripts/bench-e2e.sh` and
/// `scripts/bench-balance.sh` are expected to write.
fn sweep(result: &Value, default_title: &str) -> Result<Figure, FigureError> {
    let points = ["points", "results", "runs"]
        .iter()
        .map(|key| result.array(key))
        .find(|a| !a.is_empty())
        .unwrap_or(&[]);
    let mut xs: Vec<(String, Option<f64>)> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut first_x_key = None;
    for point in points {
        let Some(x) = x_of(point) else { continue };
        first_x_key = first_x_key.or(x_key(point));
        if !xs.iter().any(|(label, _)| *label == x.0) {
            xs.push(x);
        }
        let name = series_of(point);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut xs = nonempty(xs, "sweep: no point has an x position")?;
    if xs.iter().all(|(_, n)| n.is_some()) {
        xs.sort_by(|a, b| a.1.unwrap_or(0.0).total_cmp(&b.1.unwrap_or(0.0)));
    }
    let categories: Vec<String> = xs.into_iter().map(|(label, _)| label).collect();
    let x_label =
        result.string("x_label").or(first_x_key.filter(|&k| k != "x")).unwrap_or("").to_string();
    let panel = |title: &str, y_label: &str, field: fn(&Value) -> Option<f64>| Panel {
        title: title.into(),
        y_label: y_label.into(),
        x_label: x_label.clone(),
        categories: categories.clone(),
        series: names
            .iter()
            .map(|name| {
                let values = categories
                    .iter()
                    .map(|x| {
                        let repeats: Vec<f64> = points
                            .iter()
                            .filter(|p| {
                                series_of(p) == *name && x_of(p).is_some_and(|(l, _)| l == *x)
                            })
                            .filter_map(field)
                            .collect();
                        crate::tcp::report::median(repeats)
                    })
                    .collect();
                Series::new(name.clone(), values)
            })
            .collect(),
        kind: Kind::Lines,
    };
    Ok(Figure {
        title: result.string("title").unwrap_or(default_title).to_string(),
        subtitle: result.string("setup").map(str::to_string).into_iter().collect(),
        footer: Vec::new(),
        panels: vec![
            panel("Requests per second", "requests/s", requests_per_s),
            panel("p99 latency", "p99 (ms)", p99_ms),
        ],
        columns: 2,
    })
}

#[cfg(test)]
mod tests {
    use super::super::xml_check::check_well_formed;
    use super::*;

    fn parse(text: &str) -> Value {
        Value::parse(text).unwrap()
    }

    #[test]
    fn pktio_draws_tx_and_rx_per_backend_and_lists_skipped_ones() {
        let result = parse(
            r#"{"benchmark":"pktio","frame_len":60,"batch":32,"warmup_s":0.5,"duration_s":3,
            "results":[{"backend":"82599 model link","direction":"tx","mpps":0.69},
                       {"backend":"82599 model link","direction":"rx","mpps":0.68},
                       {"backend":"AF_PACKET","direction":"tx","mpps":1.23}],
            "skipped":[{"backend":"AF_XDP","reason":"needs root"}]}"#,
        );
        let figure = figure_for("pktio", &result, None).unwrap();
        let panel = &figure.panels[0];
        assert_eq!(panel.categories, ["82599 model link", "AF_PACKET"]);
        assert_eq!(panel.series[0], Series::new("TX", vec![Some(0.69), Some(1.23)]));
        assert_eq!(panel.series[1], Series::new("RX", vec![Some(0.68), None]));
        assert!(figure.subtitle.iter().any(|l| l == "Skipped AF_XDP: needs root"));
        assert!(figure.subtitle[0].contains("3 s counted after 0.5 s warm-up"));
        check_well_formed(&figure.to_svg()).unwrap();
    }

    #[test]
    fn loadgen_pairs_the_clients_round_by_round() {
        let result = parse(
            r#"{"benchmark":"loadgen_vs_ab","setup":"-n 20000 -c 50","runs":[
            {"client":"ab","round":1,"requests_per_s":36394,"p99_ms":3},
            {"client":"loadgen","round":1,"requests_per_s":37890,"p99_ms":2.1},
            {"client":"ab","round":2,"requests_per_s":35000,"p99_ms":4}]}"#,
        );
        let figure = figure_for("loadgen", &result, None).unwrap();
        let [rps, p99] = &figure.panels[..] else { panic!("two panels") };
        assert_eq!(rps.categories, ["round 1", "round 2"]);
        assert_eq!(rps.series[0], Series::new("ab", vec![Some(36394.0), Some(35000.0)]));
        assert_eq!(rps.series[1], Series::new("loadgen", vec![Some(37890.0), None]));
        assert_eq!(p99.series[1].values, [Some(2.1), None]);
    }

    #[test]
    fn tcp_groups_workloads_by_unit_and_adds_instruction_counts() {
        let result = parse(
            r#"{"benchmark":"tcp_compare","workloads":[
            {"workload":"short connections, 1 at a time","unit":"connections/s","tcp-core":293779,"smoltcp":715670,"linux":42928},
            {"workload":"short connections, 1,000 concurrent","unit":"connections/s","tcp-core":239997,"smoltcp":170238,"linux":null},
            {"workload":"bulk, 256 MiB one way, MTU 1500","unit":"Gbit/s","tcp-core":21.45,"smoltcp":31.87,"linux":23.62}],
            "callgrind":[{"stack":"tcp-core","at_a_time":1,"ir_per_lifecycle":33432},
                         {"stack":"smoltcp","at_a_time":1,"ir_per_lifecycle":18115},
                         {"stack":"tcp-core","at_a_time":1000,"ir_per_lifecycle":35454}]}"#,
        );
        let figure = figure_for("tcp", &result, None).unwrap();
        assert_eq!(figure.panels.len(), 3);
        let churn = &figure.panels[0];
        assert_eq!(churn.categories, ["1 at a time", "1,000 concurrent"]);
        assert_eq!(churn.series[2], Series::new("Linux (loopback)", vec![Some(42928.0), None]));
        assert_eq!(figure.panels[1].series[1].values, [Some(31.87)]);
        let ir = &figure.panels[2];
        assert_eq!(ir.categories, ["1 at a time", "1,000 at a time"]);
        assert_eq!(ir.series[1], Series::new("smoltcp", vec![Some(18115.0), None]));
        check_well_formed(&figure.to_svg()).unwrap();
    }

    #[test]
    fn sweeps_sort_x_numerically_and_take_medians_of_repeats() {
        let result = parse(
            r#"{"benchmark":"e2e","x_label":"concurrency","points":[
            {"server":"lighttpd","stack":"netpop sim","concurrency":1000,"requests_per_s":9000,"latency_us":{"p99":8000}},
            {"server":"lighttpd","stack":"netpop sim","concurrency":100,"requests_per_s":10000,"p99_ms":2},
            {"server":"lighttpd","stack":"linux","concurrency":100,"requests_per_s":20000,"p99_ms":1},
            {"server":"lighttpd","stack":"linux","concurrency":100,"requests_per_s":30000,"p99_ms":3},
            {"server":"lighttpd","stack":"linux","concurrency":100,"requests_per_s":25000,"p99_ms":2}]}"#,
        );
        let figure = figure_for("e2e", &result, None).unwrap();
        let rps = &figure.panels[0];
        assert_eq!(rps.categories, ["100", "1,000"]);
        assert_eq!(rps.kind, Kind::Lines);
        assert_eq!(
            rps.series[0],
            Series::new("lighttpd, netpop sim", vec![Some(10000.0), Some(9000.0)])
        );
        assert_eq!(rps.series[1], Series::new("lighttpd, linux", vec![Some(25000.0), None]));
        assert_eq!(figure.panels[1].series[0].values, [Some(2.0), Some(8.0)]);
        check_well_formed(&figure.to_svg()).unwrap();
    }

    #[test]
    fn metadata_becomes_the_footer() {
        let meta = parse(
            r#"{"command":"scripts/bench-pktio.sh --json","date":"2026-11-22 00:10 UTC",
            "commit":"abc1234","machine":"2 vCPUs","load_average":"4.2"}"#,
        );
        let result = parse(r#"{"results":[{"backend":"a","direction":"tx","mpps":1}]}"#);
        let figure = figure_for("pktio", &result, Some(&meta)).unwrap();
        assert!(figure.footer[0].starts_with("Command: scripts/bench-pktio.sh --json"));
        assert!(figure.footer[1].contains("2026-11-22 00:10 UTC · commit abc1234 · 2 vCPUs"));
        assert!(figure.footer[1].contains("load average 4.2"));
    }

    #[test]
    fn empty_or_unknown_results_are_errors() {
        assert!(matches!(figure_for("pktio", &parse("{}"), None), Err(FigureError::NoData(_))));
        assert!(matches!(figure_for("tcp", &parse("{}"), None), Err(FigureError::NoData(_))));
        assert!(matches!(
            figure_for("e2e", &parse(r#"{"points":[{}]}"#), None),
            Err(FigureError::NoData(_))
        ));
        assert!(matches!(
            figure_for("nope", &parse("{}"), None),
            Err(FigureError::UnknownBenchmark(_))
        ));
    }
}
