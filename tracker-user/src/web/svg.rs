//! SVG charts that tracker draws itself (bar, share and column charts), safe to inline in an offline HTML page.
//!
//! Charts are inlined in HTML, whose parser puts `<svg>` in the SVG namespace by itself: there is no `xmlns`,
//! so no chart carries anything that looks like a link. A file served alone as `image/svg+xml` would need one.

/// Width of the drawing in user units. The svg scales to its container (`width="100%"`), so this only fixes
/// text size relative to the chart: 14-unit text stays about 12 CSS px on a 360 px phone.
const VIEW_W: u64 = 400;
const PAD: u64 = 8;
const INNER_W: u64 = VIEW_W - 2 * PAD;
const FONT: u64 = 14;
const TITLE_FONT: u64 = 16;
const TITLE_BASELINE: u64 = PAD + TITLE_FONT;
const HEADER_H: u64 = 36;
/// One bar-chart row: a text line with the label and value, then the bar under it, because on a phone there
/// is no room for a label column beside the bar.
const ROW_H: u64 = 40;
const BAR_GAP: u64 = 4;
const BAR_H: u64 = 12;
const SHARE_BAR_H: u64 = 24;
const LEGEND_GAP: u64 = 14;
const LEGEND_H: u64 = 22;
const SWATCH: u64 = 12;
const SWATCH_TEXT_GAP: u64 = 6;
const EMPTY_H: u64 = 64;
/// A column chart: the line under the title that gives the scale, the plot, and the tick labels under it.
const SCALE_BASELINE: u64 = HEADER_H + 4;
const PLOT_TOP: u64 = HEADER_H + 12;
const PLOT_H: u64 = 120;
const TICK_GAP: u64 = 4;
/// The gap between two columns, in percent of a column's slot.
const COLUMN_GAP_PCT: u64 = 20;
/// Average advance of a system-ui glyph in percent of the font size, rounded up so that the estimate errs
/// towards cutting a label rather than letting it run into the value.
const CHAR_W_PCT: u64 = 62;
const PCT: u64 = 100;
/// A label is never cut shorter than this, even beside a very long value: some of it must stay readable.
const MIN_LABEL_CHARS: usize = 8;
const NOTE_MAX_CHARS: usize = 16;
/// Bar widths are computed in hundredths of a user unit with integer arithmetic: exact, and no float
/// formatting that could differ between platforms.
const CENTI: u64 = 100;
/// A non-zero value always gets at least one user unit, so that 3 connections out of a million stay visible.
const MIN_SLIVER: u64 = CENTI;
const DIGIT_GROUP: usize = 3;
/// Narrow no-break space: the SI digit separator, the same in every locale, and never wrapped.
const GROUP_SEP: char = '\u{202F}';
const ELLIPSIS: char = '…';
const FONT_FAMILY: &str = "system-ui, sans-serif";
const TEXT_FILL: &str = "#222222";
const MUTED_FILL: &str = "#555555";
const BAR_FILL: &str = "#0072B2";
const TRACK_FILL: &str = "#EEEEEE";
const OUTLINE: &str = "#333333";
/// Okabe-Ito, distinguishable with the common colour-vision deficiencies, then the same hues half-way to white;
/// colours repeat after that. Yellow is weak on white, so the share bar and the swatches get a dark outline.
const PALETTE: [&str; 16] = [
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000", // full
    "#F2CF7F", "#AAD9F4", "#7FCEB9", "#F7F1A0", "#7FB8D8", "#EAAE7F", "#E5BCD3", "#7F7F7F", // lighter
];

/// One bar or slice: a label from the network or the user (untrusted: always escaped), a value, and an
/// optional short note shown after the value (e.g. "12.5 %", "3.1 MB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    pub label: &'a str,
    pub value: u64,
    pub note: &'a str,
}

/// Escapes text for XML/HTML text nodes and attribute values (& < > " ' ), and replaces control characters
/// U+0000-U+001F, U+007F-U+009F (which are invalid or dangerous in XML 1.0) with U+FFFD. Used by the HTML
/// page too.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // U+FFFE and U+FFFF are not XML characters either: one of them would make the whole chart unparsable.
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Horizontal bar chart, one row per item in the given order (the caller sorts), bar length proportional to
/// value relative to the largest; label above the bar, value/note at the right. Width-responsive: `viewBox`
/// and `width="100%"`, height from the row count. Long labels are cut with an ellipsis, the full label is in
/// a `<title>` for hover. Zero items: a small svg that says "no data".
pub fn bar_chart(title: &str, items: &[Item<'_>]) -> String {
    let Some(max) = items.iter().map(|item| item.value).max() else {
        return no_data(title);
    };
    let rows = u64::try_from(items.len()).unwrap_or(u64::MAX);
    let mut out = open(title, HEADER_H.saturating_add(rows.saturating_mul(ROW_H)).saturating_add(PAD));
    for (row, item) in (0u64..).zip(items) {
        let top = HEADER_H.saturating_add(row.saturating_mul(ROW_H));
        let value = value_text(item);
        out.push_str(&format!("<g><title>{}: {}</title>\n", escape(item.label), escape(&value)));
        label_and_value(&mut out, PAD, top.saturating_add(FONT), item.label, &value);
        let bar_y = top.saturating_add(FONT + BAR_GAP);
        out.push_str(&format!(
            "<rect class=\"track\" x=\"{PAD}\" y=\"{bar_y}\" width=\"{INNER_W}\" height=\"{BAR_H}\" \
             fill=\"{TRACK_FILL}\"/>\n"
        ));
        let mut width = scale_to(item.value, max, INNER_W * CENTI);
        if item.value > 0 {
            width = width.max(MIN_SLIVER);
        }
        out.push_str(&format!(
            "<rect class=\"bar\" x=\"{PAD}\" y=\"{bar_y}\" width=\"{}\" height=\"{BAR_H}\" fill=\"{BAR_FILL}\"/>\n</g>\n",
            centi(width)
        ));
    }
    out.push_str("</svg>\n");
    out
}

/// Share chart: one 100 % stacked horizontal bar with a legend below (label, value, note). Slices in the given
/// order, each coloured from the Okabe-Ito palette, then its lighter shades. A slice with a non-zero value
/// gets at least a one-unit sliver, and every item a legend line. Zero total: "no data".
pub fn share_chart(title: &str, items: &[Item<'_>]) -> String {
    let Some(widths) = slice_widths(items, INNER_W * CENTI) else {
        return no_data(title);
    };
    let rows = u64::try_from(items.len()).unwrap_or(u64::MAX);
    let legend_top = HEADER_H + SHARE_BAR_H + LEGEND_GAP;
    let mut out = open(title, legend_top.saturating_add(rows.saturating_mul(LEGEND_H)).saturating_add(PAD));
    let mut x = PAD * CENTI;
    for (index, (item, &width)) in items.iter().zip(&widths).enumerate() {
        if width == 0 {
            continue;
        }
        out.push_str(&format!(
            "<rect class=\"slice\" x=\"{}\" y=\"{HEADER_H}\" width=\"{}\" height=\"{SHARE_BAR_H}\" fill=\"{}\">\
             <title>{}: {}</title></rect>\n",
            centi(x),
            centi(width),
            colour(index),
            escape(item.label),
            escape(&value_text(item))
        ));
        x += width;
    }
    // Drawn last so the outline is not covered by the slices.
    out.push_str(&format!(
        "<rect x=\"{PAD}\" y=\"{HEADER_H}\" width=\"{INNER_W}\" height=\"{SHARE_BAR_H}\" fill=\"none\" \
         stroke=\"{OUTLINE}\"/>\n"
    ));
    for (index, item) in items.iter().enumerate() {
        let row = u64::try_from(index).unwrap_or(u64::MAX);
        let top = legend_top.saturating_add(row.saturating_mul(LEGEND_H));
        let value = value_text(item);
        out.push_str(&format!(
            "<g><title>{}: {}</title>\n<rect x=\"{PAD}\" y=\"{top}\" width=\"{SWATCH}\" height=\"{SWATCH}\" \
             fill=\"{}\" stroke=\"{OUTLINE}\" stroke-width=\"0.5\"/>\n",
            escape(item.label),
            escape(&value),
            colour(index)
        ));
        label_and_value(&mut out, PAD + SWATCH + SWATCH_TEXT_GAP, top.saturating_add(SWATCH), item.label, &value);
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

/// One column of a [`column_chart`]: the tick label under it (empty for none: the caller thins the ticks so that
/// they do not overlap), the full name of its bucket for hover, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    pub tick: &'a str,
    pub name: &'a str,
    pub value: u64,
}

/// Column chart over time (a timeline): one column per bucket in the given order, height proportional to the
/// largest value, which is written under the title so the scale is known without an axis. Every column has a
/// `<title>` with its name and value. Zero total: "no data".
pub fn column_chart(title: &str, columns: &[Column<'_>]) -> String {
    let max = columns.iter().map(|c| c.value).max().unwrap_or(0);
    let Some(count) = u64::try_from(columns.len()).ok().filter(|_| max > 0) else {
        return no_data(title);
    };
    let base = PLOT_TOP + PLOT_H;
    let tick_baseline = base + TICK_GAP + FONT;
    let mut out = open(title, tick_baseline + PAD);
    let scale = Item { label: "", value: max, note: "" };
    out.push_str(&format!(
        "<text x=\"{}\" y=\"{SCALE_BASELINE}\" text-anchor=\"end\" fill=\"{MUTED_FILL}\">max {}</text>\n",
        VIEW_W - PAD,
        escape(&value_text(&scale))
    ));
    let slot = INNER_W * CENTI / count;
    let width = (slot * (PCT - COLUMN_GAP_PCT) / PCT).max(1);
    for (index, column) in (0u64..).zip(columns) {
        let x = PAD * CENTI + index * slot;
        let mut height = scale_to(column.value, max, PLOT_H * CENTI);
        if column.value > 0 {
            height = height.max(MIN_SLIVER);
        }
        let item = Item { label: column.name, value: column.value, note: "" };
        out.push_str(&format!(
            "<rect class=\"column\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{BAR_FILL}\">\
             <title>{}: {}</title></rect>\n",
            centi(x),
            centi(base * CENTI - height),
            centi(width),
            centi(height),
            escape(column.name),
            escape(&value_text(&item))
        ));
        if !column.tick.is_empty() {
            out.push_str(&format!(
                "<text x=\"{}\" y=\"{tick_baseline}\" text-anchor=\"middle\">{}</text>\n",
                centi(x + width / 2),
                escape(&cut(column.tick, MIN_LABEL_CHARS))
            ));
        }
    }
    out.push_str(&format!(
        "<rect class=\"axis\" x=\"{PAD}\" y=\"{base}\" width=\"{INNER_W}\" height=\"1\" fill=\"{OUTLINE}\"/>\n</svg>\n"
    ));
    out
}

/// Splits `span` among the items in proportion to their values, every non-zero value getting at least
/// [`MIN_SLIVER`] (less only when there are more items than units). The widths add up to exactly `span`:
/// the units lost to rounding go to the largest remainders, ties to the earlier item. `None` if all are zero.
fn slice_widths(items: &[Item<'_>], span: u64) -> Option<Vec<u64>> {
    let total: u128 = items.iter().map(|item| u128::from(item.value)).sum();
    let shown = u64::try_from(items.iter().filter(|item| item.value > 0).count()).unwrap_or(u64::MAX);
    if total == 0 || shown == 0 {
        return None;
    }
    let floor = MIN_SLIVER.min(span / shown);
    let spare = u128::from(span.saturating_sub(floor.saturating_mul(shown)));
    let mut widths = Vec::with_capacity(items.len());
    let mut remainders = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if item.value == 0 {
            widths.push(0);
            continue;
        }
        let exact = spare * u128::from(item.value);
        widths.push(floor + u64::try_from(exact / total).unwrap_or(0));
        remainders.push((exact % total, index));
    }
    let left = usize::try_from(span.saturating_sub(widths.iter().sum())).unwrap_or(0);
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in remainders.into_iter().take(left) {
        if let Some(width) = widths.get_mut(index) {
            *width += 1;
        }
    }
    Some(widths)
}

fn open(title: &str, height: u64) -> String {
    format!(
        "<svg viewBox=\"0 0 {VIEW_W} {height}\" width=\"100%\" role=\"img\" font-family=\"{FONT_FAMILY}\" \
         font-size=\"{FONT}\" fill=\"{TEXT_FILL}\">\n<title>{}</title>\n\
         <text x=\"{PAD}\" y=\"{TITLE_BASELINE}\" font-size=\"{TITLE_FONT}\" font-weight=\"bold\">{}</text>\n",
        escape(title),
        escape(&cut(title, chars_fitting(INNER_W, TITLE_FONT)))
    )
}

fn no_data(title: &str) -> String {
    let mut out = open(title, EMPTY_H);
    out.push_str(&format!(
        "<text x=\"{PAD}\" y=\"{}\" fill=\"{MUTED_FILL}\">no data</text>\n</svg>\n",
        HEADER_H + FONT
    ));
    out
}

/// Label at the left of a line and value at the right; the label is cut so that the two do not overlap.
fn label_and_value(out: &mut String, x: u64, baseline: u64, label: &str, value: &str) {
    let value_w = u64::try_from(value.chars().count()).unwrap_or(u64::MAX).saturating_mul(FONT * CHAR_W_PCT) / PCT;
    let room = (VIEW_W - PAD).saturating_sub(x.saturating_add(value_w).saturating_add(FONT));
    let label = cut(label, chars_fitting(room, FONT).max(MIN_LABEL_CHARS));
    out.push_str(&format!(
        "<text x=\"{x}\" y=\"{baseline}\">{}</text>\n<text x=\"{}\" y=\"{baseline}\" text-anchor=\"end\">{}</text>\n",
        escape(&label),
        VIEW_W - PAD,
        escape(value)
    ));
}

fn chars_fitting(width: u64, font: u64) -> usize {
    usize::try_from(width.saturating_mul(PCT) / (font * CHAR_W_PCT)).unwrap_or(usize::MAX)
}

/// `s` cut to at most `max` chars, the last being an ellipsis; by chars, so a UTF-8 sequence is never split.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push(ELLIPSIS);
    out
}

/// `n` with its digits grouped by three (`1 234 567`, narrow no-break spaces), as every chart and
/// the dashboard write numbers.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 2);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(DIGIT_GROUP) {
            out.push(GROUP_SEP);
        }
        out.push(digit);
    }
    out
}

fn value_text(item: &Item<'_>) -> String {
    let mut out = grouped(item.value);
    if !item.note.is_empty() {
        out.push_str(" · ");
        out.push_str(&cut(item.note, NOTE_MAX_CHARS));
    }
    out
}

fn scale_to(value: u64, max: u64, span: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    u64::try_from(u128::from(value) * u128::from(span) / u128::from(max)).unwrap_or(span)
}

fn centi(v: u64) -> String {
    if v.is_multiple_of(CENTI) { (v / CENTI).to_string() } else { format!("{}.{:02}", v / CENTI, v % CENTI) }
}

fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::Event;
    use quick_xml::{Reader, XmlVersion};

    const HOSTILE: &str = "<script>alert(1)</script>\"'&\u{1b}[2J";
    const BANNED: [&str; 8] = ["href", "url(", "http:", "https:", "@import", "<image", "<script", "foreignobject"];

    fn is_xml_char(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    }

    /// Parses `svg` strictly, failing the test if it is not well-formed, and returns each rect's class and width.
    fn rects(svg: &str) -> Vec<(String, f64)> {
        assert!(svg.chars().all(is_xml_char), "invalid XML character in {svg:?}");
        let mut reader = Reader::from_str(svg);
        let (mut depth, mut roots, mut found) = (0usize, 0usize, Vec::new());
        loop {
            let event = reader.read_event().expect("well-formed XML");
            if let Event::Start(e) | Event::Empty(e) = &event {
                roots += usize::from(depth == 0);
                let (mut class, mut width) = (String::new(), f64::NAN);
                for attr in e.attributes() {
                    let attr = attr.expect("attribute");
                    // quick-xml lets a raw `<` through in an attribute value; XML does not.
                    assert!(!attr.value.contains('<'), "raw < in {svg}");
                    let value = attr.normalized_value(XmlVersion::Implicit1_0).expect("escaped value");
                    match attr.key.into_inner() {
                        "class" => class = value.into_owned(),
                        "width" => width = value.parse().unwrap_or(f64::NAN),
                        _ => {}
                    }
                }
                if e.name().into_inner() == "rect" {
                    found.push((class, width));
                }
            }
            match event {
                Event::Eof => break,
                Event::Start(_) => depth += 1,
                Event::End(_) => depth = depth.checked_sub(1).expect("balanced"),
                Event::GeneralRef(r) => {
                    let name = r.xml10_content();
                    let known = ["amp", "lt", "gt", "quot", "apos"].contains(&name.as_ref());
                    assert!(known || r.resolve_char_ref().expect("char ref").is_some(), "bad entity {name}");
                }
                Event::Empty(_) | Event::Text(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((depth, roots), (0, 1), "one root, all closed");
        found
    }

    fn widths(svg: &str, class: &str) -> Vec<f64> {
        rects(svg).into_iter().filter(|(c, _)| c == class).map(|(_, w)| w).collect()
    }

    fn item(label: &str, value: u64) -> Item<'_> {
        Item { label, value, note: "" }
    }

    /// Every chart the tests draw: normal, empty, all-zero, hostile, huge and long inputs.
    fn all_charts() -> Vec<String> {
        let long = "é".repeat(200);
        let normal = [Item { label: "example.com", value: 1234, note: "12.5 %" }, item("b", 7), item("c", 0)];
        let hostile = [Item { label: HOSTILE, value: 3, note: HOSTILE }, item(HOSTILE, 1)];
        let huge = [item("a", u64::MAX), item("b", u64::MAX), item("c", 1)];
        let many: Vec<Item<'_>> = (0..40).map(|v| item("x", v)).collect();
        let inputs: [(&str, &[Item<'_>]); 7] = [
            ("Connections per company", &normal),
            ("Empty", &[]),
            ("All zero", &[item("a", 0)]),
            (HOSTILE, &hostile),
            ("Huge", &huge),
            (&long, &[item(&long, 5)]),
            ("Many", &many),
        ];
        inputs
            .iter()
            .flat_map(|(title, items)| {
                let columns: Vec<Column<'_>> =
                    items.iter().map(|i| Column { tick: i.label, name: i.label, value: i.value }).collect();
                [bar_chart(title, items), share_chart(title, items), column_chart(title, &columns)]
            })
            .collect()
    }

    #[test]
    fn every_chart_is_well_formed_xml() {
        for svg in all_charts() {
            rects(&svg);
        }
    }

    #[test]
    fn hostile_label_appears_only_escaped() {
        for svg in all_charts() {
            assert!(!svg.contains('\u{1b}'), "raw ESC in {svg}");
        }
        let svg = bar_chart(HOSTILE, &[Item { label: HOSTILE, value: 1, note: HOSTILE }]);
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;\u{FFFD}[2J"), "{svg}");
    }

    #[test]
    fn no_chart_refers_to_anything_outside() {
        for svg in all_charts() {
            let lower = svg.to_lowercase();
            for banned in BANNED {
                assert!(!lower.contains(banned), "{banned} in {svg}");
            }
        }
    }

    #[test]
    fn escape_replaces_specials_and_controls() {
        assert_eq!(escape("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
        assert_eq!(escape("\0\t\n\u{1f}\u{7f}\u{85}\u{9f}\u{ffff}"), "\u{FFFD}".repeat(8));
        assert_eq!(escape("café ✓ 日本"), "café ✓ 日本");
    }

    #[test]
    fn bar_widths_are_proportional() {
        let bars = widths(&bar_chart("t", &[item("a", 100), item("b", 50), item("c", 0)]), "bar");
        assert_eq!(bars.len(), 3);
        assert!((bars[0] / bars[1] - 2.0).abs() < 0.01, "{bars:?}");
        assert!((bars[0] - INNER_W as f64).abs() < 0.01 && bars[2] == 0.0, "{bars:?}");
    }

    #[test]
    fn share_slices_fill_the_bar_and_small_ones_stay_visible() {
        let items = [item("big", 1_000_000), item("tiny", 3), item("zero", 0), item("mid", 333_333)];
        let svg = share_chart("t", &items);
        let slices = widths(&svg, "slice");
        assert_eq!(slices.len(), 3, "no slice for a zero value");
        assert!((slices.iter().sum::<f64>() - INNER_W as f64).abs() < 0.001, "{slices:?}");
        assert!(slices[1] >= 1.0, "{slices:?}");
        assert_eq!(svg.matches("<g><title>").count(), items.len(), "a legend line per item");
        for svg in all_charts() {
            let slices = widths(&svg, "slice");
            assert!(slices.is_empty() || (slices.iter().sum::<f64>() - INNER_W as f64).abs() < 0.001, "{svg}");
        }
    }

    #[test]
    fn columns_are_proportional_and_named() {
        let columns = [
            Column { tick: "00", name: "00:00 UTC", value: 40 },
            Column { tick: "", name: "01:00 UTC", value: 0 },
            Column { tick: "", name: "<b>02:00</b>", value: 10 },
        ];
        let svg = column_chart("Connections per hour", &columns);
        let heights: Vec<f64> = {
            let mut reader = Reader::from_str(&svg);
            let mut out = Vec::new();
            loop {
                match reader.read_event().expect("well-formed") {
                    Event::Start(e) | Event::Empty(e) if e.name().into_inner() == "rect" => {
                        let attr = |k: &str| {
                            e.attributes().flatten().find(|a| a.key.into_inner() == k).map(|a| a.value.to_string())
                        };
                        if attr("class").as_deref() == Some("column") {
                            out.push(attr("height").unwrap().parse().unwrap());
                        }
                    }
                    Event::Eof => break,
                    _ => {}
                }
            }
            out
        };
        assert_eq!(heights, [PLOT_H as f64, 0.0, PLOT_H as f64 / 4.0]);
        assert!(svg.contains("<title>00:00 UTC: 40</title>") && svg.contains(">max 40<"), "{svg}");
        assert!(svg.contains("&lt;b&gt;02:00&lt;/b&gt;: 10"), "{svg}");
        assert_eq!(svg.matches("text-anchor=\"middle\"").count(), 1, "one tick label");
        assert!(column_chart("t", &[Column { tick: "a", name: "a", value: 0 }]).contains(">no data<"));
    }

    #[test]
    fn palette_colours_are_distinct() {
        assert_eq!(PALETTE.iter().collect::<std::collections::BTreeSet<_>>().len(), PALETTE.len());
    }

    #[test]
    fn cutting_keeps_multibyte_chars_whole() {
        let long = "é".repeat(200);
        let svg = bar_chart("t", &[item(&long, 1)]);
        assert!(svg.contains(&format!("<title>{long}: 1</title>")), "full label for hover");
        let open = format!("<text x=\"{PAD}\" y=\"{}\">", HEADER_H + FONT);
        let shown = svg.lines().find_map(|line| line.strip_prefix(open.as_str())).expect("label line");
        let text = shown.trim_end_matches("</text>");
        assert!(text.ends_with(ELLIPSIS) && text.chars().count() < 200, "{text}");
        assert!(text.trim_end_matches(ELLIPSIS).chars().all(|c| c == 'é'), "{text}");
        assert_eq!(cut("日本語", 2), "日…");
    }

    #[test]
    fn empty_input_says_no_data() {
        assert!(bar_chart("t", &[]).contains(">no data<"));
        assert!(share_chart("t", &[item("a", 0)]).contains(">no data<"));
        assert!(share_chart("t", &[]).contains(">no data<"));
    }

    #[test]
    fn numbers_are_grouped_without_locale() {
        assert_eq!(
            value_text(&Item { label: "", value: 1_234_567, note: "3.1 MB" }),
            "1\u{202F}234\u{202F}567 · 3.1 MB"
        );
        assert_eq!(value_text(&item("", 999)), "999");
    }

    #[test]
    fn output_is_deterministic() {
        assert_eq!(all_charts(), all_charts());
    }
}
