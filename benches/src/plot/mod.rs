//! SVG plots of the benchmark results for BENCHMARKS.md, written as SVG 1.1 text with no
//! plotting dependency.
//!
//! `scripts/bench-all.sh` runs every benchmark script, saves each result as
//! `bench-results/<name>.json` (with `<name>.meta.json`: command, date, commit, machine,
//! load average), and then runs the `plot` binary, which calls [`render_all`] to write
//! `docs/bench/<name>.svg`. The pieces:
//! - [`svg`]: the document writer (shapes, text, escaping, number formatting);
//! - [`scale`]: linear and band scales, nice ticks, compact number labels;
//! - [`chart`]: figures of bar or line panels with axes, ticks, labels and a legend;
//! - [`json`]: a small JSON reader for the result files;
//! - [`convert`]: JSON from the scripts that print text only (loadgen, tcp);
//! - [`figures`]: which figure each benchmark gets.

pub mod chart;
pub mod convert;
pub mod figures;
pub mod json;
pub mod scale;
pub mod svg;
#[cfg(test)]
mod xml_check;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use json::Value;

/// The benchmarks with a figure, by result name, and the script that produces each.
/// `e2e` and `balance` are drawn when their scripts exist and leave a result.
pub const RESULTS: [(&str, &str); 5] = [
    ("pktio", "scripts/bench-pktio.sh"),
    ("loadgen", "scripts/bench-loadgen.sh"),
    ("tcp", "scripts/bench-tcp.sh"),
    ("e2e", "scripts/bench-e2e.sh"),
    ("balance", "scripts/bench-balance.sh"),
];

/// What happened to one benchmark's figure.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// The figure was written to this path.
    Written(PathBuf),
    /// There was no result file, so any earlier figure was left as it was.
    NoResult,
    /// The result could not be read or drawn.
    Failed(RenderError),
}

/// Why a result could not become a figure.
#[derive(Debug)]
#[non_exhaustive]
pub enum RenderError {
    /// Reading the result or writing the figure failed.
    Io(PathBuf, io::Error),
    /// The result file is not JSON.
    Json(PathBuf, json::ParseError),
    /// The result holds nothing the figure can show.
    Figure(PathBuf, figures::FigureError),
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            RenderError::Json(path, e) => write!(f, "{}: {e}", path.display()),
            RenderError::Figure(path, e) => write!(f, "{}: {e}", path.display()),
        }
    }
}

impl std::error::Error for RenderError {}

/// Draws the figure of benchmark `name` from `results/<name>.json` (and its
/// `<name>.meta.json` if present) into `out/<name>.svg`.
pub fn render(name: &str, results: &Path, out: &Path) -> Outcome {
    let source = results.join(format!("{name}.json"));
    let text = match std::fs::read_to_string(&source) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Outcome::NoResult,
        Err(e) => return Outcome::Failed(RenderError::Io(source, e)),
    };
    let result = match Value::parse(&text) {
        Ok(value) => value,
        Err(e) => return Outcome::Failed(RenderError::Json(source, e)),
    };
    // The metadata only decorates the footer: a broken one is left out, not fatal.
    let meta = std::fs::read_to_string(results.join(format!("{name}.meta.json")))
        .ok()
        .and_then(|t| Value::parse(&t).ok());
    let figure = match figures::figure_for(name, &result, meta.as_ref()) {
        Ok(figure) => figure,
        Err(e) => return Outcome::Failed(RenderError::Figure(source, e)),
    };
    let target = out.join(format!("{name}.svg"));
    let written =
        std::fs::create_dir_all(out).and_then(|()| std::fs::write(&target, figure.to_svg()));
    match written {
        Ok(()) => Outcome::Written(target),
        Err(e) => Outcome::Failed(RenderError::Io(target, e)),
    }
}

/// [`render`] for every benchmark in [`RESULTS`].
pub fn render_all(results: &Path, out: &Path) -> Vec<(&'static str, Outcome)> {
    RESULTS.iter().map(|&(name, _)| (name, render(name, results, out))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("netpop-plot-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn renders_what_is_there_and_reports_the_rest() {
        let results = scratch("results");
        let out = results.join("svg");
        std::fs::write(
            results.join("pktio.json"),
            r#"{"results":[{"backend":"AF_PACKET","direction":"tx","mpps":1.2}],"skipped":[]}"#,
        )
        .unwrap();
        std::fs::write(
            results.join("pktio.meta.json"),
            r#"{"command":"scripts/bench-pktio.sh --json"}"#,
        )
        .unwrap();
        std::fs::write(results.join("loadgen.json"), "{not json").unwrap();
        std::fs::write(results.join("tcp.json"), r#"{"workloads":[]}"#).unwrap();

        let outcomes = render_all(&results, &out);
        let by_name = |n: &str| &outcomes.iter().find(|(name, _)| *name == n).unwrap().1;
        let Outcome::Written(path) = by_name("pktio") else { panic!("{outcomes:?}") };
        let svg = std::fs::read_to_string(path).unwrap();
        xml_check::check_well_formed(&svg).unwrap();
        assert!(svg.contains("Command: scripts/bench-pktio.sh --json"));
        assert!(matches!(by_name("loadgen"), Outcome::Failed(RenderError::Json(..))));
        assert!(matches!(by_name("tcp"), Outcome::Failed(RenderError::Figure(..))));
        assert!(matches!(by_name("e2e"), Outcome::NoResult));
        assert!(!out.join("tcp.svg").exists(), "a failed figure writes nothing");
        std::fs::remove_dir_all(&results).unwrap();
    }
}
