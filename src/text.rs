//! Text for display: control characters made visible, emoji sequences that terminals draw at
//! different widths simplified, clipping by display width.

use std::borrow::Cow;

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthChar;

/// Replaces control characters (tabs, newlines, escapes) with visible stand-ins so a sentence can
/// never move the cursor or inject terminal escapes, and simplifies the emoji sequences whose
/// width terminals disagree on (see [`display_grapheme`]).
pub fn sanitize(s: &str) -> String {
    s.graphemes(true).map(display_grapheme).collect()
}

fn regional_letter(c: char) -> Option<char> {
    let base = 0x1F1E6;
    let v = c as u32;
    (base..base + 26)
        .contains(&v)
        .then(|| char::from(b'A' + (v - base) as u8))
}

/// One grapheme as it is drawn. Terminals measure multi-code-point emoji differently (a family
/// joined by zero-width joiners is 2 columns in some and 6 in others; flags, skin tones and
/// variation selectors likewise), and a glyph wider than the layout expects leaves stray
/// characters on the screen. Such a grapheme is drawn as something every terminal measures the
/// same: a joined sequence as its first emoji, a flag as its two letters (🇫🇷 → FR), without
/// skin-tone modifiers, variation selectors, keycap marks or tag characters.
pub fn display_grapheme(g: &str) -> Cow<'_, str> {
    let mut chars = g.chars();
    let Some(first) = chars.next() else {
        return Cow::Borrowed(g);
    };
    if chars.as_str().is_empty() {
        return match first {
            '\t' | '\n' | '\r' => Cow::Borrowed(" "),
            c if c.is_control() => Cow::Borrowed("\u{fffd}"),
            c if regional_letter(c).is_some() => {
                Cow::Owned(regional_letter(c).into_iter().collect())
            }
            _ => Cow::Borrowed(g),
        };
    }
    if g == "\r\n" {
        return Cow::Borrowed(" ");
    }
    // A flag: two regional indicators.
    if let Some(a) = regional_letter(first) {
        let letters: String = std::iter::once(a)
            .chain(g.chars().skip(1).filter_map(regional_letter))
            .collect();
        return Cow::Owned(letters);
    }
    let droppable = |c: char| {
        matches!(c as u32,
            0xFE00..=0xFE0F        // variation selectors
            | 0x1F3FB..=0x1F3FF    // skin tones
            | 0x20E3               // combining keycap
            | 0xE0020..=0xE007F) // tags
    };
    if g.contains('\u{200d}') {
        // A joined sequence: its first emoji alone.
        return Cow::Owned(first.to_string());
    }
    if g.chars().any(droppable) {
        return Cow::Owned(g.chars().filter(|c| !droppable(*c)).collect());
    }
    if g.chars().any(|c| c.is_control()) {
        return Cow::Owned(
            g.chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect(),
        );
    }
    Cow::Borrowed(g)
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
    fn emoji_sequences_become_what_every_terminal_measures_alike() {
        // Family (man ZWJ woman ZWJ girl), flag, skin tone, heart with VS16, keycap, Scotland.
        assert_eq!(
            sanitize("\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}"),
            "\u{1F468}"
        );
        assert_eq!(sanitize("\u{1F1EB}\u{1F1F7} France"), "FR France");
        assert_eq!(sanitize("\u{1F44D}\u{1F3FD}"), "\u{1F44D}");
        assert_eq!(sanitize("\u{2764}\u{FE0F}"), "\u{2764}");
        assert_eq!(sanitize("1\u{FE0F}\u{20E3}"), "1");
        assert_eq!(
            sanitize("\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}"),
            "\u{1F3F4}"
        );
        // Plain emoji, CJK and combining accents are kept as they are.
        assert_eq!(sanitize("🙂 机器 cafe\u{301}"), "🙂 机器 cafe\u{301}");
        // What we measure is what ratatui measures.
        use unicode_width::UnicodeWidthStr;
        for s in ["👨‍👩‍👧 x", "🇫🇷", "👍🏽", "❤️", "1️⃣", "🙂机器"]
        {
            let d = sanitize(s);
            assert_eq!(width(&d), d.width(), "{s}");
        }
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
