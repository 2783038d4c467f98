//! Presenting a run: a table for people and JSON for scripts, with every rate set against
//! the `AF_PACKET` baseline of the same direction.

use std::fmt::Write as _;

use super::{AF_PACKET, BATCH, Direction, FRAME_LEN, Measurement, RunConfig, Skipped};

/// Everything one run produced.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Measured rates, in the order they ran.
    pub measurements: Vec<Measurement>,
    /// Scenarios that did not run.
    pub skipped: Vec<Skipped>,
}

impl Report {
    /// This measurement's rate divided by the baseline's in the same direction, when the
    /// baseline ran and moved frames.
    pub fn ratio_to_baseline(&self, m: &Measurement) -> Option<f64> {
        let baseline = self
            .measurements
            .iter()
            .find(|b| b.backend == AF_PACKET && b.direction == m.direction)?;
        let base = baseline.mpps();
        (base > 0.0).then(|| m.mpps() / base)
    }

    /// A table for a terminal, followed by the skipped scenarios.
    pub fn table(&self, config: &RunConfig) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Packet I/O per queue: {FRAME_LEN} B frames ({} B with FCS), batch {BATCH}, \
             {:.1} s per test after {:.1} s warm-up",
            FRAME_LEN + 4,
            config.duration.as_secs_f64(),
            config.warmup.as_secs_f64(),
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<26} {:<3} {:>8} {:>13} {:>7} {:>13}",
            "backend", "dir", "Mpps", "offered Mpps", "loss", "vs AF_PACKET"
        );
        let _ = writeln!(out, "{}", "-".repeat(26 + 1 + 3 + 1 + 8 + 1 + 13 + 1 + 7 + 1 + 13));
        for m in &self.measurements {
            let ratio = match self.ratio_to_baseline(m) {
                Some(r) => format!("{r:.2}x"),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<26} {:<3} {:>8.3} {:>13.3} {:>6.1}% {:>13}",
                m.backend,
                m.direction.to_string(),
                m.mpps(),
                m.offered_mpps(),
                m.loss() * 100.0,
                ratio
            );
        }
        for s in &self.skipped {
            let _ = writeln!(out, "skipped {}: {}", s.backend, s.reason);
        }
        out
    }

    /// The run as one JSON object.
    pub fn json(&self, config: &RunConfig) -> String {
        let results: Vec<String> = self
            .measurements
            .iter()
            .map(|m| {
                let ratio = self
                    .ratio_to_baseline(m)
                    .map_or_else(|| "null".to_owned(), |r| format!("{r:.4}"));
                format!(
                    "{{\"backend\":{},\"direction\":\"{}\",\"mpps\":{:.4},\"offered_mpps\":{:.4},\
                     \"packets\":{},\"offered\":{},\"seconds\":{:.4},\"loss\":{:.4},\
                     \"ratio_vs_af_packet\":{}}}",
                    json_string(&m.backend),
                    match m.direction {
                        Direction::Tx => "tx",
                        Direction::Rx => "rx",
                    },
                    m.mpps(),
                    m.offered_mpps(),
                    m.packets,
                    m.offered,
                    m.seconds,
                    m.loss(),
                    ratio
                )
            })
            .collect();
        let skipped: Vec<String> = self
            .skipped
            .iter()
            .map(|s| {
                format!(
                    "{{\"backend\":{},\"reason\":{}}}",
                    json_string(&s.backend),
                    json_string(&s.reason)
                )
            })
            .collect();
        format!(
            "{{\"benchmark\":\"pktio\",\"frame_len\":{FRAME_LEN},\"batch\":{BATCH},\
             \"warmup_s\":{:.3},\"duration_s\":{:.3},\"results\":[{}],\"skipped\":[{}]}}",
            config.warmup.as_secs_f64(),
            config.duration.as_secs_f64(),
            results.join(","),
            skipped.join(",")
        )
    }
}

/// A JSON string literal (RFC 8259 §7): quotes, backslashes and control characters escaped.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(backend: &str, direction: Direction, packets: u64) -> Measurement {
        Measurement { backend: backend.into(), direction, packets, offered: packets, seconds: 1.0 }
    }

    fn sample() -> Report {
        Report {
            measurements: vec![
                m(AF_PACKET, Direction::Tx, 1_000_000),
                m(AF_PACKET, Direction::Rx, 500_000),
                m("AF_XDP SKB mode, copy", Direction::Tx, 1_500_000),
                m("AF_XDP SKB mode, copy", Direction::Rx, 2_000_000),
            ],
            skipped: vec![Skipped { backend: "x".into(), reason: "needs \"root\"".into() }],
        }
    }

    #[test]
    fn ratios_compare_with_the_baseline_of_the_same_direction() {
        let report = sample();
        let r: Vec<Option<f64>> =
            report.measurements.iter().map(|m| report.ratio_to_baseline(m)).collect();
        assert_eq!(r, vec![Some(1.0), Some(1.0), Some(1.5), Some(4.0)]);
        let without_baseline = Report { measurements: report.measurements[2..].to_vec(), ..report };
        assert_eq!(without_baseline.ratio_to_baseline(&without_baseline.measurements[0]), None);
    }

    #[test]
    fn table_lists_every_result_and_skip() {
        let text = sample().table(&RunConfig::default());
        assert!(text.contains("batch 32"), "{text}");
        assert!(text.contains("1.500x") || text.contains("1.50x"), "{text}");
        assert!(text.contains("4.00x"), "{text}");
        assert!(text.contains("skipped x: needs \"root\""), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("AF_")).count(), 4);
    }

    #[test]
    fn json_is_escaped_and_balanced() {
        let json = sample().json(&RunConfig::default());
        assert!(json.contains("\"reason\":\"needs \\\"root\\\"\""), "{json}");
        assert!(json.contains("\"ratio_vs_af_packet\":4.0000"), "{json}");
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        assert_eq!(json_string("a\u{1}b\\"), "\"a\\u0001b\\\\\"");
    }
}
