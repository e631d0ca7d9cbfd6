//! The sentences pane: the list (with the sentence being typed) and the input line.

use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::scroll_offset;
use crate::lessons::Lang;
use crate::text;
use crate::tui::app::App;
use crate::tui::editor::LineEditor;
use crate::tui::hits::{ListHits, Pane};
use crate::tui::i18n::{tr, tr_with};
use crate::tui::shell::{EditTarget, Mode};
use crate::tui::theme::Theme;

/// Rows of the list inside `area` (the input line takes two rows while typing).
fn list_area(app: &App, area: Rect) -> Rect {
    let inner = Block::bordered().inner(area);
    let reserved = if matches!(app.shell.mode, Mode::Editing(..)) {
        2
    } else {
        0
    };
    Rect {
        height: inner.height.saturating_sub(reserved),
        ..inner
    }
}

/// Draws the pane; returns where the rows went (for clicks).
pub fn draw(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) -> ListHits {
    let lang = app.lang;
    let texts = app.texts();
    let focused = app.explorer.focus == Pane::Sentences;
    let unknown = app.explorer.analysis.as_ref().map_or(0, |a| {
        a.base.tokens.iter().filter(|t| t.mostly_unknown()).count()
    });
    let title = if unknown > 0 {
        // `?` marks the sentences that are mostly pieces the model does not know.
        tr_with(
            lang,
            "sentences.title_unknown",
            &[("n", &texts.len()), ("unknown", &unknown)],
        )
    } else {
        tr_with(lang, "sentences.title", &[("n", &texts.len())])
    };
    let block = Block::bordered()
        .title(title)
        .border_style(theme.border(focused));
    let list = list_area(app, area);
    frame.render_widget(block, area);
    if list.width == 0 {
        return ListHits::default();
    }

    let counts = |i: usize| {
        app.explorer
            .analysis
            .as_ref()
            .filter(|a| a.texts.get(i) == texts.get(i))
            .and_then(|a| a.base.tokens.get(i))
            .copied()
            .unwrap_or_default()
    };
    let editing_row = match &app.shell.mode {
        Mode::Editing(EditTarget::Sentence(i), _) => Some(*i),
        Mode::Editing(EditTarget::NewSentence, e) if !e.text().is_empty() => Some(texts.len() - 1),
        _ => None,
    };
    let height = list.height as usize;
    let offset = scroll_offset(app.explorer.selected, texts.len(), height);
    let width = list.width as usize;
    let mut lines: Vec<Line> = Vec::new();
    if texts.is_empty() {
        lines.push(Line::styled(tr(lang, "sentences.empty"), theme.dim()));
        lines.push(Line::styled(tr(lang, "sentences.empty_hint"), theme.dim()));
    }
    for (i, t) in texts.iter().enumerate().skip(offset).take(height) {
        let selected = i == app.explorer.selected;
        let marker = if selected { "▶" } else { " " };
        let count = counts(i);
        // ✂: cut at the model's limit; ?: mostly pieces the model does not know.
        let cut = if count.truncated { "✂" } else { "" };
        let unknown = if count.mostly_unknown() { "?" } else { "" };
        let prefix = format!("{marker}{i:>2} {cut}{unknown}");
        let room = width.saturating_sub(text::width(&prefix));
        let mut style = if selected {
            theme.selected()
        } else {
            Style::new()
        };
        if editing_row == Some(i) {
            style = style.add_modifier(Modifier::ITALIC);
        }
        lines.push(Line::from(vec![
            Span::styled(prefix, style),
            Span::styled(text::clip(t, room), style),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), list);

    if let Mode::Editing(target, editor) = &app.shell.mode {
        let inner = Block::bordered().inner(area);
        let y = inner.y + inner.height.saturating_sub(2);
        let label = format!("{}: ", prompt(target, lang));
        let hint = Rect::new(inner.x, y, inner.width, 1);
        frame.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(label, theme.border(true)),
                Span::styled(tr(lang, "input.hint"), theme.dim()),
            ])),
            hint,
        );
        let input = Rect::new(inner.x, y + 1, inner.width, 1);
        draw_field(editor, frame, input, "> ");
    }
    ListHits {
        rows: list,
        first: offset,
        count: texts.len(),
    }
}

/// What the input line asks for, in `lang`.
pub fn prompt(target: &EditTarget, lang: Lang) -> std::borrow::Cow<'static, str> {
    let key = match target {
        EditTarget::NewSentence => "input.NewSentence",
        EditTarget::Sentence(_) => "input.Sentence",
        EditTarget::OpenPath => "input.OpenPath",
        EditTarget::SavePath => "input.SavePath",
        EditTarget::ModelSpec => "input.ModelSpec",
        EditTarget::TunedSpec => "input.TunedSpec",
        EditTarget::Field(f) => return super::training::setting_label(*f, lang),
        EditTarget::Corpus(c) => c.prompt_key(),
    };
    tr(lang, key)
}

/// An input line with its cursor.
fn draw_field(editor: &LineEditor, frame: &mut Frame, area: Rect, prefix: &str) {
    let p = text::width(prefix) as u16;
    let field = area.width.saturating_sub(p) as usize;
    let (shown, col) = editor.view(field);
    frame.render_widget(Paragraph::new(format!("{prefix}{shown}")), area);
    if area.height > 0 && area.width > p {
        frame.set_cursor_position(Position::new(area.x + p + col as u16, area.y));
    }
}

/// The input line on one row (the training screen's form fields).
pub fn draw_input_line(
    target: &EditTarget,
    editor: &LineEditor,
    lang: Lang,
    theme: &Theme,
    frame: &mut Frame,
    area: Rect,
) {
    let label = format!("{}: ", prompt(target, lang));
    let w = (text::width(&label) as u16).min(area.width / 2);
    frame.render_widget(
        Paragraph::new(Span::styled(label, theme.border(true))),
        Rect { width: w, ..area },
    );
    draw_field(
        editor,
        frame,
        Rect {
            x: area.x + w,
            width: area.width - w,
            ..area
        },
        "",
    );
}
