//! The table of figures, printed as it fills and written to `BENCHMARKS.md`.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// A figure without a target.
    Info,
    Skipped,
}

impl Verdict {
    pub fn of(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
    }

    fn mark(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "**missed**",
            Self::Info => "",
            Self::Skipped => "skipped",
        }
    }
}

pub struct Row {
    pub section: &'static str,
    pub what: String,
    pub figure: String,
    pub target: String,
    pub verdict: Verdict,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    /// Adds a row and prints it at once, so a long run shows progress.
    pub fn add(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        figure: impl Into<String>,
        target: impl Into<String>,
        verdict: Verdict,
    ) {
        let row = Row {
            section,
            what: what.into(),
            figure: figure.into(),
            target: target.into(),
            verdict,
        };
        eprintln!(
            "  {:<62} {:>14}   {} {}",
            row.what,
            row.figure,
            row.target,
            row.verdict.mark()
        );
        self.rows.push(row);
    }

    pub fn info(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        figure: impl Into<String>,
    ) {
        self.add(section, what, figure, "", Verdict::Info);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    pub fn table(&self) -> String {
        let mut text =
            String::from("| section | measure | figure | target | |\n|---|---|---|---|---|\n");
        for row in &self.rows {
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {} |",
                row.section,
                row.what,
                row.figure,
                row.target,
                row.verdict.mark()
            );
        }
        text
    }

    pub fn summary(&self) -> (usize, usize) {
        let met = self
            .rows
            .iter()
            .filter(|r| r.verdict == Verdict::Met)
            .count();
        let missed = self
            .rows
            .iter()
            .filter(|r| r.verdict == Verdict::Missed)
            .count();
        (met, missed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_one_line_per_row_and_marks_misses() {
        let mut report = Report::default();
        report.add("lookup", "p50", "1 ms", "< 5 ms", Verdict::Met);
        report.add("start", "rss", "20 MB", "≤ 15 MB", Verdict::Missed);
        report.info("start", "exit", "3 ms");
        let table = report.table();
        assert_eq!(table.lines().count(), 5);
        assert!(table.contains("| start | rss | 20 MB | ≤ 15 MB | **missed** |"));
        assert_eq!(report.summary(), (1, 1));
    }
}
