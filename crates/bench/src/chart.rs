//! The ratios of a report as an SVG bar chart, written by hand (no plotting crate).
//!
//! One horizontal bar per comparison line of the report, on a log scale of "times
//! better for the subject": throughput lines plot subject ÷ baseline, lower-is-better
//! lines (latency, start-up time, memory) plot baseline ÷ subject, so that on every line
//! a bar to the right of 1× means the subject wins and a bar to the left means the
//! baseline wins. Bars start at 1×; a thin line across each bar's end is the min–max of
//! the per-round ratios.

use std::fmt::Write;

use crate::report::{num, range_text, ratio_num, Line};

const FONT: f64 = 12.0;
/// Advance of one character of the monospace font at `FONT` px (DejaVu Sans Mono: 0.602 em).
const CHAR_W: f64 = 7.3;
const MARGIN: f64 = 12.0;
const ROW: f64 = 18.0;
const BAR_H: f64 = 11.0;
const PLOT_W: f64 = 560.0;
const TOP: f64 = 106.0;
const HIGHER_COLOR: &str = "#3569b0";
const LOWER_COLOR: &str = "#e08a2c";

/// One bar: a comparison line that has a ratio.
struct Bar {
    label: String,
    workload: String,
    /// Times better for the subject (> 0), and the per-round range.
    value: f64,
    range: Option<(f64, f64)>,
    /// A lower-is-better line, plotted as baseline ÷ subject.
    inverted: bool,
    tooltip: String,
}

/// The log-scale x axis: whole decades from 10^lo to 10^hi, always around 1×.
struct Scale {
    lo: i32,
    hi: i32,
    x0: f64,
    w: f64,
}

impl Scale {
    fn new(values: impl Iterator<Item = f64>, x0: f64, w: f64) -> Scale {
        let (mut min, mut max) = (1.0f64, 1.0f64);
        for v in values {
            min = min.min(v);
            max = max.max(v);
        }
        // A little slack so that float noise in log10(1000) does not add a decade.
        let lo = ((min.log10() + 1e-9).floor() as i32).min(-1);
        let hi = ((max.log10() - 1e-9).ceil() as i32).max(1);
        Scale { lo, hi, x0, w }
    }

    fn x(&self, v: f64) -> f64 {
        let l = v.log10().clamp(self.lo as f64, self.hi as f64);
        self.x0 + (l - self.lo as f64) / (self.hi - self.lo) as f64 * self.w
    }
}

/// Escapes text and attribute values for XML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // Control characters other than tab and newline are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn width_of(s: &str) -> f64 {
    s.chars().count() as f64 * CHAR_W
}

/// `0.01×`, `1×`, `1000×`: the label of decade `k`.
fn decade(k: i32) -> String {
    if k >= 0 {
        format!("{}×", 10u64.pow(k as u32))
    } else {
        format!("{:.*}×", (-k) as usize, 10f64.powi(k))
    }
}

fn bars(lines: &[Line], subject: &str, baseline: &str) -> Vec<Bar> {
    lines
        .iter()
        .filter_map(|l| {
            let (value, range) = l.advantage()?;
            let (ratio, ratio_range) = l.ratio?;
            let metric = match l.metric {
                m if m.starts_with("start to first") => "first answer ms",
                m if m.starts_with("idle RSS") => "idle RSS MiB",
                m if m.starts_with("idle private") => "idle RssAnon MiB",
                m => m,
            };
            let mut label = format!("{} {metric}", l.workload);
            if l.subject != subject {
                let _ = write!(label, " [{}]", l.subject);
            }
            let median = |m: Option<f64>| m.map(num).unwrap_or_else(|| "–".into());
            let tooltip = format!(
                "{label}: {} {}, {baseline} {}; ratio {}/{baseline} {}×{}",
                l.subject,
                median(l.subject_median()),
                median(l.baseline_median()),
                l.subject,
                ratio_num(ratio),
                range_text(ratio_range),
            );
            Some(Bar {
                label,
                workload: l.workload.clone(),
                value,
                range,
                inverted: !l.higher_better,
                tooltip,
            })
        })
        .collect()
}

/// The chart of the comparison lines (see [`crate::report::lines`]). `caption` is a line
/// under the title (the run: date, rounds, quick or full).
pub fn svg(lines: &[Line], subject: &str, baseline: &str, caption: Option<&str>) -> String {
    let bars = bars(lines, subject, baseline);
    let title = format!("{subject} vs {baseline}: how many times better, per line (log scale)");
    let label_w = bars.iter().map(|b| width_of(&b.label)).fold(0.0, f64::max);
    let values: Vec<String> = bars
        .iter()
        .map(|b| format!("{}×{}", ratio_num(b.value), range_text(b.range)))
        .collect();
    let value_w = values.iter().map(|v| width_of(v)).fold(0.0, f64::max);
    let x0 = MARGIN + label_w + 12.0;
    let value_x = x0 + PLOT_W + 14.0;
    let legend = [
        (
            HIGHER_COLOR,
            format!("throughput (MB/s, ops/s): {subject} ÷ {baseline}"),
        ),
        (
            LOWER_COLOR,
            format!(
                "latency, start-up time, memory: {baseline} ÷ {subject} (inverted: right is better for {subject} on every line)"
            ),
        ),
    ];
    let legend_w = legend
        .iter()
        .map(|(_, t)| 20.0 + width_of(t))
        .fold(0.0, f64::max);
    let width = (value_x + value_w + MARGIN)
        .max(MARGIN * 2.0 + legend_w)
        .max(MARGIN * 2.0 + width_of(&title) * 1.2)
        .ceil();
    let bottom = TOP + bars.len().max(1) as f64 * ROW;
    let height = (bottom + 50.0).ceil();
    let scale = Scale::new(
        bars.iter()
            .flat_map(|b| [Some(b.value), b.range.map(|r| r.0), b.range.map(|r| r.1)])
            .flatten(),
        x0,
        PLOT_W,
    );

    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        w,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="{FONT}">"#
    );
    let _ = writeln!(w, "<title>{}</title>", esc(&title));
    let _ = writeln!(
        w,
        r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        w,
        r#"<text x="{MARGIN}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        esc(&title)
    );
    if let Some(c) = caption {
        let _ = writeln!(
            w,
            r##"<text x="{MARGIN}" y="40" fill="#444444">{}</text>"##,
            esc(c)
        );
    }
    for (k, (color, text)) in legend.iter().enumerate() {
        let y = 52.0 + k as f64 * 16.0;
        let _ = writeln!(
            w,
            r#"<rect x="{MARGIN}" y="{y}" width="12" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            MARGIN + 18.0,
            y + 9.5,
            esc(text)
        );
    }
    if bars.is_empty() {
        let _ = writeln!(
            w,
            r#"<text x="{MARGIN}" y="{}">no comparison lines: these results lack one of the two registries</text>"#,
            TOP + 13.0
        );
        let _ = writeln!(w, "</svg>");
        return o;
    }

    // Stripes: every other workload gets a grey background, so that its lines read as one.
    let mut shade = false;
    for (i, b) in bars.iter().enumerate() {
        if i > 0 && bars[i - 1].workload != b.workload {
            shade = !shade;
        }
        if shade {
            let _ = writeln!(
                w,
                r##"<rect x="{MARGIN}" y="{}" width="{}" height="{ROW}" fill="#f1f1f1"/>"##,
                TOP + i as f64 * ROW,
                width - 2.0 * MARGIN
            );
        }
    }
    // Grid: 2..9 within each decade (light), the decades (darker), with labels.
    for k in scale.lo..scale.hi {
        for m in 2..=9 {
            let x = scale.x(m as f64 * 10f64.powi(k));
            let _ = writeln!(
                w,
                r##"<line x1="{x:.2}" y1="{TOP}" x2="{x:.2}" y2="{bottom}" stroke="#e6e6e6"/>"##
            );
        }
    }
    for k in scale.lo..=scale.hi {
        let x = scale.x(10f64.powi(k));
        let _ = writeln!(
            w,
            r##"<line x1="{x:.2}" y1="{TOP}" x2="{x:.2}" y2="{}" stroke="#b4b4b4"/>"##,
            bottom + 4.0
        );
        let _ = writeln!(
            w,
            r#"<text class="tick" x="{x:.2}" y="{}" text-anchor="middle">{}</text>"#,
            bottom + 17.0,
            decade(k)
        );
    }
    let _ = writeln!(
        w,
        r##"<line x1="{x0:.2}" y1="{bottom}" x2="{:.2}" y2="{bottom}" stroke="#888888"/>"##,
        x0 + PLOT_W
    );

    let one = scale.x(1.0);
    for (i, (b, value)) in bars.iter().zip(&values).enumerate() {
        let y = TOP + i as f64 * ROW;
        let cy = y + ROW / 2.0;
        let xv = scale.x(b.value);
        let color = if b.inverted {
            LOWER_COLOR
        } else {
            HIGHER_COLOR
        };
        let _ = writeln!(
            w,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
            x0 - 8.0,
            y + 13.0,
            esc(&b.label)
        );
        let _ = writeln!(
            w,
            r#"<rect class="bar" x="{:.2}" y="{:.2}" width="{:.2}" height="{BAR_H}" fill="{color}"><title>{}</title></rect>"#,
            one.min(xv),
            cy - BAR_H / 2.0,
            (xv - one).abs(),
            esc(&b.tooltip)
        );
        if let Some((lo, hi)) = b.range.filter(|(a, b)| a != b) {
            let (xa, xb) = (scale.x(lo), scale.x(hi));
            let _ = writeln!(
                w,
                r##"<path class="range" d="M{xa:.2} {:.2}V{:.2}M{xa:.2} {cy:.2}H{xb:.2}M{xb:.2} {:.2}V{:.2}" stroke="#222222" fill="none"/>"##,
                cy - 3.0,
                cy + 3.0,
                cy - 3.0,
                cy + 3.0
            );
        }
        let _ = writeln!(
            w,
            r#"<text x="{value_x:.2}" y="{:.2}">{}</text>"#,
            y + 13.0,
            esc(value)
        );
    }
    let _ = writeln!(
        w,
        r##"<line class="one" x1="{one:.2}" y1="{}" x2="{one:.2}" y2="{bottom}" stroke="#222222" stroke-width="1.5"/>"##,
        TOP - 6.0
    );
    let _ = writeln!(
        w,
        r#"<text x="{one:.2}" y="{}" text-anchor="middle" font-weight="bold">1× = even</text>"#,
        TOP - 9.0
    );
    let _ = writeln!(
        w,
        r#"<text x="{:.2}" y="{}" text-anchor="end">← {} better</text>"#,
        one - 8.0,
        bottom + 36.0,
        esc(baseline)
    );
    let _ = writeln!(
        w,
        r#"<text x="{:.2}" y="{}">{} better →</text>"#,
        one + 8.0,
        bottom + 36.0,
        esc(subject)
    );
    let _ = writeln!(w, "</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::report::lines;

    /// A strict-enough XML well-formedness check: one root element, balanced tags,
    /// quoted attributes without `<`, no duplicate attributes, only the predefined or
    /// numeric entities, no stray `&` or `<` in text.
    fn well_formed(s: &str) -> Result<(), String> {
        fn entities(t: &str) -> Result<(), String> {
            let mut rest = t;
            while let Some(p) = rest.find('&') {
                let after = &rest[p + 1..];
                let end = after.find(';').ok_or(format!("bare & in {t:?}"))?;
                let name = &after[..end];
                let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                    || name
                        .strip_prefix("#x")
                        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                    || name
                        .strip_prefix('#')
                        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
                if !ok {
                    return Err(format!("bad entity &{name}; in {t:?}"));
                }
                rest = &after[end + 1..];
            }
            Ok(())
        }
        let name_len = |t: &str| {
            t.char_indices()
                .find(|(i, c)| {
                    !(c.is_ascii_alphanumeric() || "_:-.".contains(*c))
                        || (*i == 0 && c.is_ascii_digit())
                })
                .map(|(i, _)| i)
                .unwrap_or(t.len())
        };
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let Some(p) = rest.find('<') else {
                if !stack.is_empty() || !rest.trim().is_empty() {
                    return Err(format!("text outside the root or unclosed {stack:?}"));
                }
                break;
            };
            let text = &rest[..p];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            entities(text)?;
            rest = &rest[p..];
            if let Some(r) = rest.strip_prefix("<?") {
                rest = &r[r.find("?>").ok_or("unclosed <?")? + 2..];
            } else if let Some(r) = rest.strip_prefix("<!--") {
                rest = &r[r.find("-->").ok_or("unclosed comment")? + 3..];
            } else if let Some(r) = rest.strip_prefix("</") {
                let n = name_len(r);
                let open = stack.pop().ok_or(format!("stray </{}>", &r[..n]))?;
                if open != &r[..n] {
                    return Err(format!("</{}> closes <{open}>", &r[..n]));
                }
                let r = r[n..].trim_start();
                rest = r.strip_prefix('>').ok_or("bad end tag")?;
            } else {
                let r = &rest[1..];
                let n = name_len(r);
                if n == 0 {
                    return Err(format!("bad tag at {:?}", &rest[..rest.len().min(20)]));
                }
                let name = &r[..n];
                if stack.is_empty() {
                    roots += 1;
                }
                let mut r = &r[n..];
                let mut seen: Vec<&str> = Vec::new();
                loop {
                    let t = r.trim_start();
                    if let Some(t) = t.strip_prefix("/>") {
                        r = t;
                        break;
                    }
                    if let Some(t) = t.strip_prefix('>') {
                        stack.push(name);
                        r = t;
                        break;
                    }
                    if t.len() == r.len() {
                        return Err(format!("no space before attribute in <{name}"));
                    }
                    let an = name_len(t);
                    if an == 0 {
                        return Err(format!(
                            "bad attribute in <{name}: {:?}",
                            &t[..t.len().min(20)]
                        ));
                    }
                    if seen.contains(&&t[..an]) {
                        return Err(format!("duplicate attribute {} in <{name}", &t[..an]));
                    }
                    seen.push(&t[..an]);
                    let t = t[an..]
                        .trim_start()
                        .strip_prefix('=')
                        .ok_or("attribute without =")?;
                    let t = t.trim_start();
                    let q = t
                        .chars()
                        .next()
                        .filter(|c| *c == '"' || *c == '\'')
                        .ok_or("unquoted attribute")?;
                    let end = t[1..].find(q).ok_or("unclosed attribute")?;
                    let v = &t[1..1 + end];
                    if v.contains('<') {
                        return Err(format!("< in attribute {v:?}"));
                    }
                    entities(v)?;
                    r = &t[end + 2..];
                }
                rest = r;
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(())
    }

    #[test]
    fn the_checker_rejects_broken_xml() {
        assert!(well_formed("<a><b x=\"1\"/>t &amp; u</a>").is_ok());
        for bad in [
            "<a><b></a>",
            "<a>x & y</a>",
            "<a x=1/>",
            "<a x=\"<\"/>",
            "<a x=\"1\" x=\"2\"/>",
            "<a/><b/>",
            "<a>",
            "<a>&nbsp;</a>",
        ] {
            assert!(well_formed(bad).is_err(), "{bad}");
        }
    }

    fn rec(w: &str, reg: &str, round: u32, mbps: f64, ops: f64, p: f64) -> Record {
        Record {
            workload: w.into(),
            registry: reg.into(),
            round,
            mb_per_s: mbps,
            ops_per_s: ops,
            p50_ms: p,
            p99_ms: p * 2.0,
            ..Default::default()
        }
    }

    fn attr(tag: &str, name: &str) -> f64 {
        let k = format!(" {name}=\"");
        let a = tag.find(&k).unwrap_or_else(|| panic!("no {name} in {tag}")) + k.len();
        tag[a..a + tag[a..].find('"').unwrap()].parse().unwrap()
    }

    fn tags<'a>(svg: &'a str, start: &str) -> Vec<&'a str> {
        svg.match_indices(start)
            .map(|(i, _)| &svg[i..i + svg[i..].find('>').unwrap()])
            .collect()
    }

    #[test]
    fn one_bar_per_line_on_a_log_axis() {
        let s = "b<&>\"'r";
        let mut rs = Vec::new();
        for round in 1..=2 {
            // Throughput: s is 10× faster. Requests: 100× the ops/s, latency 1/100 (so
            // the latency bars are inverted to 100×).
            rs.push(rec("pull", s, round, 1000.0, 1.0, 1.0));
            rs.push(rec("pull", "dist", round, 100.0, 1.0, 1.0));
            rs.push(rec("catalog-first", s, round, 0.0, 1000.0, 0.1));
            rs.push(rec("catalog-first", "dist", round, 0.0, 10.0, 10.0));
            // The baseline wins this one: 1/10 of its MB/s.
            rs.push(rec("skopeo-push", s, round, 10.0, 1.0, 1.0));
            rs.push(rec("skopeo-push", "dist", round, 100.0, 1.0, 1.0));
            // Only on the subject: a line of the table without a ratio, so no bar.
            rs.push(rec("ui-search", s, round, 0.0, 50.0, 1.0));
        }
        // An extra registry on one workload (berth-auth), with rounds that differ.
        rs.push(rec("catalog-first", "auth", 1, 0.0, 100.0, 1.0));
        rs.push(rec("catalog-first", "auth", 2, 0.0, 1000.0, 1.0));
        let mut st = |reg: &str, secs: f64, kib: u64| {
            let mut r = rec("startup", reg, 1, 0.0, 0.0, 0.0);
            r.seconds = secs;
            r.rss_kib = Some(kib);
            rs.push(r);
        };
        st(s, 0.01, 10240);
        st("dist", 0.1, 20480);
        let ls = lines(&rs, s, "dist");
        let with_ratio = ls.iter().filter(|l| l.advantage().is_some()).count();
        // pull 1, catalog-first 3 + 3 (auth), skopeo-push 1, startup 2; ui-search and
        // the startup line without readings (RssAnon) none.
        assert_eq!(with_ratio, 10);
        assert_eq!(ls.len(), 14);

        let svg = svg(&ls, s, "dist", Some("quick & dirty <run>"));
        well_formed(&svg).unwrap();
        assert!(svg.contains("quick &amp; dirty &lt;run&gt;"));
        assert!(svg.contains("b&lt;&amp;&gt;&quot;&apos;r better →"));
        let bars = tags(&svg, "<rect class=\"bar\"");
        assert_eq!(bars.len(), with_ratio);

        // Values from 1/10 (skopeo-push) to 100 (catalog-first, and the top of the auth
        // line's range): decades 0.1× to 100×, 3 of them.
        let one = attr(tags(&svg, "<line class=\"one\"")[0], "x1");
        let ticks = tags(&svg, "<text class=\"tick\"");
        assert_eq!(ticks.len(), 4);
        let x0 = attr(ticks[0], "x");
        let decade_w = PLOT_W / 3.0;
        assert!(
            (one - (x0 + decade_w)).abs() < 0.01,
            "1× at {one}, axis from {x0}"
        );
        assert!(svg.contains(">0.1×</text>") && svg.contains(">100×</text>"));
        let geom = |k: usize| {
            let b = bars[k];
            (attr(b, "x"), attr(b, "width"))
        };
        // Bar 0, pull MB/s: 10× → one decade to the right of 1×.
        let (x, wd) = geom(0);
        assert!(
            (x - one).abs() < 0.01 && (wd - decade_w).abs() < 0.01,
            "{x} {wd}"
        );
        // Bars 1–3, catalog-first ops/s, p50, p99: 100× each (latency inverted).
        for k in 1..=3 {
            let (x, wd) = geom(k);
            assert!((x - one).abs() < 0.01 && (wd - 2.0 * decade_w).abs() < 0.01);
        }
        assert!(bars[1].contains(HIGHER_COLOR) && bars[2].contains(LOWER_COLOR));
        // Bar 4, catalog-first ops/s [auth]: median 550/10 = 55×.
        let (_, wd) = geom(4);
        assert!((wd - 55f64.log10() * decade_w).abs() < 0.01);
        // Bar 7, skopeo-push: 0.1× → one decade to the left, ending at 1×.
        let (x, wd) = geom(7);
        assert!((x + wd - one).abs() < 0.01 && (wd - decade_w).abs() < 0.01);
        // Bars 8, 9: start-up 10× faster, idle RSS half → 2×, both to the right.
        let (x, wd) = geom(9);
        assert!((x - one).abs() < 0.01 && (wd - 2f64.log10() * decade_w).abs() < 0.01);
        // The per-round range of the auth ops/s line: 10× to 100×.
        let ranges = tags(&svg, "<path class=\"range\"");
        assert_eq!(ranges.len(), 1);
        assert!(svg.contains(">55.0× (10.0–100)</text>"));
    }

    #[test]
    fn an_empty_chart_is_still_valid() {
        let svg = svg(&[], "berth", "distribution", None);
        well_formed(&svg).unwrap();
        assert!(!svg.contains("class=\"bar\""));
        assert!(svg.contains("no comparison lines"));
    }

    #[test]
    fn scale_and_labels() {
        let s = Scale::new([1000.0, 0.001].into_iter(), 0.0, 600.0);
        assert_eq!((s.lo, s.hi), (-3, 3));
        assert!((s.x(1.0) - 300.0).abs() < 1e-9);
        assert!((s.x(10.0) - 400.0).abs() < 1e-9);
        assert!((s.x(1e6) - 600.0).abs() < 1e-9, "clamped");
        let s = Scale::new([1.5].into_iter(), 0.0, 200.0);
        assert_eq!((s.lo, s.hi), (-1, 1));
        assert_eq!(decade(-2), "0.01×");
        assert_eq!(decade(3), "1000×");
        assert_eq!(esc("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos; ");
    }
}
