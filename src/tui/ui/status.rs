//! The status bar: model, device, dimension, pooling, max sequence length, and what is running.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::text;
use crate::tui::app::App;
use crate::tui::explorer::ModelState;
use crate::tui::i18n::{tr, tr_with};
use crate::tui::theme::Theme;

pub fn draw(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) {
    let lang = app.lang;
    let sep = Span::styled(" │ ", theme.dim());
    let mut spans: Vec<Span> = Vec::new();
    match &app.explorer.base.model {
        ModelState::Ready(m) => {
            let name = m
                .name
                .rsplit(['/', '\\'])
                .find(|s| !s.is_empty())
                .unwrap_or(&m.name);
            spans.push(Span::styled(
                text::clip(name, 28),
                Style::new().add_modifier(Modifier::BOLD),
            ));
            let mut parts = vec![
                m.device.clone(),
                tr_with(lang, "status.dim", &[("n", &m.dim)]),
                tr_with(lang, "status.pooling", &[("name", &m.pooling)]),
                tr_with(lang, "status.max_tokens", &[("n", &m.max_seq_length)]),
            ];
            if m.similarity != "cosine" {
                parts.push(m.similarity.clone());
            }
            if let Some(p) = &m.prompt {
                parts.push(tr_with(
                    lang,
                    "status.prompt",
                    &[("name", &text::clip(p, 24))],
                ));
            }
            for part in parts {
                spans.push(sep.clone());
                spans.push(Span::raw(part));
            }
            spans.push(sep.clone());
            let activity = if app.explorer.pending() {
                tr(lang, "status.embedding").into_owned()
            } else {
                match app.explorer.last_embed_ms {
                    Some(ms) => tr_with(lang, "status.ready_ms", &[("ms", &format!("{ms:.0}"))]),
                    None => tr(lang, "status.ready").into_owned(),
                }
            };
            spans.push(Span::raw(activity));
        }
        ModelState::Loading { message, .. } => spans.push(Span::raw(message.clone())),
        ModelState::Failed { error, .. } => spans.push(Span::styled(
            tr_with(
                lang,
                "status.model_failed",
                &[("error", &text::sanitize(error))],
            ),
            theme.error(),
        )),
    }
    if let Some(t) = &app.explorer.tuned {
        spans.push(sep.clone());
        let name = match &t.model {
            ModelState::Ready(m) => m.name.clone(),
            ModelState::Loading { spec, .. } | ModelState::Failed { spec, .. } => spec.clone(),
        };
        spans.push(Span::styled(
            tr_with(
                lang,
                "status.showing",
                &[
                    ("view", &super::matrix::view_name(app)),
                    ("name", &text::clip(&name, 24)),
                ],
            ),
            Style::new().add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(run) = app.active_run() {
        spans.push(sep.clone());
        let pct = (100 * run.step).checked_div(run.total_steps).unwrap_or(0);
        spans.push(Span::raw(tr_with(
            lang,
            "status.training",
            &[("id", &run.id), ("pct", &format!("{pct}%"))],
        )));
    }
    if let Some(s) = &app.shell.status
        && !(matches!(app.explorer.base.model, ModelState::Failed { .. }) && s.error)
    {
        spans.push(sep.clone());
        let style = if s.error { theme.error() } else { theme.dim() };
        let mark = if s.error { "! " } else { "" };
        spans.push(Span::styled(
            format!("{mark}{}", text::sanitize(&s.text)),
            style,
        ));
    }
    let help = tr(lang, "status.help");
    let [left, right] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(text::width(&help) as u16 + 1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(Line::from(spans)), left);
    frame.render_widget(Paragraph::new(Span::styled(help, theme.dim())), right);
}
