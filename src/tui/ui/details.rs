//! The neighbours pane: the selected sentence in full, its token count, and its nearest
//! neighbours by cosine similarity.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use crate::analysis::similarity::top_neighbours;
use crate::text;
use crate::tui::app::App;
use crate::tui::explorer::MatrixView;
use crate::tui::i18n::{tr, tr_with};
use crate::tui::theme::Theme;

/// A bar of eighths for a value in [0, 1].
fn bar(v: f32, cells: usize) -> String {
    const EIGHTHS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let total = (v.clamp(0.0, 1.0) * (cells * 8) as f32).round() as usize;
    let mut s: String = std::iter::repeat_n('█', total / 8).collect();
    if !total.is_multiple_of(8) {
        s.push(EIGHTHS[total % 8 - 1]);
    }
    s
}

pub fn draw(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) {
    let lang = app.lang;
    let block = Block::bordered().title(tr(lang, "neighbours.title"));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(a) = app
        .explorer
        .analysis
        .as_ref()
        .filter(|a| !a.texts.is_empty())
    else {
        return;
    };
    let i = app.explorer.selected.min(a.texts.len() - 1);
    let width = inner.width as usize;
    let count = a.base.tokens[i];
    let tokens = count.total;
    let info = if count.truncated {
        Span::styled(
            tr_with(lang, "neighbours.cut", &[("n", &tokens)]),
            theme.error(),
        )
    } else {
        Span::styled(
            tr_with(lang, "neighbours.tokens", &[("n", &tokens)]),
            theme.dim(),
        )
    };
    let mut head = vec![Span::styled(format!("[{i}] "), theme.selected()), info];
    if count.unknown > 0 {
        let style = if count.mostly_unknown() {
            theme.error()
        } else {
            theme.dim()
        };
        head.push(Span::styled(
            tr_with(
                lang,
                "neighbours.unknown",
                &[("unknown", &count.unknown), ("total", &count.content)],
            ),
            style,
        ));
    }
    let head = Line::from(head);
    let rows = |w: usize| w.div_ceil(width.max(1)).max(1);
    let wrapped = rows(head.width()) + rows(text::width(&text::sanitize(&a.texts[i])));
    let mut lines = vec![head, Line::raw(text::sanitize(&a.texts[i]))];
    let head_h = (wrapped as u16).min(inner.height / 2 + 1);
    let head = Paragraph::new(lines.clone()).wrap(Wrap { trim: false });
    frame.render_widget(
        head,
        Rect {
            height: head_h,
            ..inner
        },
    );
    lines.clear();
    let room = inner.height.saturating_sub(head_h) as usize;
    // Neighbours by the model on show; with a comparison, the base value beside.
    let m = match (app.explorer.view, &a.tuned) {
        (MatrixView::Base, _) | (_, None) => &a.base.matrix,
        (_, Some(t)) => &t.matrix,
    };
    for (j, v) in top_neighbours(m, i, room) {
        let was = match &a.tuned {
            Some(_) if !matches!(app.explorer.view, MatrixView::Base) => tr_with(
                lang,
                "neighbours.was",
                &[("v", &format!("{:.2}", a.base.matrix[i][j]))],
            ),
            _ => String::new(),
        };
        let label = format!("{v:>5.2}{was} {:<6}[{j}] ", bar(v, 5));
        let rest = width.saturating_sub(text::width(&label));
        lines.push(Line::from(vec![
            Span::raw(label),
            Span::raw(text::clip(&a.texts[j], rest)),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines),
        Rect {
            y: inner.y + head_h,
            height: room as u16,
            ..inner
        },
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn bars_in_eighths() {
        assert_eq!(super::bar(1.0, 2), "██");
        assert_eq!(super::bar(0.5, 2), "█");
        assert_eq!(super::bar(0.0625, 2), "▏");
        assert_eq!(super::bar(-0.3, 2), "");
    }
}
