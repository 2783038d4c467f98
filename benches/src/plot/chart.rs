//! Charts: a [`Figure`] is a title, a legend, one or more [`Panel`]s side by side and a
//! footer; a panel draws grouped bars or lines over named categories (backends, rounds,
//! concurrency levels), with a zero-based value axis, grid lines, tick labels and axis
//! titles. Colours follow the series names, so a series keeps its colour in every panel.

use super::scale::{BandScale, LinearScale, format_label, format_tick, nice_step};
use super::svg::{Anchor, Svg, TextStyle};

/// How a panel draws its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One bar per series in each category, side by side.
    Bars,
    /// One line per series through the categories, with a marker on every value.
    Lines,
}

/// One named row of values, one per category of its panel (`None` where nothing was
/// measured).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Values by category index.
    pub values: Vec<Option<f64>>,
}

impl Series {
    /// A series from its name and values.
    pub fn new(name: impl Into<String>, values: Vec<Option<f64>>) -> Self {
        Series { name: name.into(), values }
    }
}

/// One chart: categories along x, values along y.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// Title above the plot area.
    pub title: String,
    /// Title of the value axis, with its unit.
    pub y_label: String,
    /// Title of the category axis (may be empty).
    pub x_label: String,
    /// Category names, left to right.
    pub categories: Vec<String>,
    /// The data.
    pub series: Vec<Series>,
    /// Bars or lines.
    pub kind: Kind,
}

/// A whole SVG image.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// The heading.
    pub title: String,
    /// Lines under the heading (what was measured, how).
    pub subtitle: Vec<String>,
    /// Lines at the bottom (command, machine, date).
    pub footer: Vec<String>,
    /// The charts, laid out left to right, `columns` per row.
    pub panels: Vec<Panel>,
    /// Panels per row (at least one).
    pub columns: usize,
}

/// Okabe–Ito colours, distinguishable with the common colour-vision deficiencies.
const PALETTE: [&str; 8] =
    ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#000000"];

const PANEL_WIDTH: f64 = 380.0;
/// Narrower figures leave too little room for their subtitle and footer.
const MIN_WIDTH: f64 = 760.0;
/// Line pitch of wrapped category labels.
const CATEGORY_LINE: f64 = 13.0;
const PANEL_HEIGHT: f64 = 300.0;
/// Room inside a panel for the y tick labels and the y title.
const MARGIN_LEFT: f64 = 66.0;
const MARGIN_RIGHT: f64 = 14.0;
/// Room for the panel title.
const MARGIN_TOP: f64 = 30.0;
/// Room for up to three lines of category labels and the x title.
const MARGIN_BOTTOM: f64 = 64.0;
const FIGURE_PAD: f64 = 16.0;
const TITLE_SIZE: f64 = 16.0;
const TEXT_SIZE: f64 = 11.0;
const SMALL_SIZE: f64 = 9.0;
const LINE_GAP: f64 = 15.0;
const Y_TICKS: usize = 5;

/// Rough width of `s` in pixels at `size`: proportional fonts average a bit over half
/// their size per character, which is enough to lay out legends and wrap labels.
fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.6
}

impl Figure {
    /// Series names in order of first appearance; each gets the colour of its position.
    fn series_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for panel in &self.panels {
            for series in &panel.series {
                if !names.contains(&series.name.as_str()) {
                    names.push(&series.name);
                }
            }
        }
        names
    }

    fn color_of(names: &[&str], name: &str) -> &'static str {
        let index = names.iter().position(|&n| n == name).unwrap_or(0);
        PALETTE.get(index % PALETTE.len()).copied().unwrap_or("#000")
    }

    /// Legend entries placed in rows no wider than `width`: (row, x offset, name).
    fn legend_layout<'a>(names: &[&'a str], width: f64) -> Vec<(usize, f64, &'a str)> {
        let mut placed = Vec::new();
        let (mut row, mut x) = (0, 0.0);
        for &name in names {
            let entry = 18.0 + text_width(name, TEXT_SIZE) + 18.0;
            if x > 0.0 && x + entry > width {
                row += 1;
                x = 0.0;
            }
            placed.push((row, x, name));
            x += entry;
        }
        placed
    }

    /// The figure as an SVG document.
    pub fn to_svg(&self) -> String {
        let columns = self.columns.clamp(1, self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(columns).max(1);
        let width = (FIGURE_PAD * 2.0 + PANEL_WIDTH * columns as f64).max(MIN_WIDTH);
        let panel_width = (width - 2.0 * FIGURE_PAD) / columns as f64;
        let text_chars = ((width - 2.0 * FIGURE_PAD) / (TEXT_SIZE * 0.6)) as usize;
        let subtitle: Vec<String> =
            self.subtitle.iter().flat_map(|line| wrap(line, text_chars)).collect();
        let footer_chars = ((width - 2.0 * FIGURE_PAD) / ((SMALL_SIZE + 1.0) * 0.6)) as usize;
        let footer: Vec<String> =
            self.footer.iter().flat_map(|line| wrap(line, footer_chars)).collect();
        let names = self.series_names();
        let legend = Self::legend_layout(&names, width - 2.0 * FIGURE_PAD);
        let legend_rows = legend.last().map_or(0, |&(row, _, _)| row + 1);

        let header = FIGURE_PAD + TITLE_SIZE + LINE_GAP * subtitle.len() as f64 + 8.0;
        let legend_top = header;
        let panels_top = legend_top + LINE_GAP * legend_rows as f64 + 6.0;
        let footer_top = panels_top + PANEL_HEIGHT * rows as f64 + 8.0;
        let height = footer_top + (LINE_GAP - 4.0) * footer.len() as f64 + FIGURE_PAD;

        let mut svg = Svg::new(width, height);
        let mut y = FIGURE_PAD + TITLE_SIZE;
        svg.text(FIGURE_PAD, y, &self.title, TextStyle::new(TITLE_SIZE, Anchor::Start).bold());
        for line in &subtitle {
            y += LINE_GAP;
            svg.text(FIGURE_PAD, y, line, TextStyle::new(TEXT_SIZE, Anchor::Start).color("#444"));
        }
        for &(row, x, name) in &legend {
            let top = legend_top + LINE_GAP * row as f64;
            let left = FIGURE_PAD + x;
            svg.rect(left, top + 1.0, 12.0, 12.0, Self::color_of(&names, name));
            svg.text(left + 18.0, top + 11.0, name, TextStyle::new(TEXT_SIZE, Anchor::Start));
        }
        for (index, panel) in self.panels.iter().enumerate() {
            let left = FIGURE_PAD + panel_width * (index % columns) as f64;
            let top = panels_top + PANEL_HEIGHT * (index / columns) as f64;
            panel.draw(&mut svg, (left, top, panel_width), &|name| Self::color_of(&names, name));
        }
        let mut y = footer_top;
        for line in &footer {
            y += LINE_GAP - 4.0;
            svg.text(
                FIGURE_PAD,
                y,
                line,
                TextStyle::new(SMALL_SIZE + 1.0, Anchor::Start).color("#555"),
            );
        }
        svg.finish()
    }
}

impl Panel {
    /// The largest and smallest value of any series (0 and 0 when there is none).
    fn extent(&self) -> (f64, f64) {
        let values = self.series.iter().flat_map(|s| s.values.iter().flatten().copied());
        values.filter(|v| v.is_finite()).fold((0.0, 0.0), |(lo, hi), v| (v.min(lo), v.max(hi)))
    }

    /// Draws the panel `width` pixels wide with its top-left corner at (`left`, `top`).
    fn draw(
        &self,
        svg: &mut Svg,
        (left, top, width): (f64, f64, f64),
        color: &dyn Fn(&str) -> &'static str,
    ) {
        let plot_left = left + MARGIN_LEFT;
        let plot_right = left + width - MARGIN_RIGHT;
        let plot_top = top + MARGIN_TOP;
        let plot_bottom = top + PANEL_HEIGHT - MARGIN_BOTTOM;

        svg.text(
            (plot_left + plot_right) / 2.0,
            top + 16.0,
            &self.title,
            TextStyle::new(TEXT_SIZE + 1.0, Anchor::Middle).bold(),
        );

        let (lo, hi) = self.extent();
        // Headroom for the value printed above the tallest bar.
        let hi = if self.kind == Kind::Bars { hi * 1.06 } else { hi };
        let y = LinearScale::zero_based(lo, hi, Y_TICKS, (plot_bottom, plot_top));
        let (d0, d1) = y.domain();
        let step = nice_step(d1 - d0, Y_TICKS);
        let axis_top = d0.abs().max(d1.abs());
        for tick in y.ticks(Y_TICKS) {
            let py = y.map(tick);
            svg.line((plot_left, py), (plot_right, py), "#e4e4e4", 1.0, "");
            svg.text(
                plot_left - 6.0,
                py + 4.0,
                &format_tick(tick, step, axis_top),
                TextStyle::new(TEXT_SIZE - 1.0, Anchor::End),
            );
        }
        svg.text(
            left + 14.0,
            (plot_top + plot_bottom) / 2.0,
            &self.y_label,
            TextStyle::new(TEXT_SIZE, Anchor::Middle).rotated(-90.0),
        );

        let bands = BandScale::new(self.categories.len(), (plot_left, plot_right), 0.25);
        let max_chars = ((bands.width() + 8.0) / (TEXT_SIZE * 0.6 - 0.6)).floor().max(4.0) as usize;
        let mut label_lines = 0;
        for (index, category) in self.categories.iter().enumerate() {
            for (line, words) in wrap(category, max_chars).iter().enumerate().take(3) {
                label_lines = label_lines.max(line + 1);
                svg.text(
                    bands.center(index),
                    plot_bottom + 15.0 + CATEGORY_LINE * line as f64,
                    words,
                    TextStyle::new(TEXT_SIZE - 1.0, Anchor::Middle),
                );
            }
        }
        if !self.x_label.is_empty() {
            svg.text(
                (plot_left + plot_right) / 2.0,
                plot_bottom + 15.0 + CATEGORY_LINE * label_lines as f64 + 6.0,
                &self.x_label,
                TextStyle::new(TEXT_SIZE, Anchor::Middle).color("#444"),
            );
        }

        match self.kind {
            Kind::Bars => self.draw_bars(svg, &bands, &y, color),
            Kind::Lines => self.draw_lines(svg, &bands, &y, color),
        }
        // The axes last, over the bars' feet.
        let zero = y.map(0.0);
        svg.line((plot_left, zero), (plot_right, zero), "#333", 1.0, "");
        svg.line((plot_left, plot_top), (plot_left, plot_bottom), "#333", 1.0, "");
    }

    fn draw_bars(
        &self,
        svg: &mut Svg,
        bands: &BandScale,
        y: &LinearScale,
        color: &dyn Fn(&str) -> &'static str,
    ) {
        let per_series = bands.width() / self.series.len().max(1) as f64;
        let label_fits = per_series >= 24.0;
        let zero = y.map(0.0);
        for (s, series) in self.series.iter().enumerate() {
            for (c, category) in self.categories.iter().enumerate() {
                let x = bands.start(c) + per_series * s as f64;
                let Some(value) = series.values.get(c).copied().flatten().filter(|v| v.is_finite())
                else {
                    svg.text(
                        x + per_series / 2.0,
                        zero - 3.0,
                        "n/a",
                        TextStyle::new(SMALL_SIZE, Anchor::Middle).color("#888"),
                    );
                    continue;
                };
                let top = y.map(value);
                let tip = format!("{} — {category}: {}", series.name, format_label(value));
                svg.rect_with_title(
                    (x + 1.0, top.min(zero), per_series - 2.0, (zero - top).abs()),
                    color(&series.name),
                    &tip,
                );
                if label_fits {
                    svg.text(
                        x + per_series / 2.0,
                        top.min(zero) - 3.0,
                        &format_label(value),
                        TextStyle::new(SMALL_SIZE, Anchor::Middle),
                    );
                }
            }
        }
    }

    fn draw_lines(
        &self,
        svg: &mut Svg,
        bands: &BandScale,
        y: &LinearScale,
        color: &dyn Fn(&str) -> &'static str,
    ) {
        for series in &self.series {
            let stroke = color(&series.name);
            // A missing value breaks the line rather than joining its neighbours.
            let mut run: Vec<(f64, f64)> = Vec::new();
            for c in 0..self.categories.len() {
                match series.values.get(c).copied().flatten().filter(|v| v.is_finite()) {
                    Some(value) => run.push((bands.center(c), y.map(value))),
                    None => {
                        svg.polyline(&run, stroke, 2.0);
                        run.clear();
                    }
                }
            }
            svg.polyline(&run, stroke, 2.0);
            for (c, category) in self.categories.iter().enumerate() {
                if let Some(value) =
                    series.values.get(c).copied().flatten().filter(|v| v.is_finite())
                {
                    let tip = format!("{} — {category}: {}", series.name, format_label(value));
                    svg.circle((bands.center(c), y.map(value)), 3.5, stroke, &tip);
                }
            }
        }
    }
}

/// `label` broken at spaces into lines of at most `max_chars` characters (a longer word gets
/// a line of its own).
pub fn wrap(label: &str, max_chars: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in label.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= max_chars => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::super::xml_check::check_well_formed;
    use super::*;

    fn bars() -> Panel {
        Panel {
            title: "Mpps per queue".into(),
            y_label: "Mpps".into(),
            x_label: String::new(),
            categories: vec!["82599 model link".into(), "AF_PACKET".into()],
            series: vec![
                Series::new("TX", vec![Some(0.69), Some(1.23)]),
                Series::new("RX", vec![Some(0.69), None]),
            ],
            kind: Kind::Bars,
        }
    }

    fn figure(panels: Vec<Panel>) -> Figure {
        Figure {
            title: "Packet I/O <ixgbe-user>".into(),
            subtitle: vec!["60 B frames & batch 32".into()],
            footer: vec!["scripts/bench-all.sh".into()],
            panels,
            columns: 2,
        }
    }

    /// The numbers in `attr="…"` attributes of every `<tag` element, in order.
    fn attribute_values(doc: &str, tag: &str, attr: &str) -> Vec<f64> {
        doc.lines()
            .filter(|l| l.starts_with(&format!("<{tag} ")))
            .filter_map(|l| {
                let start = l.find(&format!(" {attr}=\""))? + attr.len() + 3;
                let end = start + l[start..].find('"')?;
                l[start..end].parse().ok()
            })
            .collect()
    }

    #[test]
    fn bar_heights_are_proportional_to_the_values() {
        let doc = figure(vec![bars()]).to_svg();
        check_well_formed(&doc).unwrap();
        assert!(!doc.contains("NaN"));
        // Rectangles with a tooltip are the bars; the first two rects are the background
        // and legend swatches, which have none.
        let bar_lines: Vec<&str> = doc.lines().filter(|l| l.contains("<title>")).collect();
        assert_eq!(bar_lines.len(), 3, "three values, one missing: {doc}");
        let heights: Vec<f64> = attribute_values(&bar_lines.join("\n"), "rect", "height");
        assert_eq!(heights.len(), 3);
        // Series by series: TX model 0.69, TX AF_PACKET 1.23, RX model 0.69.
        let ratio = heights[1] / heights[0];
        assert!((ratio - 1.23 / 0.69).abs() < 0.01, "{heights:?}");
        assert!((heights[0] - heights[2]).abs() < 0.01);
        assert!(doc.contains(">n/a</text>"), "the missing value is marked");
        assert!(doc.contains("Packet I/O &lt;ixgbe-user&gt;"));
        assert!(doc.contains("60 B frames &amp; batch 32"));
    }

    #[test]
    fn bars_stand_on_the_zero_line_inside_the_plot_area() {
        let doc = figure(vec![bars()]).to_svg();
        let bars: Vec<&str> = doc.lines().filter(|l| l.contains("<title>")).collect();
        let ys = attribute_values(&bars.join("\n"), "rect", "y");
        let hs = attribute_values(&bars.join("\n"), "rect", "height");
        let feet: Vec<f64> = ys.iter().zip(&hs).map(|(y, h)| y + h).collect();
        assert!(feet.windows(2).all(|w| (w[0] - w[1]).abs() < 0.02), "{feet:?}");
        // The tallest bar reaches into the top fifth of the plot area but not above it.
        let tallest = hs.iter().copied().fold(0.0, f64::max);
        let plot_height = PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
        assert!(tallest <= plot_height && tallest > 0.8 * plot_height, "{tallest}");
    }

    #[test]
    fn lines_break_at_missing_values_and_keep_series_colours_across_panels() {
        let lines = Panel {
            title: "requests/s".into(),
            y_label: "requests/s".into(),
            x_label: "concurrency".into(),
            categories: vec!["100".into(), "1000".into(), "2000".into()],
            series: vec![
                Series::new("RX", vec![Some(10.0), None, Some(30.0)]),
                Series::new("netpop", vec![Some(5.0), Some(6.0), Some(f64::NAN)]),
            ],
            kind: Kind::Lines,
        };
        let doc = figure(vec![bars(), lines]).to_svg();
        check_well_formed(&doc).unwrap();
        assert!(!doc.contains("NaN"));
        // "RX" has two isolated points (no segment), "netpop" one segment of two points.
        assert_eq!(doc.matches("<polyline").count(), 1, "{doc}");
        assert_eq!(doc.matches("<circle").count(), 4);
        // RX is the second series of the first panel, so it has the second colour in the
        // line panel too.
        assert!(doc.contains(&format!(r#"fill="{}"><title>RX — 100"#, PALETTE[1])), "{doc}");
        assert!(doc.contains(">concurrency</text>"));
    }

    #[test]
    fn an_empty_figure_is_still_a_valid_image() {
        let empty = Panel {
            title: "nothing measured".into(),
            y_label: "Mpps".into(),
            x_label: String::new(),
            categories: vec![],
            series: vec![],
            kind: Kind::Bars,
        };
        for doc in [figure(vec![]).to_svg(), figure(vec![empty]).to_svg()] {
            check_well_formed(&doc).unwrap();
            assert!(!doc.contains("NaN") && !doc.contains("inf"));
        }
    }

    #[test]
    fn legends_wrap_to_the_figure_width() {
        let names = ["lighttpd on Linux", "lighttpd on netpop sim", "Apache on netpop afxdp"];
        let placed = Figure::legend_layout(&names, 300.0);
        assert_eq!(placed[0].0, 0);
        assert!(placed.last().unwrap().0 >= 1, "{placed:?}");
        assert!(placed.iter().all(|&(_, x, n)| x + text_width(n, TEXT_SIZE) <= 300.0));
    }

    #[test]
    fn labels_wrap_at_spaces() {
        assert_eq!(wrap("AF_XDP driver mode, copy", 12), vec!["AF_XDP", "driver mode,", "copy"]);
        assert_eq!(wrap("a b", 10), vec!["a b"]);
        assert!(wrap("", 5).is_empty());
    }
}
