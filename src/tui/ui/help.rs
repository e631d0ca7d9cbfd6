//! Pop-ups: the help overlay (built from the key map itself) and the demo-set picker.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use crate::tui::app::{App, Confirm};
use crate::tui::demo::DEMO_SETS;
use crate::tui::keys::{BINDINGS, Context};
use crate::tui::theme::Theme;

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [h] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    h
}

/// The help text: every binding, grouped by where it applies.
pub fn help_lines() -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for ctx in [
        Context::Global,
        Context::Sentences,
        Context::Matrix,
        Context::Map,
        Context::Form,
        Context::Run,
        Context::History,
        Context::Editing,
    ] {
        if !lines.is_empty() {
            lines.push(Line::raw(""));
        }
        lines.push(Line::styled(
            ctx.title(),
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
        ));
        for b in BINDINGS.iter().filter(|b| b.context == ctx) {
            lines.push(Line::from(vec![
                Span::styled(
                    format!("  {:<12}", b.label),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(b.help),
            ]));
        }
    }
    lines
}

pub fn draw_help(theme: &Theme, frame: &mut Frame, area: Rect) {
    let lines = help_lines();
    let block = Block::bordered()
        .title(" Keys · any key closes ")
        .border_style(theme.border(true));
    if lines.len() as u16 + 2 <= area.height {
        let popup = centered(area, 64, lines.len() as u16 + 2);
        frame.render_widget(Clear, popup);
        frame.render_widget(Paragraph::new(lines).block(block), popup);
        return;
    }
    // Too tall for one column: split at the group boundary nearest the middle.
    let breaks: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.spans.is_empty() || l.width() == 0)
        .map(|(i, _)| i)
        .collect();
    let half = lines.len() / 2;
    let split = breaks
        .iter()
        .copied()
        .min_by_key(|&b| b.abs_diff(half))
        .unwrap_or(half);
    let (left, right) = lines.split_at(split);
    let right: Vec<Line> = right.iter().skip(1).cloned().collect();
    let height = left.len().max(right.len()) as u16 + 2;
    let popup = centered(area, 122, height);
    frame.render_widget(Clear, popup);
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let [a, b] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(inner);
    frame.render_widget(Paragraph::new(left.to_vec()), a);
    frame.render_widget(Paragraph::new(right), b);
}

pub fn draw_demo(theme: &Theme, frame: &mut Frame, area: Rect, selected: usize) {
    let mut lines = Vec::new();
    for (i, set) in DEMO_SETS.iter().enumerate() {
        let style = if i == selected {
            theme.selected()
        } else {
            Style::new()
        };
        let marker = if i == selected { "▶ " } else { "  " };
        lines.push(Line::styled(format!("{marker}{}", set.name), style));
        lines.push(Line::styled(
            format!("    {}", set.description),
            theme.dim(),
        ));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "↑↓ choose · Enter load (replaces the sentences) · Esc close",
        theme.dim(),
    ));
    let popup = centered(area, 66, lines.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" Demo sets ")
                .border_style(theme.border(true)),
        ),
        popup,
    );
}

pub fn draw_confirm(theme: &Theme, frame: &mut Frame, area: Rect, what: Confirm, app: &App) {
    let id = app.active_run().map_or(0, |r| r.id);
    let (title, lines) = match what {
        Confirm::StopRun => (
            format!(" Stop run {id}? "),
            vec![
                "k   stop at the end of this step and keep a checkpoint",
                "d   stop without a checkpoint",
                "c   keep training",
            ],
        ),
        Confirm::QuitDuringRun => (
            format!(" Run {id} is training. Quit? "),
            vec![
                "k   stop it, keep a checkpoint, then quit",
                "d   stop it without a checkpoint and quit",
                "c   do not quit",
            ],
        ),
    };
    let lines: Vec<Line> = lines.into_iter().map(Line::raw).collect();
    let popup = centered(area, 62, lines.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(title)
                .border_style(theme.border(true)),
        ),
        popup,
    );
}
