//! How results are printed: groups of ✔/‼/✘ lines, wrapped to 80 columns
//! (a terminal's default, and what a pasted report in an issue keeps), and
//! the exit status they add up to. Plain text, no colour: the marks carry
//! the meaning, and the output pastes anywhere.

use std::fmt::Write as _;
use std::time::Duration;

/// The width every line of output fits in.
pub const WIDTH: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn mark(self) -> char {
        match self {
            Status::Ok => '✔',
            Status::Warn => '‼',
            Status::Fail => '✘',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub status: Status,
    pub text: String,
}

/// A titled group of results ("Webhook", "Proxies", ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub title: String,
    pub lines: Vec<Line>,
}

impl Group {
    pub fn new(title: impl Into<String>) -> Group {
        Group {
            title: title.into(),
            lines: Vec::new(),
        }
    }

    pub fn ok(&mut self, text: impl Into<String>) {
        self.push(Status::Ok, text);
    }

    pub fn warn(&mut self, text: impl Into<String>) {
        self.push(Status::Warn, text);
    }

    pub fn fail(&mut self, text: impl Into<String>) {
        self.push(Status::Fail, text);
    }

    pub fn push(&mut self, status: Status, text: impl Into<String>) {
        self.lines.push(Line {
            status,
            text: text.into(),
        });
    }
}

/// The worst status of all lines (Ok for none).
pub fn worst(groups: &[Group]) -> Status {
    groups
        .iter()
        .flat_map(|g| &g.lines)
        .map(|l| l.status)
        .max()
        .unwrap_or(Status::Ok)
}

/// The groups as text: the title, then each line as `  ✔ text`, its
/// continuation lines indented under the text; a summary line last.
pub fn render(groups: &[Group]) -> String {
    let mut out = String::new();
    for group in groups {
        out.push_str(&group.title);
        out.push('\n');
        for line in &group.lines {
            let prefix = format!("  {} ", line.status.mark());
            for (i, part) in wrap(&line.text, WIDTH - 4).iter().enumerate() {
                let lead = if i == 0 { prefix.as_str() } else { "    " };
                let _ = writeln!(out, "{lead}{part}");
            }
        }
        out.push('\n');
    }
    let count = |status| {
        groups
            .iter()
            .flat_map(|g| &g.lines)
            .filter(|l| l.status == status)
            .count()
    };
    let summary = match (count(Status::Fail), count(Status::Warn)) {
        (0, 0) => "✔ all checks passed".to_string(),
        (0, warnings) => format!("‼ all checks passed, {warnings} warning(s)"),
        (failures, warnings) => format!("✘ {failures} check(s) failed, {warnings} warning(s)"),
    };
    out.push_str(&summary);
    out.push('\n');
    out
}

/// Splits `text` into lines of at most `width` characters, at spaces where
/// it can; a word longer than a line is cut.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = current.chars().count();
            let room = if used == 0 {
                width
            } else {
                width.saturating_sub(used + 1)
            };
            if word.len() <= room {
                if used > 0 {
                    current.push(' ');
                }
                current.extend(word.iter());
                break;
            }
            if used == 0 {
                // Longer than a whole line: cut it.
                lines.push(word[..width].iter().collect());
                word.drain(..width);
                continue;
            }
            lines.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

/// A duration as kubectl prints ages: `45s`, `12m`, `3h`, `20d`.
pub fn age(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Rows as aligned columns, two spaces apart; cells of the last column are
/// cut so each row fits in [`WIDTH`].
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            if i + 1 == columns {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        let line: String = line.trim_end().chars().take(WIDTH).collect();
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_wrap_under_their_text_within_80_columns() {
        let mut group = Group::new("Webhook");
        group.ok("short");
        group.fail(format!(
            "caBundle of outrigger-sidecar-injector does not verify the certificate in \
             secret outrigger-system/outrigger-webhook-tls: {}",
            "x".repeat(120)
        ));
        let text = render(&[group]);
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Webhook");
        assert_eq!(lines[1], "  ✔ short");
        assert!(lines[2].starts_with("  ✘ caBundle of"), "{}", lines[2]);
        assert!(lines[3].starts_with("    "), "continuation indented");
        assert!(
            text.ends_with("✘ 1 check(s) failed, 0 warning(s)\n"),
            "{text}"
        );
    }

    #[test]
    fn the_worst_line_decides() {
        let mut a = Group::new("a");
        a.ok("fine");
        assert_eq!(worst(&[a.clone()]), Status::Ok);
        assert!(render(&[a.clone()]).ends_with("✔ all checks passed\n"));
        let mut b = Group::new("b");
        b.warn("soon");
        assert_eq!(worst(&[a.clone(), b.clone()]), Status::Warn);
        b.fail("broken");
        assert_eq!(worst(&[a, b]), Status::Fail);
        assert_eq!(worst(&[]), Status::Ok);
    }

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_only_overlong_words() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("a  b", 10), ["a b"], "runs of spaces collapse");
        assert_eq!(wrap("abc de", 3), ["abc", "de"], "a full line, then more");
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(Duration::from_secs(5)), "5s");
        assert_eq!(age(Duration::from_secs(600)), "10m");
        assert_eq!(age(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(age(Duration::from_secs(40 * 86_400)), "40d");
    }

    #[test]
    fn tables_align_and_fit() {
        let rows = vec![
            vec!["web-1".to_string(), "3".to_string(), "x".repeat(100)],
            vec!["a".to_string(), "12".to_string(), "y".to_string()],
        ];
        let text = table(&["POD", "N", "SUBSCRIPTIONS"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "POD    N   SUBSCRIPTIONS");
        assert_eq!(lines[2], "a      12  y");
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH));
    }
}
