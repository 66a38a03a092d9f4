//! A bar chart as inline SVG: no script, so it works in the host's sandboxed widget frame.
//!
//! - sized to its frame: a `viewBox`, and `width`/`height` of 100% (the host's widget
//!   stylesheet makes `svg.gk-chart` fill the frame);
//! - a caption (the total, say) over the plot;
//! - a count axis with "nice" steps, headroom and grid lines, a date axis with at most
//!   eight labels;
//! - each bar's value on hover (an SVG `<title>`, which browsers show as a tooltip, over a
//!   full-height hit area so that even a zero-height bar has one); counts printed over the
//!   bars when there are few;
//! - colours in one place, and an empty state instead of an empty plot.
//!
//! Every text that reaches the SVG is escaped.

use std::fmt::Write;

/// Drawing units of the `viewBox`: about the shape of a large dashboard widget's frame (three
/// of four columns, 18rem high), so that the chart fills it.
const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 260.0;
/// Room for the count labels (left) and the date labels (bottom).
const LEFT: f64 = 44.0;
const RIGHT: f64 = 22.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 28.0;
/// At most this many date labels; at most this many bars get their count printed over them.
const MAX_DATE_LABELS: usize = 8;
const MAX_PRINTED_COUNTS: usize = 16;

const BAR: &str = "#3b82f6";
const BAR_HOVER: &str = "#1d4ed8";
const GRID: &str = "#e5e9f0";
const AXIS: &str = "#9aa4b5";
const TEXT: &str = "#5a6475";

/// One bar.
pub(crate) struct Bar {
    /// Under the bar, when there is room (`Nov 26`).
    pub label: String,
    /// Shown on hover (`Nov 26: 3 tickets`).
    pub tooltip: String,
    pub value: i64,
}

/// Text made safe for SVG (XML) content and attributes.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// The smallest "nice" step (1, 2 or 5 times a power of ten) that covers `max` in at most
/// four steps.
fn nice_step(max: i64) -> i64 {
    let mut magnitude = 1;
    loop {
        for factor in [1, 2, 5] {
            let step = factor * magnitude;
            if max <= step * 4 {
                return step;
            }
        }
        magnitude *= 10;
    }
}

/// The chart of `bars`, titled `title` for assistive technology, `caption` over the plot;
/// `empty` (a paragraph) instead when every value is zero or there are no bars.
pub(crate) fn bar_chart(title: &str, caption: &str, bars: &[Bar], empty: &str) -> String {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0);
    if max <= 0 {
        return format!("<p class=\"gk-empty\">{}</p>", escape(empty));
    }
    let step = nice_step(max);
    // The first step above the highest bar: room over it for its count.
    let top_value = step * (max / step + 1);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let baseline = TOP + plot_height;
    let y = |value: i64| baseline - value as f64 / top_value as f64 * plot_height;

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"gk-chart gk-stats-chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}\" \
         font-family=\"system-ui, sans-serif\" font-size=\"12\">\
         <title>{title}</title>\
         <style>.day:hover .bar{{fill:{BAR_HOVER}}} .hit{{fill:transparent}}</style>\
         <text class=\"caption\" x=\"{LEFT}\" y=\"15\" font-size=\"14\" fill=\"{TEXT}\">{caption}</text>",
        title = escape(title),
        caption = escape(caption)
    );

    // The count axis: grid lines and their values.
    svg.push_str("<g class=\"y-axis\">");
    let mut value = 0;
    while value <= top_value {
        let at = y(value);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"{}\"/>\
             <text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{TEXT}\">{value}</text>",
            WIDTH - RIGHT,
            if value == 0 { AXIS } else { GRID },
            LEFT - 6.0,
            at + 4.0
        );
        value += step;
    }
    svg.push_str("</g>");

    // The bars, each with its hover text; the date axis below.
    let slot = plot_width / bars.len() as f64;
    let bar_width = (slot * 0.7).max(1.0);
    let every = bars.len().div_ceil(MAX_DATE_LABELS).max(1);
    let print_counts = bars.len() <= MAX_PRINTED_COUNTS;
    let mut dates = String::from("<g class=\"x-axis\">");
    svg.push_str("<g class=\"bars\">");
    for (i, bar) in bars.iter().enumerate() {
        let x = LEFT + i as f64 * slot;
        let top = y(bar.value.max(0));
        let centre = x + slot / 2.0;
        let _ = write!(
            svg,
            "<g class=\"day\"><title>{tooltip}</title>\
             <rect class=\"hit\" x=\"{x:.1}\" y=\"{TOP}\" width=\"{slot:.1}\" height=\"{plot_height:.1}\"/>\
             <rect class=\"bar\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{bar_width:.1}\" height=\"{:.1}\" rx=\"2\" fill=\"{BAR}\"/>",
            x + (slot - bar_width) / 2.0,
            baseline - top,
            tooltip = escape(&bar.tooltip)
        );
        if print_counts && bar.value > 0 {
            let _ = write!(
                svg,
                "<text class=\"count\" x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{TEXT}\">{}</text>",
                top - 4.0,
                bar.value
            );
        }
        svg.push_str("</g>");
        // Label the last day (today) and every `every`-th before it.
        if (bars.len() - 1 - i) % every == 0 {
            let _ = write!(
                dates,
                "<text class=\"tick\" x=\"{centre:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{TEXT}\">{}</text>",
                baseline + 17.0,
                escape(&bar.label)
            );
        }
    }
    svg.push_str("</g>");
    dates.push_str("</g>");
    svg.push_str(&dates);
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(values: &[i64]) -> Vec<Bar> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Bar { label: format!("d{i}"), tooltip: format!("d{i}: {v} <b>"), value: *v })
            .collect()
    }

    #[test]
    fn steps_are_nice() {
        assert_eq!([1, 4, 5, 9, 17, 40, 41, 999].map(nice_step), [1, 1, 2, 5, 5, 10, 20, 500]);
    }

    #[test]
    fn axes_bars_and_hover_texts() {
        let svg = bar_chart("Tickets per day", "27 tickets", &bars(&[0, 3, 1, 0, 7, 2, 5]), "none");
        assert_eq!(svg.matches("class=\"bar\"").count(), 7);
        assert_eq!(svg.matches("<title>").count(), 8, "the chart's and one per day");
        assert!(svg.contains("<title>d4: 7 &lt;b&gt;</title>"), "{svg}");
        assert!(svg.contains(">27 tickets</text>"), "the caption: {svg}");
        // Counts 0, 2, 4, 6, 8 on the axis, one step above the highest bar; seven dates.
        for tick in ["0", "2", "4", "6", "8"] {
            assert!(svg.contains(&format!("text-anchor=\"end\" fill=\"{TEXT}\">{tick}</text>")), "{tick}: {svg}");
        }
        assert_eq!(svg.matches("text-anchor=\"middle\" fill=\"#5a6475\">d").count(), 7);
    }

    #[test]
    fn many_days_get_fewer_labels_and_no_printed_counts() {
        let svg = bar_chart("t", "30", &bars(&[1; 30]), "none");
        assert_eq!(svg.matches("class=\"bar\"").count(), 30);
        assert_eq!(svg.matches("text-anchor=\"middle\" fill=\"#5a6475\">d").count(), MAX_DATE_LABELS, "{svg}");
        assert!(svg.contains(">d29</text>"), "today is labelled");
        assert!(!svg.contains("class=\"count\""));
    }

    #[test]
    fn nothing_to_show() {
        assert_eq!(bar_chart("t", "0", &bars(&[0, 0]), "No <tickets>"), "<p class=\"gk-empty\">No &lt;tickets&gt;</p>");
        assert_eq!(bar_chart("t", "0", &[], "None"), "<p class=\"gk-empty\">None</p>");
    }
}
