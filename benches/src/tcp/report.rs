//! Tables for the comparison: medians over rounds, ratios, and the targets.

use std::fmt::Write as _;

use super::{Sample, Workload};

/// The stacks of the comparison, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Two tcp-core stacks in memory.
    TcpCore,
    /// Two smoltcp interfaces in memory.
    Smoltcp,
    /// The Linux kernel over loopback.
    Linux,
}

impl Peer {
    /// Every peer, in table order.
    pub const ALL: [Peer; 3] = [Peer::TcpCore, Peer::Smoltcp, Peer::Linux];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Peer::TcpCore => "tcp-core",
            Peer::Smoltcp => "smoltcp",
            Peer::Linux => "linux",
        }
    }
}

/// Every sample of one run of the comparison.
#[derive(Clone, Debug, Default)]
pub struct Results {
    rows: Vec<(Workload, Peer, Vec<Sample>)>,
}

impl Results {
    /// Records one sample.
    pub fn add(&mut self, workload: Workload, peer: Peer, sample: Sample) {
        match self.rows.iter_mut().find(|(w, p, _)| *w == workload && *p == peer) {
            Some((_, _, samples)) => samples.push(sample),
            None => self.rows.push((workload, peer, vec![sample])),
        }
    }

    fn samples(&self, workload: Workload, peer: Peer) -> &[Sample] {
        self.rows
            .iter()
            .find(|(w, p, _)| *w == workload && *p == peer)
            .map_or(&[], |(_, _, s)| s.as_slice())
    }

    fn workloads(&self) -> Vec<Workload> {
        let mut seen = Vec::new();
        for (w, _, _) in &self.rows {
            if !seen.contains(w) {
                seen.push(*w);
            }
        }
        seen
    }

    /// The median rate of `peer` on `workload`, if it was measured.
    pub fn median(&self, workload: Workload, peer: Peer) -> Option<f64> {
        median(self.samples(workload, peer).iter().map(|s| s.rate(workload)).collect())
    }

    /// The summary table (Markdown): medians, ratios, and whether the targets are met.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| workload | unit | tcp-core | smoltcp | Linux (lo) | tcp-core / smoltcp | tcp-core / Linux | target |\n\
             |---|---|---:|---:|---:|---:|---:|---|\n",
        );
        for w in self.workloads() {
            let [core, smol, linux] = Peer::ALL.map(|p| self.median(w, p));
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "–".into(),
            };
            let (goal, need) = match w {
                Workload::Churn { .. } => ("≥ 2x smoltcp", 2.0),
                Workload::Bulk { .. } => ("≥ 1x smoltcp", 1.0),
            };
            let verdict = match (core, smol) {
                (Some(c), Some(s)) if s > 0.0 => {
                    format!("{goal}: {}", if c / s >= need { "met" } else { "**not met**" })
                }
                _ => format!("{goal}: –"),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                w.label(),
                w.unit(),
                fmt_rate(w, core),
                fmt_rate(w, smol),
                fmt_rate(w, linux),
                ratio(core, smol),
                ratio(core, linux),
                verdict
            );
        }
        out
    }

    /// The detail table (Markdown): spread over rounds, CPU share, frames per unit, timer
    /// skips and failures.
    pub fn details(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| workload | stack | runs | median | min | max | CPU share | frames / unit | timer skips | failures |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for w in self.workloads() {
            for p in Peer::ALL {
                let samples = self.samples(w, p);
                if samples.is_empty() {
                    continue;
                }
                let rates: Vec<f64> = samples.iter().map(|s| s.rate(w)).collect();
                let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = rates.iter().copied().fold(0.0, f64::max);
                let share = median(samples.iter().map(Sample::cpu_share).collect());
                let frames = median(samples.iter().map(|s| s.frames_per_unit).collect());
                let skips: u64 = samples.iter().map(|s| s.timer_skips).sum();
                let failures: u64 = samples.iter().map(|s| s.failures).sum();
                let frames = match (w, frames) {
                    (_, Some(f)) if f <= 0.0 => "–".to_string(),
                    (Workload::Churn { .. }, Some(f)) => format!("{f:.1}"),
                    // Bulk: frames per byte is unreadable; give frames per MiB.
                    (Workload::Bulk { .. }, Some(f)) => format!("{:.0} / MiB", f * 1048576.0),
                    (_, None) => "–".to_string(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    w.label(),
                    p.name(),
                    samples.len(),
                    fmt_rate(w, median(rates.clone())),
                    fmt_rate(w, Some(lo)),
                    fmt_rate(w, Some(hi)),
                    share.map_or("–".into(), |s| format!("{:.0}%", s * 100.0)),
                    frames,
                    skips,
                    failures
                );
            }
        }
        out
    }
}

fn fmt_rate(w: Workload, rate: Option<f64>) -> String {
    match (w, rate) {
        (_, None) => "–".into(),
        (Workload::Churn { .. }, Some(r)) => thousands(r.round() as u64),
        (Workload::Bulk { .. }, Some(r)) => format!("{r:.2}"),
    }
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// `n` with thin separators every three digits: 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample(work: u64, cpu_ms: u64) -> Sample {
        Sample {
            work,
            cpu: Duration::from_millis(cpu_ms),
            wall: Duration::from_millis(cpu_ms),
            ..Sample::default()
        }
    }

    #[test]
    fn medians_and_separators() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_summary_gives_ratios_and_judges_the_targets() {
        let churn = Workload::Churn { concurrency: 1 };
        let bulk = Workload::Bulk { bytes: 1 << 20 };
        let mut r = Results::default();
        r.add(churn, Peer::TcpCore, sample(300, 1000));
        r.add(churn, Peer::Smoltcp, sample(100, 1000));
        r.add(churn, Peer::Linux, sample(600, 1000));
        r.add(bulk, Peer::TcpCore, sample(1_000_000_000, 8000));
        r.add(bulk, Peer::Smoltcp, sample(2_000_000_000, 8000));
        let table = r.summary();
        let churn_row = table.lines().find(|l| l.contains("1 at a time")).unwrap();
        assert!(churn_row.contains("| 300 | 100 | 600 | 3.00x | 0.50x |"), "{churn_row}");
        assert!(churn_row.ends_with("met |"));
        let bulk_row = table.lines().find(|l| l.contains("bulk")).unwrap();
        assert!(bulk_row.contains("| 1.00 | 2.00 | – | 0.50x | – |"), "{bulk_row}");
        assert!(bulk_row.contains("**not met**"));
        assert!(r.details().contains("| tcp-core | 1 |"));
    }
}
