//! Scales: how a value becomes a pixel position, where the ticks go and how they are
//! written.
//!
//! Ticks follow the usual "nice numbers" rule: the step is 1, 2 or 5 times a power of ten,
//! chosen so the axis gets about as many ticks as asked for, and a value axis that starts at
//! zero is stretched up to the next whole step so the top tick is labelled.

/// A linear map from a value interval (the domain) to a pixel interval (the range).
///
/// The range may run backwards (an SVG y axis grows downwards, so `range_start` is the
/// bottom of the plot area and `range_end` its top).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearScale {
    domain: (f64, f64),
    range: (f64, f64),
}

impl LinearScale {
    /// A scale from `domain` to `range`. A domain of zero width, or with a bound that is not
    /// finite, is widened to one unit so every value still maps to a finite pixel.
    pub fn new(domain: (f64, f64), range: (f64, f64)) -> Self {
        let (mut lo, mut hi) = domain;
        if !lo.is_finite() {
            lo = 0.0;
        }
        if !hi.is_finite() || hi <= lo {
            hi = lo + 1.0;
        }
        LinearScale { domain: (lo, hi), range }
    }

    /// A value axis from zero (or below, for negative data) up to a nice number above
    /// `max`, with ticks about `ticks` apart, mapped to `range`.
    pub fn zero_based(min: f64, max: f64, ticks: usize, range: (f64, f64)) -> Self {
        let lo = if min.is_finite() { min.min(0.0) } else { 0.0 };
        let hi = if max.is_finite() { max.max(0.0) } else { 0.0 };
        let step = nice_step(hi - lo, ticks);
        let lo = (lo / step).floor() * step;
        let hi = ((hi / step).ceil() * step).max(lo + step);
        LinearScale::new((lo, hi), range)
    }

    /// The domain, after any widening.
    pub fn domain(&self) -> (f64, f64) {
        self.domain
    }

    /// The pixel position of `value`. Values outside the domain map outside the range
    /// (callers draw inside a clip or never pass them); a value that is not finite maps to
    /// the start of the range, so no `NaN` ever reaches the output.
    pub fn map(&self, value: f64) -> f64 {
        if !value.is_finite() {
            return self.range.0;
        }
        let (d0, d1) = self.domain;
        let (r0, r1) = self.range;
        r0 + (value - d0) / (d1 - d0) * (r1 - r0)
    }

    /// Tick values from the bottom of the domain to its top, about `count` of them, on
    /// multiples of a nice step.
    pub fn ticks(&self, count: usize) -> Vec<f64> {
        let (lo, hi) = self.domain;
        let step = nice_step(hi - lo, count);
        let first = (lo / step).ceil() as i64;
        let last = (hi / step + 1e-9).floor() as i64;
        (first..=last).map(|i| i as f64 * step).collect()
    }
}

/// The nice step (1, 2 or 5 times a power of ten) that cuts `span` into about `count`
/// intervals. Never zero, never `NaN`.
pub fn nice_step(span: f64, count: usize) -> f64 {
    let count = count.max(1) as f64;
    if !span.is_finite() || span <= 0.0 {
        return 1.0;
    }
    let raw = span / count;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    // Round the fraction to the nearest of 1, 2, 5 and 10 on a log scale (the thresholds
    // are the geometric means of neighbours), so the tick count stays near `count`.
    let nice = if fraction >= 50f64.sqrt() {
        10.0
    } else if fraction >= 10f64.sqrt() {
        5.0
    } else if fraction >= 2f64.sqrt() {
        2.0
    } else {
        1.0
    };
    nice * magnitude
}

/// Evenly spaced bands for categories along an axis, with `padding` (a fraction of a band)
/// left empty between neighbours and at both ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BandScale {
    count: usize,
    start: f64,
    step: f64,
    width: f64,
}

impl BandScale {
    /// `count` bands across `range`.
    pub fn new(count: usize, range: (f64, f64), padding: f64) -> Self {
        let count = count.max(1);
        let padding = if padding.is_finite() { padding.clamp(0.0, 0.9) } else { 0.0 };
        let step = (range.1 - range.0) / (count as f64 + padding);
        BandScale { count, start: range.0 + step * padding, step, width: step * (1.0 - padding) }
    }

    /// The left edge of band `index`.
    pub fn start(&self, index: usize) -> f64 {
        self.start + self.step * index as f64
    }

    /// The centre of band `index`.
    pub fn center(&self, index: usize) -> f64 {
        self.start(index) + self.width / 2.0
    }

    /// The width of every band.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// The number of bands.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// A value written compactly: thousands as "k", millions as "M", and no more decimals than
/// `step` needs to tell neighbouring multiples of it apart.
pub fn format_value(value: f64, step: f64) -> String {
    format_tick(value, step, value.abs().max(step.abs()))
}

/// A tick label on an axis that reaches `top`: the suffix (none, "k" or "M") follows `top`,
/// so every tick of one axis uses the same one, and the decimals follow the tick `step`.
pub fn format_tick(value: f64, step: f64, top: f64) -> String {
    if !value.is_finite() {
        return "–".into();
    }
    // Zero needs no unit or decimals ("0k" and "0.0" read as mistakes).
    if value.abs() < step.abs() * 1e-9 || value == 0.0 {
        return "0".into();
    }
    let magnitude = top.abs();
    let (scaled, scaled_step, suffix) = if magnitude >= 1e6 {
        (value / 1e6, step / 1e6, "M")
    } else if magnitude >= 1e4 {
        (value / 1e3, step / 1e3, "k")
    } else {
        (value, step, "")
    };
    let decimals = decimals_for(scaled_step.abs());
    format!("{scaled:.decimals$}{suffix}")
}

/// Decimals needed to tell multiples of `step` apart (at most three).
fn decimals_for(step: f64) -> usize {
    if !step.is_finite() || step <= 0.0 || step >= 1.0 {
        return 0;
    }
    let mut decimals = 0;
    let mut s = step;
    while decimals < 3 && (s - s.round()).abs() > 1e-6 * s.max(1.0) {
        s *= 10.0;
        decimals += 1;
    }
    decimals
}

/// A label for a single value (a bar's height): three significant digits.
pub fn format_label(value: f64) -> String {
    if !value.is_finite() {
        return "–".into();
    }
    let magnitude = value.abs();
    let scaled = if magnitude >= 1e6 {
        magnitude / 1e6
    } else if magnitude >= 1e4 {
        magnitude / 1e3
    } else {
        magnitude
    };
    let step = if scaled >= 100.0 {
        1.0
    } else if scaled >= 10.0 {
        0.1
    } else if scaled >= 1.0 {
        0.01
    } else {
        0.001
    };
    let scale = if magnitude >= 1e6 {
        1e6
    } else if magnitude >= 1e4 {
        1e3
    } else {
        1.0
    };
    let text = format_value(value, step * scale);
    // Three significant digits, but "4.00" says no more than "4".
    let digits_end = text.find(['k', 'M']).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let digits = if digits.contains('.') {
        digits.trim_end_matches('0').trim_end_matches('.')
    } else {
        digits
    };
    format!("{digits}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_scale_maps_the_domain_ends_to_the_range_ends() {
        // A y axis: value 0 at the bottom (pixel 250), 100 at the top (pixel 50).
        let y = LinearScale::new((0.0, 100.0), (250.0, 50.0));
        assert_eq!(y.map(0.0), 250.0);
        assert_eq!(y.map(100.0), 50.0);
        assert_eq!(y.map(25.0), 200.0);
        assert_eq!(y.map(f64::NAN), 250.0);
        assert_eq!(y.map(f64::INFINITY), 250.0);
    }

    #[test]
    fn degenerate_domains_still_map_to_finite_pixels() {
        for domain in [(5.0, 5.0), (f64::NAN, f64::NAN), (0.0, f64::INFINITY), (3.0, 1.0)] {
            let s = LinearScale::new(domain, (0.0, 100.0));
            for v in [0.0, 1.0, 5.0, -3.0] {
                assert!(s.map(v).is_finite(), "{domain:?} {v}");
            }
        }
    }

    #[test]
    fn zero_based_axes_end_on_a_nice_tick_above_the_data() {
        let s = LinearScale::zero_based(0.0, 293_779.0, 5, (300.0, 0.0));
        assert_eq!(s.domain(), (0.0, 300_000.0));
        let ticks = s.ticks(5);
        assert_eq!(ticks.first(), Some(&0.0));
        assert_eq!(ticks.last(), Some(&300_000.0));
        assert_eq!(ticks.len(), 7, "{ticks:?}");
        // The largest datum lands inside the plot, near its top.
        let top = s.map(293_779.0);
        assert!((0.0..10.0).contains(&top), "{top}");

        let small = LinearScale::zero_based(0.0, 2.26, 5, (100.0, 0.0));
        assert_eq!(small.domain(), (0.0, 2.5));
        assert_eq!(small.ticks(5), vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);

        let empty = LinearScale::zero_based(0.0, 0.0, 5, (100.0, 0.0));
        assert_eq!(empty.domain(), (0.0, 1.0));
    }

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(1.0, 4), 0.2);
        assert_eq!(nice_step(1.0, 3), 0.5);
        assert_eq!(nice_step(45_000.0, 5), 10_000.0);
        assert_eq!(nice_step(0.0, 5), 1.0);
        assert_eq!(nice_step(f64::NAN, 5), 1.0);
    }

    #[test]
    fn bands_share_the_range_with_their_padding() {
        let b = BandScale::new(4, (0.0, 420.0), 0.2);
        assert_eq!(b.count(), 4);
        // Four bands and five gaps of 0.2 band steps fill the range exactly.
        let right_edge = b.start(3) + b.width();
        assert!((right_edge + (b.start(1) - b.start(0) - b.width()) - 420.0).abs() < 1e-9);
        assert!(b.start(0) > 0.0);
        assert!((b.center(1) - b.start(1) - b.width() / 2.0).abs() < 1e-9);
        assert!(b.start(1) > b.start(0) + b.width());
    }

    #[test]
    fn values_are_written_compactly() {
        assert_eq!(format_value(300_000.0, 50_000.0), "300k");
        assert_eq!(format_value(2_500_000.0, 500_000.0), "2.5M");
        assert_eq!(format_value(1.5, 0.5), "1.5");
        assert_eq!(format_value(1.0, 0.5), "1.0");
        assert_eq!(format_value(0.0, 0.5), "0");
        assert_eq!(format_value(-1e-12, 0.5), "0");
        assert_eq!(format_tick(0.0, 200_000.0, 800_000.0), "0");
        assert_eq!(format_tick(5000.0, 5000.0, 20_000.0), "5k", "the axis's suffix");
        assert_eq!(format_tick(2.5e5, 5e4, 1.5e6), "0.25M");
        assert_eq!(format_value(2000.0, 500.0), "2000");
        assert_eq!(format_value(f64::NAN, 1.0), "–");
        assert_eq!(format_label(293_779.0), "294k");
        assert_eq!(format_label(31.87), "31.9");
        assert_eq!(format_label(0.69), "0.69");
        assert_eq!(format_label(4.0), "4");
        assert_eq!(format_label(1_230_000.0), "1.23M");
        assert_eq!(format_label(1_200_000.0), "1.2M");
        assert_eq!(format_label(40_000.0), "40k");
    }
}
