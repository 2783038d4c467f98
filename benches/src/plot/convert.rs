//! Result files for the benchmark scripts that print text only: `scripts/bench-loadgen.sh`
//! (one line per run) and `scripts/bench-tcp.sh` (Markdown tables). `plot convert` turns
//! their output into the JSON [`super::figures`] reads, so every benchmark leaves a
//! `bench-results/<name>.json`. When a script gains a JSON mode of its own, `bench-all.sh`
//! should use it and this adapter can go.

use super::json::{number, quote};

/// `scripts/bench-loadgen.sh` output as JSON: `setup` (its "each run:" line) and `runs[]`
/// with `client`, `round`, `requests_per_s`, `failed`, `p50_ms`, `p99_ms`, `cpu_s_per_10k`,
/// from lines shaped `client round req/s failed p50 p99 cpu`.
pub fn loadgen_text(text: &str) -> String {
    let mut runs = Vec::new();
    let mut setup = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("each run: ") {
            setup = Some(rest.trim().to_string());
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [client @ ("ab" | "loadgen"), round, rps, failed, p50, p99, cpu] = fields[..] else {
            continue;
        };
        let Ok(round) = round.parse::<u32>() else { continue };
        let value = |s: &str| number(s.parse::<f64>().unwrap_or(f64::NAN));
        runs.push(format!(
            "{{\"client\":{},\"round\":{round},\"requests_per_s\":{},\"failed\":{},\
             \"p50_ms\":{},\"p99_ms\":{},\"cpu_s_per_10k\":{}}}",
            quote(client),
            value(rps),
            value(failed),
            value(p50),
            value(p99),
            value(cpu)
        ));
    }
    format!(
        "{{\"benchmark\":\"loadgen_vs_ab\",\"source\":\"scripts/bench-loadgen.sh text\",\
         \"setup\":{},\"runs\":[{}]}}\n",
        setup.map_or_else(|| "null".to_string(), |s| quote(&s)),
        runs.join(",")
    )
}

/// The cells of a Markdown table row, trimmed; `None` for other lines.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// A table cell as a number: thousands separators dropped; `–`, `-` or text give `None`.
fn cell_number(cell: &str) -> Option<f64> {
    let cleaned: String = cell.chars().filter(|&c| c != ',' && c != '*').collect();
    cleaned.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// The rows of the Markdown table whose header row starts with `header` cells, as maps from
/// header cell to row cell.
fn table<'a>(text: &'a str, header: &[&str]) -> Vec<Vec<(&'a str, &'a str)>> {
    let mut lines = text.lines();
    let mut rows = Vec::new();
    while let Some(line) = lines.next() {
        let Some(names) = cells(line) else { continue };
        if names.len() < header.len() || names[..header.len()] != *header {
            continue;
        }
        // The separator row, then data rows until the table ends.
        lines.next();
        for row in lines.by_ref() {
            let Some(values) = cells(row) else { break };
            rows.push(names.iter().copied().zip(values).collect());
        }
        break;
    }
    rows
}

fn lookup<'a>(row: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    row.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// `scripts/bench-tcp.sh` output as JSON: `header` (its first line), `workloads[]` with
/// `workload`, `unit` and the median of `tcp-core`, `smoltcp` and `linux` from the summary
/// table, and `callgrind[]` with `stack`, `at_a_time`, `ir_per_lifecycle` from the
/// instruction table.
pub fn tcp_text(text: &str) -> String {
    let header = text.lines().find(|l| l.starts_with("# ")).map(str::trim);
    let workloads: Vec<String> = table(text, &["workload", "unit", "tcp-core", "smoltcp"])
        .iter()
        .map(|row| {
            let stack =
                |key: &str| number(lookup(row, key).and_then(cell_number).unwrap_or(f64::NAN));
            format!(
                "{{\"workload\":{},\"unit\":{},\"tcp-core\":{},\"smoltcp\":{},\"linux\":{}}}",
                quote(lookup(row, "workload").unwrap_or("")),
                quote(lookup(row, "unit").unwrap_or("")),
                stack("tcp-core"),
                stack("smoltcp"),
                stack("Linux (lo)")
            )
        })
        .collect();
    let callgrind: Vec<String> = table(text, &["stack", "at a time"])
        .iter()
        .filter_map(|row| {
            let per = row.iter().find(|(k, _)| k.starts_with("Ir per lifecycle"))?.1;
            Some(format!(
                "{{\"stack\":{},\"at_a_time\":{},\"ir_per_lifecycle\":{}}}",
                quote(lookup(row, "stack")?),
                number(lookup(row, "at a time").and_then(cell_number).unwrap_or(f64::NAN)),
                number(cell_number(per).unwrap_or(f64::NAN))
            ))
        })
        .collect();
    format!(
        "{{\"benchmark\":\"tcp_compare\",\"source\":\"scripts/bench-tcp.sh text\",\"header\":{},\
         \"workloads\":[{}],\"callgrind\":[{}]}}\n",
        header.map_or_else(|| "null".to_string(), quote),
        workloads.join(","),
        callgrind.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::super::json::Value;
    use super::*;

    const LOADGEN: &str = "\
lighttpd 1.4.69, ab 2.3, 2 CPUs, 6.18.44
each run: -n 20000 -c 50 (one request per connection) http://10.79.0.2:80/index.html (client CPU any, lighttpd CPU any)
client   round      req/s   failed    p50 ms    p99 ms    CPU s/10k
ab       1          36394        0         1         3        0.270
loadgen  1          37890        0     0.812     2.104        0.250
ab       2          35000        0         1         4        0.280
mean req/s: ab 35697, loadgen 37890; ratio of means loadgen / ab = 1.061
";

    #[test]
    fn loadgen_lines_become_runs() {
        let v = Value::parse(&loadgen_text(LOADGEN)).unwrap();
        assert!(v.string("setup").unwrap().starts_with("-n 20000 -c 50"));
        let runs = v.array("runs");
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[1].string("client"), Some("loadgen"));
        assert_eq!(runs[1].number("round"), Some(1.0));
        assert_eq!(runs[1].number("requests_per_s"), Some(37890.0));
        assert_eq!(runs[1].number("p99_ms"), Some(2.104));
        assert_eq!(runs[2].number("p99_ms"), Some(4.0));
    }

    const TCP: &str = "\
# tcp-core in memory — 2026-11-21 22:58 UTC, commit a41dedb, smoltcp 0.14.0, Linux 6.18, 2 CPUs

| workload | unit | tcp-core | smoltcp | Linux (lo) | tcp-core / smoltcp | tcp-core / Linux | target |
|---|---|---:|---:|---:|---:|---:|---|
| short connections, 1 at a time | connections/s | 293,779 | 715,670 | 42,928 | 0.41x | 6.84x | ≥ 2x smoltcp: **not met** |
| short connections, 1,000 concurrent | connections/s | 239,997 | 170,238 | – | 1.41x | – | ≥ 2x smoltcp: **not met** |
| bulk, 256 MiB one way, MTU 1500 | Gbit/s | 21.45 | 31.87 | 23.62 | 0.67x | 0.91x | ≥ 1x smoltcp: **not met** |

Every run:

| workload | stack | runs | median | min | max | CPU share | frames / unit | timer skips | failures |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|
| short connections, 1 at a time | tcp-core | 3 | 293,779 | 291,682 | 294,310 | 100% | 6.0 | 0 | 0 |

| stack | at a time | Ir, N = 1000 | Ir, N = 0 | Ir per lifecycle |
|---|---:|---:|---:|---:|
| tcp-core | 1 | 33744222 | 312003 | 33432 |
| smoltcp | 1000 | 472820438 | 400188164 | 72632 |
";

    #[test]
    fn tcp_tables_become_workloads_and_instruction_counts() {
        let v = Value::parse(&tcp_text(TCP)).unwrap();
        assert!(v.string("header").unwrap().contains("commit a41dedb"));
        let w = v.array("workloads");
        assert_eq!(w.len(), 3, "the detail table is not a summary row");
        assert_eq!(w[0].string("workload"), Some("short connections, 1 at a time"));
        assert_eq!(w[0].number("tcp-core"), Some(293_779.0));
        assert_eq!(w[0].number("linux"), Some(42_928.0));
        assert_eq!(w[1].get("linux"), Some(&Value::Null), "a dash is no figure");
        assert_eq!(w[2].string("unit"), Some("Gbit/s"));
        assert_eq!(w[2].number("smoltcp"), Some(31.87));
        let c = v.array("callgrind");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].string("stack"), Some("smoltcp"));
        assert_eq!(c[1].number("at_a_time"), Some(1000.0));
        assert_eq!(c[1].number("ir_per_lifecycle"), Some(72_632.0));
    }

    #[test]
    fn unrelated_text_gives_empty_results() {
        let v = Value::parse(&tcp_text("build failed\n| a | b |\n")).unwrap();
        assert!(v.array("workloads").is_empty() && v.array("callgrind").is_empty());
        assert_eq!(v.get("header"), Some(&Value::Null));
        let v = Value::parse(&loadgen_text("ab 1 x\n")).unwrap();
        assert!(v.array("runs").is_empty());
    }
}
