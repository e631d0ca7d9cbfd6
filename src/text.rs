//! Text for display: control characters made visible, clipping by display width.

use unicode_width::UnicodeWidthChar;

/// Replaces control characters (tabs, newlines, escapes) with visible stand-ins so a sentence can
/// never move the cursor or inject terminal escapes.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// Display width in terminal columns (CJK and most emoji take two).
pub fn width(s: &str) -> usize {
    s.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// Sanitizes and clips `s` to at most `max` columns, ending with `…` when clipped.
pub fn clip(s: &str, max: usize) -> String {
    let s = sanitize(s);
    if width(&s) <= max {
        return s;
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// `clip`, then padded with spaces to exactly `cols` columns.
pub fn pad(s: &str, cols: usize) -> String {
    let mut c = clip(s, cols);
    let w = width(&c);
    c.extend(std::iter::repeat_n(' ', cols.saturating_sub(w)));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_pass() {
        assert_eq!(sanitize("a\tb\nc\x1b[31m"), "a b c\u{fffd}[31m");
    }

    #[test]
    fn clips_by_columns_not_bytes() {
        assert_eq!(width("机器学习"), 8);
        assert_eq!(clip("机器学习", 5), "机器…");
        assert_eq!(clip("naïve café", 20), "naïve café");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(pad("机器", 6), "机器  ");
        assert_eq!(width(&pad("机器学习是", 7)), 7);
    }
}
