//! The status bar: model, device, dimension, pooling, max sequence length, and what is running.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::text;
use crate::tui::app::App;
use crate::tui::explorer::ModelState;
use crate::tui::theme::Theme;

pub fn draw(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) {
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
                format!("dim {}", m.dim),
                format!("pooling {}", m.pooling),
                format!("max {} tokens", m.max_seq_length),
            ];
            if m.similarity != "cosine" {
                parts.push(m.similarity.clone());
            }
            if let Some(p) = &m.prompt {
                parts.push(format!("prompt {}", text::clip(p, 24)));
            }
            for part in parts {
                spans.push(sep.clone());
                spans.push(Span::raw(part));
            }
            spans.push(sep.clone());
            let activity = if app.explorer.pending() {
                "embedding…".to_string()
            } else {
                match app.explorer.last_embed_ms {
                    Some(ms) => format!("ready ({ms:.0} ms)"),
                    None => "ready".to_string(),
                }
            };
            spans.push(Span::raw(activity));
        }
        ModelState::Loading { message, .. } => spans.push(Span::raw(message.clone())),
        ModelState::Failed { error, .. } => spans.push(Span::styled(
            format!("model failed: {}", text::sanitize(error)),
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
            format!(
                "showing {} · vs {}",
                super::matrix::view_name(app),
                text::clip(&name, 24)
            ),
            Style::new().add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(run) = app.active_run() {
        spans.push(sep.clone());
        let pct = (100 * run.step).checked_div(run.total_steps).unwrap_or(0);
        spans.push(Span::raw(format!("training run {} {pct}%", run.id)));
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
    let help = "? help · q quit";
    let [left, right] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(text::width(help) as u16 + 1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(Line::from(spans)), left);
    frame.render_widget(Paragraph::new(Span::styled(help, theme.dim())), right);
}
