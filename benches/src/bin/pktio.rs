//! `pktio`: packets per second per queue for the ixgbe-user backends (see
//! `netpop_benches::pktio`). Prints a table, or JSON with `--json`.

use std::process::ExitCode;
use std::time::Duration;

use netpop_benches::pktio::report::Report;
use netpop_benches::pktio::{RunConfig, Skipped, model, veth};

const USAGE: &str = "\
usage: pktio [--json] [--duration SECONDS] [--warmup SECONDS] [--only model|veth] [--no-pin]

Measures packets per second per queue, 60-byte frames (64 with FCS), batch 32:
  82599 model link          driver -> model port A -> in-memory link -> port B -> driver
  AF_PACKET                 one veth queue (the baseline)
  AF_XDP SKB / driver mode  the same veth queue through an XSK, copy bind
The veth tests need root and are skipped otherwise.";

struct Options {
    config: RunConfig,
    json: bool,
    model: bool,
    veth: bool,
}

fn seconds(value: Option<String>, flag: &str) -> Result<Duration, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    let secs: f64 = value.parse().map_err(|_| format!("{flag}: not a number: {value}"))?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{flag}: {secs} is outside 0..=3600"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options =
        Options { config: RunConfig::default(), json: false, model: true, veth: true };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => options.json = true,
            "--no-pin" => options.config.pin_threads = false,
            "--duration" => options.config.duration = seconds(args.next(), "--duration")?,
            "--warmup" => options.config.warmup = seconds(args.next(), "--warmup")?,
            "--only" => match args.next().as_deref() {
                Some("model") => options.veth = false,
                Some("veth") => options.model = false,
                other => return Err(format!("--only model|veth, not {other:?}")),
            },
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("pktio: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut report = Report::default();
    let mut failed = false;
    if options.model {
        match model::run(&options.config) {
            Ok(results) => report.measurements.extend(results),
            Err(e) => {
                eprintln!("pktio: model link: {e}");
                failed = true;
            }
        }
    }
    if options.veth {
        match veth::run(&options.config) {
            Ok((results, skipped)) => {
                report.measurements.extend(results);
                report.skipped.extend(skipped);
            }
            Err(e) => {
                eprintln!("pktio: veth: {e}");
                report.skipped.push(Skipped { backend: "veth".into(), reason: e.to_string() });
                failed = true;
            }
        }
    }
    if options.json {
        println!("{}", report.json(&options.config));
    } else {
        print!("{}", report.table(&options.config));
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
