//! Output: aligned tables for people (Japanese text counts two columns a character), CSV
//! and JSON for scripts.

use serde_json::Value;

/// Display columns of a character: East Asian wide and fullwidth characters take two.
fn char_width(c: char) -> usize {
    let c = c as u32;
    let wide = matches!(c,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F | 0x1F900..=0x1F9FF | 0x20000..=0x3FFFD);
    if wide { 2 } else { 1 }
}

pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// A table printed with aligned columns.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(width(c));
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate().take(n) {
                l.push_str(c);
                if i + 1 < n {
                    l.push_str(&" ".repeat(widths[i] - width(c) + 2));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for r in &self.rows {
            line(r);
        }
        out
    }

    /// The same table as CSV.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            out.push_str(&r.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out
    }
}

/// A CSV field, quoted when it must be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        Value::Array(a) if a.is_empty() => "-".to_owned(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// `0.6` as `60.0%`.
pub fn percent(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |f| format!("{:.1}%", f * 100.0))
}

/// A growth ratio as `+12.5%`, or `-` when there is nothing to compare with.
pub fn growth(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |f| format!("{:+.1}%", f * 100.0))
}

/// Prints pretty JSON.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `key: value` lines, keys aligned.
pub fn print_fields(fields: &[(&str, String)]) {
    let w = fields.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    for (k, v) in fields {
        println!("{k}:{} {v}", " ".repeat(w - width(k)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_wide_characters() {
        let mut t = Table::new(&["USER", "DEPARTMENT", "N"]);
        t.row(vec!["@a:x".into(), "総務課".into(), "1".into()]);
        t.row(vec!["@bb:x".into(), "it, \"ops\"".into(), "22".into()]);
        assert_eq!(t.render(), "USER   DEPARTMENT  N\n@a:x   総務課      1\n@bb:x  it, \"ops\"   22\n");
        assert_eq!(t.csv(), "USER,DEPARTMENT,N\n@a:x,総務課,1\n@bb:x,\"it, \"\"ops\"\"\",22\n");
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(percent(&serde_json::json!(0.6)), "60.0%");
        assert_eq!(growth(&serde_json::json!(-0.125)), "-12.5%");
        assert_eq!(growth(&Value::Null), "-");
    }
}
