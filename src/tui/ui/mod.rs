//! Drawing: a pure function of the app state. One file per pane.

pub mod corpus;
pub mod details;
pub mod help;
pub mod lessons;
pub mod map;
pub mod matrix;
pub mod sentences;
pub mod status;
pub mod training;
pub mod workshop;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::widgets::{Paragraph, Wrap};

use super::app::{App, Screen};
use super::hits::{Hits, Pane};
use super::i18n::tr_with;
use super::shell::Mode;
use super::theme::Theme;

/// Smallest terminal the layout fits in.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

pub struct Areas {
    pub sentences: Rect,
    pub matrix: Rect,
    pub map: Rect,
    pub details: Rect,
    pub status: Rect,
}

pub fn layout(area: Rect) -> Areas {
    let [main, status] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(main);
    let [sentences, matrix] =
        Layout::horizontal([Constraint::Percentage(38), Constraint::Percentage(62)]).areas(top);
    let [map, details] =
        Layout::horizontal([Constraint::Percentage(64), Constraint::Percentage(36)]).areas(bottom);
    Areas {
        sentences,
        matrix,
        map,
        details,
        status,
    }
}

/// First visible index of a list of `len` items shown `view` at a time, so that `cursor` is
/// visible (the view scrolls only when the cursor would leave it).
pub fn scroll_offset(cursor: usize, len: usize, view: usize) -> usize {
    if view == 0 || len <= view {
        return 0;
    }
    cursor.saturating_sub(view - 1).min(len - view)
}

/// Draws a frame of the app; returns where its clickable parts went.
pub fn draw(app: &App, frame: &mut Frame) -> Hits {
    let area = frame.area();
    let theme = Theme { color: app.color };
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = tr_with(
            app.lang,
            "ui.too_small",
            &[
                ("w", &area.width),
                ("h", &area.height),
                ("min_w", &MIN_WIDTH),
                ("min_h", &MIN_HEIGHT),
            ],
        );
        frame.render_widget(
            Paragraph::new(msg)
                .wrap(Wrap { trim: true })
                .alignment(Alignment::Center),
            area,
        );
        return Hits::default();
    }
    let areas = layout(area);
    let mut hits = Hits::default();
    match app.screen {
        Screen::Explorer => {
            hits.list = Some(sentences::draw(app, &theme, frame, areas.sentences));
            hits.grid = matrix::draw(app, &theme, frame, areas.matrix);
            hits.panes = vec![
                (Pane::Sentences, areas.sentences),
                (Pane::Matrix, areas.matrix),
                (Pane::Map, areas.map),
            ];
            map::draw(app, &theme, frame, areas.map);
            details::draw(app, &theme, frame, areas.details);
        }
        Screen::Lessons => {
            let [main, _] =
                Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
            lessons::draw(app, &theme, frame, main);
        }
        Screen::Corpus => {
            let [main, _] =
                Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
            corpus::draw(app, &theme, frame, main);
            // The corpus screen's questions (but the query, drawn in place) use the status row.
            if let Mode::Editing(target, editor) = &app.shell.mode
                && !matches!(
                    target,
                    super::shell::EditTarget::Corpus(super::shell::CorpusInput::Query)
                )
            {
                sentences::draw_input_line(target, editor, app.lang, &theme, frame, areas.status);
                return hits;
            }
        }
        Screen::Training => {
            let [main, _] =
                Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
            training::draw(app, &theme, frame, main);
            // The input line for a form field sits in the status row's place.
            if let Mode::Editing(target, editor) = &app.shell.mode {
                sentences::draw_input_line(target, editor, app.lang, &theme, frame, areas.status);
                return hits;
            }
        }
    }
    status::draw(app, &theme, frame, areas.status);
    match &app.shell.mode {
        Mode::Help => help::draw_help(app.lang, &theme, frame, area),
        Mode::Demo { selected } => help::draw_demo(app.lang, &theme, frame, area, *selected),
        Mode::Confirm(what) => help::draw_confirm(&theme, frame, area, *what, app),
        Mode::Poolings(view) => help::draw_poolings(app.lang, &theme, frame, area, view),
        Mode::Cost(report) => help::draw_cost(
            app.lang,
            &theme,
            frame,
            area,
            report,
            &app.explorer.sentences,
        ),
        Mode::Prompts(view) => help::draw_prompts(app.lang, &theme, frame, area, view),
        Mode::Pipeline(view) => workshop::draw_pipeline(app.lang, &theme, frame, area, view),
        _ => {}
    }
    if !matches!(app.shell.mode, Mode::Normal) {
        // A pop-up or the input line covers the panes: clicks mean nothing there.
        return Hits::default();
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scroll_keeps_the_cursor_visible() {
        assert_eq!(scroll_offset(0, 100, 10), 0);
        assert_eq!(scroll_offset(9, 100, 10), 0);
        assert_eq!(scroll_offset(10, 100, 10), 1);
        assert_eq!(scroll_offset(99, 100, 10), 90);
        assert_eq!(scroll_offset(5, 3, 10), 0);
        assert_eq!(scroll_offset(5, 10, 0), 0);
    }
}
