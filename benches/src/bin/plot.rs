//! `plot`: SVG figures of the benchmark results for BENCHMARKS.md (see
//! `netpop_benches::plot`). `scripts/bench-all.sh` runs it after the benchmarks.
//!
//!     plot [render] [--results DIR] [--out DIR]    bench-results/*.json -> docs/bench/*.svg
//!     plot convert loadgen|tcp [FILE]               a script's text output (FILE or stdin) -> JSON

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use netpop_benches::plot::{self, Outcome, convert};

const USAGE: &str = "\
usage: plot [render] [--results DIR] [--out DIR]
       plot convert loadgen|tcp [FILE]

render   draws DIR/<name>.json (default bench-results) into OUT/<name>.svg (default
         docs/bench) for pktio, loadgen, tcp, e2e and balance; a missing result leaves its
         figure as it was
convert  turns the text output of scripts/bench-loadgen.sh or scripts/bench-tcp.sh (from
         FILE, or standard input) into the JSON that render reads";

fn render(mut args: impl Iterator<Item = String>) -> Result<ExitCode, String> {
    let mut results = PathBuf::from("bench-results");
    let mut out = PathBuf::from("docs/bench");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--results" => results = args.next().ok_or("--results needs a directory")?.into(),
            "--out" => out = args.next().ok_or("--out needs a directory")?.into(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mut failed = false;
    for (name, outcome) in plot::render_all(&results, &out) {
        match outcome {
            Outcome::Written(path) => eprintln!("plot: {name}: wrote {}", path.display()),
            Outcome::NoResult => {
                eprintln!(
                    "plot: {name}: no {}/{name}.json, figure left as it was",
                    results.display()
                )
            }
            Outcome::Failed(e) => {
                eprintln!("plot: {name}: {e}");
                failed = true;
            }
            _ => {}
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn convert(mut args: impl Iterator<Item = String>) -> Result<ExitCode, String> {
    let kind = args.next().ok_or("convert needs loadgen or tcp")?;
    let text = match args.next() {
        Some(file) => std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| format!("stdin: {e}"))?;
            text
        }
    };
    if let Some(extra) = args.next() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    let json = match kind.as_str() {
        "loadgen" => convert::loadgen_text(&text),
        "tcp" => convert::tcp_text(&text),
        other => return Err(format!("convert loadgen|tcp, not {other:?}")),
    };
    print!("{json}");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let result = match args.peek().map(String::as_str) {
        Some("convert") => {
            args.next();
            convert(args)
        }
        Some("render") => {
            args.next();
            render(args)
        }
        Some("-h" | "--help") => Err(String::new()),
        _ => render(args),
    };
    result.unwrap_or_else(|why| {
        if !why.is_empty() {
            eprintln!("plot: {why}");
        }
        eprintln!("{USAGE}");
        ExitCode::from(2)
    })
}
