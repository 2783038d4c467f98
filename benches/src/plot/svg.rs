//! A small SVG 1.1 writer: a document of rectangles, lines, polylines, circles and text,
//! written as text (W3C SVG 1.1, "Basic Shapes" §9 and "Text" §10; XML 1.0 §2.4 for the
//! characters that must be escaped in text and attribute values).
//!
//! Every number goes through [`num`], which writes at most two decimals and turns anything
//! that is not finite into `0`, so a document never carries `NaN` or `inf`.

use std::fmt::Write as _;

/// Horizontal alignment of a text element (SVG `text-anchor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// The text starts at x.
    Start,
    /// The text is centred on x.
    Middle,
    /// The text ends at x.
    End,
}

impl Anchor {
    fn attribute(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// How a text element looks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextStyle {
    /// Font size in pixels.
    pub size: f64,
    /// Horizontal alignment.
    pub anchor: Anchor,
    /// Bold or not.
    pub bold: bool,
    /// Fill colour (a CSS colour).
    pub color: &'static str,
    /// Rotation in degrees about the text's anchor point (-90 for a y-axis label).
    pub rotate: f64,
}

impl TextStyle {
    /// Plain text of `size` pixels.
    pub fn new(size: f64, anchor: Anchor) -> Self {
        TextStyle { size, anchor, bold: false, color: "#222", rotate: 0.0 }
    }

    /// The same, bold.
    pub fn bold(self) -> Self {
        TextStyle { bold: true, ..self }
    }

    /// The same in another colour.
    pub fn color(self, color: &'static str) -> Self {
        TextStyle { color, ..self }
    }

    /// The same, rotated.
    pub fn rotated(self, degrees: f64) -> Self {
        TextStyle { rotate: degrees, ..self }
    }
}

/// An SVG document being written.
#[derive(Clone, Debug)]
pub struct Svg {
    width: f64,
    height: f64,
    body: String,
}

impl Svg {
    /// An empty document of `width` × `height` pixels with a white background.
    pub fn new(width: f64, height: f64) -> Self {
        let mut svg = Svg { width, height, body: String::new() };
        svg.rect(0.0, 0.0, width, height, "#fff");
        svg
    }

    /// A filled rectangle. Negative sizes are drawn as zero.
    pub fn rect(&mut self, x: f64, y: f64, width: f64, height: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>"#,
            num(x),
            num(y),
            num(width.max(0.0)),
            num(height.max(0.0)),
            attr(fill)
        );
    }

    /// A rectangle with a tooltip (`<title>`, shown on hover by browsers).
    pub fn rect_with_title(
        &mut self,
        (x, y, width, height): (f64, f64, f64, f64),
        fill: &str,
        title: &str,
    ) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>"#,
            num(x),
            num(y),
            num(width.max(0.0)),
            num(height.max(0.0)),
            attr(fill),
            text(title)
        );
    }

    /// A straight line; `dash` is an SVG `stroke-dasharray` such as `"3 3"`.
    pub fn line(&mut self, from: (f64, f64), to: (f64, f64), stroke: &str, width: f64, dash: &str) {
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{}""#, attr(dash))
        };
        let _ = writeln!(
            self.body,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="{}"{dash}/>"#,
            num(from.0),
            num(from.1),
            num(to.0),
            num(to.1),
            attr(stroke),
            num(width)
        );
    }

    /// An open polyline through `points`; fewer than two points draw nothing.
    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: &str, width: f64) {
        if points.len() < 2 {
            return;
        }
        let coords: Vec<String> =
            points.iter().map(|&(x, y)| format!("{},{}", num(x), num(y))).collect();
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round"/>"#,
            coords.join(" "),
            attr(stroke),
            num(width)
        );
    }

    /// A filled circle with a tooltip.
    pub fn circle(&mut self, center: (f64, f64), radius: f64, fill: &str, title: &str) {
        let _ = writeln!(
            self.body,
            r#"<circle cx="{}" cy="{}" r="{}" fill="{}"><title>{}</title></circle>"#,
            num(center.0),
            num(center.1),
            num(radius.max(0.0)),
            attr(fill),
            text(title)
        );
    }

    /// A line of text whose baseline starts, centres or ends at (`x`, `y`).
    pub fn text(&mut self, x: f64, y: f64, content: &str, style: TextStyle) {
        let weight = if style.bold { r#" font-weight="bold""# } else { "" };
        let rotate = if style.rotate == 0.0 || !style.rotate.is_finite() {
            String::new()
        } else {
            format!(r#" transform="rotate({} {} {})""#, num(style.rotate), num(x), num(y))
        };
        let _ = writeln!(
            self.body,
            r#"<text x="{}" y="{}" font-size="{}" text-anchor="{}" fill="{}"{weight}{rotate}>{}</text>"#,
            num(x),
            num(y),
            num(style.size),
            style.anchor.attribute(),
            attr(style.color),
            text(content)
        );
    }

    /// The finished document.
    pub fn finish(self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n\
             {body}</svg>\n",
            w = num(self.width),
            h = num(self.height),
            body = self.body
        )
    }
}

/// A coordinate or size as SVG text: two decimals at most, trailing zeros dropped, and `0`
/// for anything that is not finite.
pub fn num(value: f64) -> String {
    if !value.is_finite() {
        return "0".into();
    }
    let rounded = (value * 100.0).round() / 100.0;
    let text = format!("{rounded:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" || text.is_empty() { "0".into() } else { text.to_string() }
}

/// `s` escaped for character data (XML 1.0 §2.4): `&`, `<` and `>`; control characters
/// other than tab and newline, which XML 1.0 does not allow, are dropped.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `s` escaped for a double-quoted attribute value (XML 1.0 §2.3, §3.1).
pub fn attr(s: &str) -> String {
    text(s).replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::super::xml_check::check_well_formed;
    use super::*;

    #[test]
    fn numbers_are_short_and_never_nan() {
        assert_eq!(num(1.0), "1");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(1.234_567), "1.23");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(num(f64::NEG_INFINITY), "0");
        assert_eq!(num(250.0), "250");
    }

    #[test]
    fn markup_in_labels_is_escaped() {
        assert_eq!(text("a < b & c > d"), "a &lt; b &amp; c &gt; d");
        assert_eq!(attr(r#"say "hi""#), "say &quot;hi&quot;");
        assert_eq!(text("bell\u{7}"), "bell");
    }

    #[test]
    fn a_document_with_every_element_is_well_formed_and_finite() {
        let mut svg = Svg::new(200.0, 100.0);
        svg.rect(10.0, f64::NAN, 20.0, -5.0, "#123456");
        svg.rect_with_title((1.0, 2.0, 3.0, 4.0), "red", "AF_XDP <copy> & \"SKB\"");
        svg.line((0.0, 0.0), (f64::INFINITY, 10.0), "#000", 1.0, "2 2");
        svg.polyline(&[(0.0, 0.0), (5.0, f64::NAN), (10.0, 10.0)], "blue", 2.0);
        svg.polyline(&[(0.0, 0.0)], "blue", 2.0);
        svg.circle((5.0, 5.0), 3.0, "green", "p99 < 1 ms");
        svg.text(50.0, 50.0, "requests/s & p99", TextStyle::new(12.0, Anchor::Middle).bold());
        svg.text(5.0, 50.0, "y", TextStyle::new(12.0, Anchor::Middle).rotated(-90.0));
        let doc = svg.finish();
        check_well_formed(&doc).unwrap();
        assert!(!doc.contains("NaN") && !doc.contains("inf"), "{doc}");
        assert_eq!(doc.matches("<polyline").count(), 1, "a single point draws no line");
        assert!(doc.contains(r#"transform="rotate(-90 5 50)""#));
        assert!(doc.contains(r#"height="0""#), "negative sizes are clamped");
    }
}
