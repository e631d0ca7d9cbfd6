//! A one-line text editor that is correct for Unicode: the cursor moves by grapheme cluster
//! (so "é" written as e + combining accent, or a flag emoji, is one step) and the view scrolls
//! by display width (CJK and emoji take two columns).

use unicode_segmentation::UnicodeSegmentation;

use crate::text;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineEditor {
    text: String,
    /// Cursor position in graphemes from the start.
    cursor: usize,
}

impl LineEditor {
    pub fn new(text: &str) -> Self {
        let mut e = Self::default();
        e.insert_str(text);
        e
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    fn graphemes(&self) -> Vec<&str> {
        self.text.graphemes(true).collect()
    }

    /// Byte offset of grapheme `g`.
    fn offset(&self, g: usize) -> usize {
        self.text
            .grapheme_indices(true)
            .nth(g)
            .map_or(self.text.len(), |(i, _)| i)
    }

    pub fn insert_char(&mut self, c: char) {
        self.insert_str(c.encode_utf8(&mut [0; 4]));
    }

    /// Inserts text at the cursor; line breaks and tabs become spaces, other control
    /// characters are dropped.
    pub fn insert_str(&mut self, s: &str) {
        let clean: String = s
            .chars()
            .filter_map(|c| match c {
                '\n' | '\r' | '\t' => Some(' '),
                c if c.is_control() => None,
                c => Some(c),
            })
            .collect();
        let before = self.graphemes().len();
        let at = self.offset(self.cursor);
        self.text.insert_str(at, &clean);
        // A combining mark may merge with the grapheme before it, so count again.
        let after = self.graphemes().len();
        self.cursor += after - before;
    }

    pub fn backspace(&mut self) {
        if self.cursor == 0 {
            return;
        }
        let (a, b) = (self.offset(self.cursor - 1), self.offset(self.cursor));
        self.text.replace_range(a..b, "");
        self.cursor -= 1;
    }

    pub fn delete(&mut self) {
        if self.cursor >= self.graphemes().len() {
            return;
        }
        let (a, b) = (self.offset(self.cursor), self.offset(self.cursor + 1));
        self.text.replace_range(a..b, "");
    }

    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.graphemes().len());
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.graphemes().len();
    }

    /// Deletes from the start of the line to the cursor (Ctrl-U).
    pub fn kill_to_start(&mut self) {
        let at = self.offset(self.cursor);
        self.text.replace_range(..at, "");
        self.cursor = 0;
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub fn delete_word_back(&mut self) {
        let g = self.graphemes();
        let mut start = self.cursor;
        while start > 0 && g[start - 1].trim().is_empty() {
            start -= 1;
        }
        while start > 0 && !g[start - 1].trim().is_empty() {
            start -= 1;
        }
        let (a, b) = (self.offset(start), self.offset(self.cursor));
        self.text.replace_range(a..b, "");
        self.cursor = start;
    }

    /// What to show in `width` columns and where the cursor goes (column within that view):
    /// the view scrolls so that the cursor is always visible.
    pub fn view(&self, width: usize) -> (String, usize) {
        if width == 0 {
            return (String::new(), 0);
        }
        // Each grapheme as it is drawn (see `text::display_grapheme`), measured as drawn.
        let shown_g: Vec<String> = self
            .graphemes()
            .into_iter()
            .map(|s| text::display_grapheme(s).into_owned())
            .collect();
        let g: Vec<&str> = shown_g.iter().map(String::as_str).collect();
        let widths: Vec<usize> = g.iter().map(|s| text::width(s)).collect();
        let cursor_col: usize = widths[..self.cursor].iter().sum();
        // Keep one column free for the cursor at the end of the text.
        let mut start = 0;
        let mut skipped = 0;
        while cursor_col - skipped >= width && start < g.len() {
            skipped += widths[start];
            start += 1;
        }
        let mut shown = String::new();
        let mut used = 0;
        for (s, &w) in g[start..].iter().zip(&widths[start..]) {
            if used + w > width {
                break;
            }
            shown.push_str(s);
            used += w;
        }
        (shown, cursor_col - skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_moves_by_grapheme() {
        // "e" + combining acute is one grapheme; the flag is two code points, one grapheme.
        let mut e = LineEditor::new("cafe\u{301} 🇫🇷!");
        assert_eq!(e.cursor(), 7);
        e.left();
        e.backspace();
        assert_eq!(e.text(), "cafe\u{301} !");
        e.home();
        e.right();
        e.right();
        e.right();
        e.delete();
        assert_eq!(e.text(), "caf !");
    }

    #[test]
    fn insertion_in_the_middle_and_control_characters() {
        let mut e = LineEditor::new("机器学习");
        e.left();
        e.left();
        e.insert_str("深度\n\x1b");
        assert_eq!(e.text(), "机器深度 学习");
        assert_eq!(e.cursor(), 5);
    }

    #[test]
    fn word_and_line_deletion() {
        let mut e = LineEditor::new("the quick brown");
        e.delete_word_back();
        assert_eq!(e.text(), "the quick ");
        e.delete_word_back();
        assert_eq!(e.text(), "the ");
        e.kill_to_start();
        assert_eq!(e.text(), "");
        e.backspace();
        e.delete();
        assert_eq!(e.cursor(), 0);
    }

    #[test]
    fn view_scrolls_by_display_width() {
        let e = LineEditor::new("我喜欢机器学习");
        // 14 columns of text, cursor at the end, 8 columns of view.
        let (shown, col) = e.view(8);
        assert!(text::width(&shown) <= 8);
        assert!(shown.ends_with("学习"), "{shown}");
        assert_eq!(col, text::width(&shown));
        assert!(col < 8);
        let mut e = e;
        e.home();
        assert_eq!(e.view(8), ("我喜欢机".to_string(), 0));
    }
}
