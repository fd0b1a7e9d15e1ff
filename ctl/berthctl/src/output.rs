//! Output: aligned tables for people, JSON with stable field names for scripts.

use std::time::{Duration, SystemTime};

use berth_core::labels::Labels;
use serde::Serialize;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// Pretty-printed JSON.
    Json,
}

/// A table: a header row and data rows, rendered with columns aligned by padding.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// Spaces between columns.
const GAP: usize = 3;

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (one cell per header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The rendered table, one line per row, each ending in a newline. The last column is not
    /// padded, so lines carry no trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count() + GAP;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `value` as pretty JSON with a trailing newline.
pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        // Our output types are plain data; serialization cannot fail for them.
        Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
    }
}

/// Either the JSON of `value` or the table `table` builds, per `format`.
pub fn render<T: Serialize + ?Sized>(
    format: Format,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> String {
    match format {
        Format::Json => json(value),
        Format::Table => table(value),
    }
}

/// Bytes in IEC units with one decimal (`512 B`, `1.5 KiB`, `3.0 GiB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago `t` was, coarsely (`5 seconds ago`, `3 hours ago`); `-` when unknown.
pub fn age(t: Option<SystemTime>, now: SystemTime) -> String {
    let Some(t) = t else {
        return "-".to_owned();
    };
    let d = now.duration_since(t).unwrap_or(Duration::ZERO);
    format!("{} ago", human_duration(d))
}

/// A coarse duration in words, like docker's (`Less than a second`, `2 minutes`, `3 days`).
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    match secs {
        0 => "Less than a second".to_owned(),
        s if s < 60 => plural(s, "second"),
        s if s < 3600 => plural(s / 60, "minute"),
        s if s < 2 * 86400 => plural(s / 3600, "hour"),
        s if s < 14 * 86400 => plural(s / 86400, "day"),
        s if s < 60 * 86400 => plural(s / (7 * 86400), "week"),
        s if s < 2 * 365 * 86400 => plural(s / (30 * 86400), "month"),
        s => plural(s / (365 * 86400), "year"),
    }
}

/// `t` as RFC 3339 UTC for JSON; `None` when unknown.
pub fn rfc3339(t: Option<SystemTime>) -> Option<String> {
    t.map(|t| {
        let t: chrono::DateTime<chrono::Utc> = t.into();
        t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    })
}

/// Labels as `k=v,k2=v2` (sorted), `-` when there are none.
pub fn labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "LABELS"]);
        t.row(vec!["default".into(), "-".into()]);
        t.row(vec!["k8s.io".into(), "a=b".into()]);
        assert_eq!(
            t.render(),
            "NAME      LABELS\n\
             default   -\n\
             k8s.io    a=b\n"
        );
    }

    #[test]
    fn empty_cells_at_the_end_leave_no_padding() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["xyz".into(), String::new()]);
        assert_eq!(t.render(), "A     B\nxyz\n");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn ages() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let ago = |s| age(Some(now - Duration::from_secs(s)), now);
        assert_eq!(ago(0), "Less than a second ago");
        assert_eq!(ago(1), "1 second ago");
        assert_eq!(ago(59), "59 seconds ago");
        assert_eq!(ago(120), "2 minutes ago");
        assert_eq!(ago(3 * 3600), "3 hours ago");
        assert_eq!(ago(3 * 86400), "3 days ago");
        assert_eq!(ago(400 * 86400), "13 months ago");
        assert_eq!(age(None, now), "-");
        // A clock skewed into the future does not underflow.
        assert_eq!(
            age(Some(now + Duration::from_secs(5)), now),
            "Less than a second ago"
        );
    }

    #[test]
    fn label_cells_and_times() {
        let mut l = Labels::new();
        assert_eq!(labels(&l), "-");
        l.insert("b".into(), "2".into());
        l.insert("a".into(), "1".into());
        assert_eq!(labels(&l), "a=1,b=2");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            rfc3339(Some(t)).as_deref(),
            Some("2023-11-14T22:13:20.000000000Z")
        );
        assert_eq!(rfc3339(None), None);
    }
}
