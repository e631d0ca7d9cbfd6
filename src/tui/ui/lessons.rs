//! The lessons screen: the list of lessons on the left; the lesson on the right (its text, its
//! formula in a box, its sentences, its numbered steps).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::scroll_offset;
use crate::text;
use crate::tui::app::App;
use crate::tui::i18n::tr;
use crate::tui::theme::Theme;

pub fn draw(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) {
    let screen = &app.lessons;
    let lang = app.lang;
    let [list_area, body_area] =
        Layout::horizontal([Constraint::Length(30), Constraint::Min(0)]).areas(area);

    let list_block = Block::bordered()
        .title(tr(lang, "lessons.title"))
        .border_style(theme.border(true));
    let inner = list_block.inner(list_area);
    frame.render_widget(list_block, list_area);
    let height = inner.height as usize;
    let offset = scroll_offset(screen.selected, screen.lessons.len(), height);
    let lines: Vec<Line> = screen
        .lessons
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, l)| {
            let selected = i == screen.selected;
            let prefix = format!("{}{:>2} ", if selected { "▶" } else { " " }, i + 1);
            let room = (inner.width as usize).saturating_sub(text::width(&prefix));
            let style = if selected {
                theme.selected()
            } else {
                ratatui::style::Style::new()
            };
            Line::from(vec![
                Span::styled(prefix, style),
                Span::styled(text::clip(l.title.get(lang), room), style),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);

    let Some(lesson) = screen.current() else {
        frame.render_widget(
            Paragraph::new(tr(lang, "lessons.none")).block(Block::bordered()),
            body_area,
        );
        return;
    };
    let block = Block::bordered()
        .title(format!(" {} ", text::sanitize(lesson.title.get(lang))))
        .title_bottom(Line::styled(
            format!(" {} ", tr(lang, "lessons.keys")),
            theme.dim(),
        ));
    let inner = block.inner(body_area);
    frame.render_widget(block, body_area);

    let mut lines: Vec<Line> = reflow(lesson.text.get(lang))
        .into_iter()
        .map(Line::raw)
        .collect();
    if let Some(formula) = &lesson.formula {
        // The formula in a box of its own width, drawn as it is written.
        let rows: Vec<String> = formula.lines().map(text::sanitize).collect();
        let width = rows.iter().map(|r| text::width(r)).max().unwrap_or(0);
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            format!("┌{}┐", "─".repeat(width + 2)),
            theme.dim(),
        ));
        for r in &rows {
            let pad = width - text::width(r);
            lines.push(Line::from(vec![
                Span::styled("│ ", theme.dim()),
                Span::styled(r.clone(), theme.selected()),
                Span::raw(" ".repeat(pad)),
                Span::styled(" │", theme.dim()),
            ]));
        }
        lines.push(Line::styled(
            format!("└{}┘", "─".repeat(width + 2)),
            theme.dim(),
        ));
    }
    if !lesson.sentences.is_empty() {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            tr(lang, "lessons.sentences"),
            ratatui::style::Style::new().add_modifier(Modifier::BOLD),
        ));
        for (i, s) in lesson.sentences.iter().enumerate() {
            lines.push(Line::raw(format!("  {i}  {}", text::sanitize(s))));
        }
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        tr(lang, "lessons.steps"),
        ratatui::style::Style::new().add_modifier(Modifier::BOLD),
    ));
    for (i, step) in lesson.steps.iter().enumerate() {
        lines.push(Line::from(vec![
            Span::styled(format!("  [{}] ", i + 1), theme.selected()),
            Span::raw(text::sanitize(step.label.get(lang))),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((screen.scroll, 0)),
        inner,
    );
}

/// The lesson's text as lines for wrapping: the lines of a paragraph joined (so the terminal's
/// width decides the breaks), a line indented by one to three spaces (an item) kept on its own
/// (a line indented by four or more continues it), blank lines kept. Chinese lines join without
/// a space.
fn reflow(body: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for raw in body.trim().lines() {
        let line = text::sanitize(raw.trim_end());
        if line.trim().is_empty() {
            out.push(String::new());
            open = false;
        } else if open && (!line.starts_with(' ') || line.starts_with("    ")) {
            let last = out.last_mut().expect("an open paragraph has a line");
            let wide = |c: Option<char>| c.is_some_and(|c| text::width(&c.to_string()) > 1);
            if !(wide(last.chars().last()) || wide(line.chars().next())) {
                last.push(' ');
            }
            last.push_str(line.trim_start());
        } else {
            out.push(line);
            open = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::reflow;

    #[test]
    fn paragraphs_join_items_stay_and_chinese_joins_without_spaces() {
        let body =
            "One two\nthree.\n  - an item\n      goes on\n  - another\nafter\n\n第一行\n第二行";
        assert_eq!(
            reflow(body),
            [
                "One two three.",
                "  - an item goes on",
                "  - another after",
                "",
                "第一行第二行"
            ]
        );
    }
}
