//! Finding where a chunk's old lines are in a file, tolerating the whitespace and punctuation
//! differences models commonly introduce.

/// The index at or after `start` where `pattern` occurs in `lines`, trying in turn: exact
/// match, trailing whitespace ignored, surrounding whitespace ignored, typographic punctuation
/// folded to ASCII. With `at_end`, a match that ends at the last line is preferred.
pub(crate) fn seek_sequence(
    lines: &[String],
    pattern: &[String],
    start: usize,
    at_end: bool,
) -> Option<usize> {
    if pattern.is_empty() {
        return Some(start.min(lines.len()));
    }
    if pattern.len() > lines.len() {
        return None;
    }
    let last_start = lines.len() - pattern.len();
    let matchers: [fn(&str, &str) -> bool; 4] = [
        |a, b| a == b,
        |a, b| a.trim_end() == b.trim_end(),
        |a, b| a.trim() == b.trim(),
        |a, b| folded(a).eq(folded(b)),
    ];
    for matches in matchers {
        let matches_at = |at: usize| {
            lines[at..at + pattern.len()]
                .iter()
                .zip(pattern)
                .all(|(line, wanted)| matches(line, wanted))
        };
        if at_end && last_start >= start && matches_at(last_start) {
            return Some(last_start);
        }
        if let Some(found) = (start..=last_start).find(|&at| matches_at(at)) {
            return Some(found);
        }
    }
    None
}

/// The characters of `line` without surrounding whitespace and with typographic dashes,
/// quotes and spaces replaced by their ASCII counterparts.
fn folded(line: &str) -> impl Iterator<Item = char> + '_ {
    line.trim().chars().map(|c| match c {
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        '\u{2018}'..='\u{201B}' => '\'',
        '\u{201C}'..='\u{201F}' => '"',
        '\u{00A0}' | '\u{2002}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => ' ',
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| line.to_string()).collect()
    }

    #[test]
    fn prefers_exact_then_loosens() {
        let lines = strings(&["a  ", "  b", "c\u{2014}d", "a", "b"]);
        assert_eq!(
            seek_sequence(&lines, &strings(&["a", "b"]), 0, false),
            Some(3)
        );
        assert_eq!(
            seek_sequence(&lines, &strings(&["a", "  b"]), 0, false),
            Some(0)
        );
        assert_eq!(seek_sequence(&lines, &strings(&["b"]), 0, false), Some(4));
        assert_eq!(seek_sequence(&lines, &strings(&[" b "]), 0, false), Some(1));
        assert_eq!(seek_sequence(&lines, &strings(&["c-d"]), 0, false), Some(2));
        assert_eq!(seek_sequence(&lines, &strings(&["zzz"]), 0, false), None);
        assert_eq!(
            seek_sequence(&lines, &strings(&["a", "b", "c", "d", "e", "f"]), 0, false),
            None
        );
    }

    #[test]
    fn end_of_file_prefers_the_last_occurrence() {
        let lines = strings(&["x", "}", "y", "}"]);
        assert_eq!(seek_sequence(&lines, &strings(&["}"]), 0, false), Some(1));
        assert_eq!(seek_sequence(&lines, &strings(&["}"]), 0, true), Some(3));
    }
}
