//! What a run found: table rows for people, named figures for the JSON object.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// One line of the human table: a section, what was measured, its figure and a note
/// (usually the ratio to the baseline of the same row group).
pub struct Row {
    pub section: &'static str,
    pub what: String,
    pub figure: String,
    pub note: String,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    figures: BTreeMap<String, Value>,
}

impl Report {
    pub fn row(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        figure: String,
        note: impl Into<String>,
    ) {
        let row = Row {
            section,
            what: what.into(),
            figure,
            note: note.into(),
        };
        eprintln!(
            "  {:<10} {:<58} {:>16}  {}",
            row.section, row.what, row.figure, row.note
        );
        self.rows.push(row);
    }

    /// A named figure of the JSON object. Names are unique: measuring one twice is a bug.
    pub fn figure(&mut self, name: &str, value: f64) {
        assert!(value.is_finite(), "{name} = {value}");
        let rounded = (value * 1000.0).round() / 1000.0;
        let previous = self.figures.insert(name.to_string(), json!(rounded));
        assert!(previous.is_none(), "figure {name} measured twice");
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures.get(name).and_then(Value::as_f64)
    }

    /// `numerator / denominator` as a figure, when both were measured.
    pub fn ratio(&mut self, name: &str, numerator: &str, denominator: &str) {
        if let (Some(n), Some(d)) = (self.get(numerator), self.get(denominator)) {
            if d > 0.0 {
                self.figure(name, n / d);
            }
        }
    }

    pub fn set_text(&mut self, name: &str, value: &str) {
        self.figures.insert(name.to_string(), json!(value));
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for row in &self.rows {
            if row.section != section {
                section = row.section;
                out += &format!("{section}\n");
            }
            out += &format!("  {:<58} {:>16}  {}\n", row.what, row.figure, row.note);
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string(&self.figures).expect("figures serialize")
    }
}

/// `12,345/s` style: figures people compare at a glance.
pub fn per_s(value: f64) -> String {
    format!("{}/s", thousands(value))
}

pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let (sign, digits) = digits
        .strip_prefix('-')
        .map_or(("", digits.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
    }

    #[test]
    #[should_panic(expected = "measured twice")]
    fn a_figure_measured_twice_is_a_bug() {
        let mut report = Report::default();
        report.figure("a", 1.0);
        report.figure("a", 2.0);
    }
}
