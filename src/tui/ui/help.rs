//! Pop-ups: the help overlay (built from the key map itself), the demo-set picker, the
//! question about a run, and every pooling side by side.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::model::cost::CostReport;
use crate::text;
use crate::tui::app::App;
use crate::tui::demo::DEMO_SETS;
use crate::tui::keys::{BINDINGS, Context};
use crate::tui::shell::{Confirm, PoolingView, PromptView};
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

/// Where bindings apply, in the order the help lists them (the help's own keys are in its title).
const HELP_ORDER: [Context; 11] = [
    Context::Global,
    Context::Lessons,
    Context::Sentences,
    Context::Matrix,
    Context::Map,
    Context::Form,
    Context::Run,
    Context::History,
    Context::Confirm,
    Context::Demo,
    Context::Editing,
];

/// The help text: every binding, one group of lines per place where bindings apply.
pub fn help_groups() -> Vec<Vec<Line<'static>>> {
    HELP_ORDER
        .iter()
        .map(|&ctx| {
            let mut lines = vec![Line::styled(
                ctx.title(),
                Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            )];
            for b in BINDINGS.iter().filter(|b| b.context == ctx) {
                lines.push(Line::from(vec![
                    Span::styled(
                        format!("  {:<12}", b.label),
                        Style::new().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(b.help),
                ]));
            }
            lines
        })
        .collect()
}

/// The help text as one column.
pub fn help_lines() -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for g in help_groups() {
        if !lines.is_empty() {
            lines.push(Line::raw(""));
        }
        lines.extend(g);
    }
    lines
}

/// Packs the groups into columns of at most `height` lines, never splitting a group.
fn columns(groups: Vec<Vec<Line<'static>>>, height: usize) -> Vec<Vec<Line<'static>>> {
    let mut cols: Vec<Vec<Line>> = vec![Vec::new()];
    for g in groups {
        let col = cols.last_mut().expect("one column at least");
        let need = g.len() + usize::from(!col.is_empty());
        if !col.is_empty() && col.len() + need > height {
            cols.push(g);
        } else {
            if !col.is_empty() {
                col.push(Line::raw(""));
            }
            col.extend(g);
        }
    }
    cols
}

pub fn draw_help(theme: &Theme, frame: &mut Frame, area: Rect) {
    let block = Block::bordered()
        .title(" Keys · Esc or any other key closes ")
        .border_style(theme.border(true));
    let height = area.height.saturating_sub(2).max(1) as usize;
    let cols = columns(help_groups(), height);
    let tallest = cols.iter().map(Vec::len).max().unwrap_or(0) as u16;
    let col_w: u16 = 62;
    let popup = centered(area, col_w * cols.len() as u16 + 2, tallest + 2);
    frame.render_widget(Clear, popup);
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let parts =
        Layout::horizontal(vec![Constraint::Ratio(1, cols.len() as u32); cols.len()]).split(inner);
    for (col, part) in cols.into_iter().zip(parts.iter()) {
        frame.render_widget(Paragraph::new(col), *part);
    }
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
    lines.extend(binding_lines(Context::Demo));
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

/// The lines of a pop-up's keys, from the key map.
fn binding_lines(ctx: Context) -> Vec<Line<'static>> {
    BINDINGS
        .iter()
        .filter(|b| b.context == ctx)
        .map(|b| {
            Line::from(vec![
                Span::styled(
                    format!("{:<7}", b.label),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(b.help),
            ])
        })
        .collect()
}

pub fn draw_confirm(theme: &Theme, frame: &mut Frame, area: Rect, what: Confirm, app: &App) {
    let id = app.active_run().map_or(0, |r| r.id);
    let title = match what {
        Confirm::StopRun => format!(" Stop run {id}? "),
        Confirm::QuitDuringRun => format!(" Run {id} is training. Stop it and quit? "),
    };
    let lines = binding_lines(Context::Confirm);
    let popup = centered(area, 66, lines.len() as u16 + 2);
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

/// The similarity of a pair under every pooling mode, with a bar each; the model's own pooling
/// marked.
pub fn draw_poolings(theme: &Theme, frame: &mut Frame, area: Rect, view: &PoolingView) {
    let width = area.width.saturating_sub(4).min(90);
    let inner_w = width.saturating_sub(2) as usize;
    let mut lines = pair_lines(&view.pair, inner_w);
    let bar_w = inner_w.saturating_sub(34).clamp(4, 40);
    for (mode, v) in &view.rows {
        let filled = ((v.clamp(0.0, 1.0)) * bar_w as f32).round() as usize;
        let mark = if *mode == view.current { "▶" } else { " " };
        let style = if *mode == view.current {
            theme.selected()
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{mark} {mode:<22} {v:>7.4}  "), style),
            Span::styled("█".repeat(filled), theme.dim()),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        if view.dense {
            "cosine of the pooled vectors, before the model's Dense layer; one transformer pass"
        } else {
            "cosine of the pooled vectors; one transformer pass for all of them"
        },
        theme.dim(),
    ));
    popup(
        theme,
        frame,
        area,
        (width, 0),
        " Every pooling side by side · any key closes ",
        lines,
    );
}

/// "A: ..." and "B: ..." lines for a pair of texts `width` wide, and a blank line.
fn pair_lines(pair: &(String, String), width: usize) -> Vec<Line<'static>> {
    let line = |tag: &str, t: &str| {
        Line::raw(format!(
            "{tag}: {}",
            text::clip(&text::sanitize(t), width.saturating_sub(3))
        ))
    };
    vec![line("A", &pair.0), line("B", &pair.1), Line::raw("")]
}

/// A wrapped pop-up of `lines` centred in `area`, `width` wide, with `spare` rows beyond its
/// lines and borders for lines that wrap.
fn popup(
    theme: &Theme,
    frame: &mut Frame,
    area: Rect,
    (width, spare): (u16, u16),
    title: &str,
    lines: Vec<Line>,
) {
    let rect = centered(area, width, lines.len() as u16 + 2 + spare);
    let paragraph = Paragraph::new(lines).wrap(Wrap { trim: false });
    frame.render_widget(Clear, rect);
    frame.render_widget(
        paragraph.block(
            Block::bordered()
                .title(title)
                .border_style(theme.border(true)),
        ),
        rect,
    );
}

/// A duration for people: ms, s, minutes, hours, days or years.
pub fn human_seconds(s: f64) -> String {
    match s {
        s if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s if s < 63_072_000.0 => format!("{:.0} days", s / 86_400.0),
        s => format!("{:.1} years", s / 31_536_000.0),
    }
}

/// Bi-encoder against cross-encoder cost, as measured on the current sentences.
pub fn draw_cost(theme: &Theme, frame: &mut Frame, area: Rect, r: &CostReport) {
    let big = crate::model::cost::EXTRAPOLATE_TO;
    let group = |n: usize| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    let measured = if r.cross_measured < r.cross_passes {
        format!(" (timed on {} of them)", group(r.cross_measured))
    } else {
        String::new()
    };
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let lines = vec![
        Line::styled(format!("Now, N = {} sentences", r.n), bold),
        Line::raw(format!(
            "  bi-encoder     {:>10} passes + {} dot products   {}",
            group(r.bi_passes),
            group(r.n * r.n),
            human_seconds(r.bi_seconds + r.dot_seconds)
        )),
        Line::raw(format!(
            "  cross-encoder  {:>10} passes{measured}   {}",
            group(r.cross_passes),
            human_seconds(r.cross_seconds)
        )),
        Line::raw(""),
        Line::styled(format!("Extrapolated to N = {}", group(big)), bold),
        Line::raw(format!(
            "  bi-encoder     {:>10} passes   {}",
            group(big),
            human_seconds(r.bi_seconds_10k)
        )),
        Line::raw(format!(
            "  cross-encoder  {:>10} passes   {}",
            group(big * (big - 1) / 2),
            human_seconds(r.cross_seconds_10k)
        )),
        Line::raw(""),
        Line::styled(
            "Timed on this machine with the model loaded; the cross-encoder is this transformer \
             reading each pair's texts joined.",
            theme.dim(),
        ),
    ];
    popup(
        theme,
        frame,
        area,
        (area.width.saturating_sub(4).min(90), 1),
        " Bi-encoder or cross-encoder: what N(N-1)/2 costs · any key closes ",
        lines,
    );
}

/// A pair under each of the model's prompts: A's prompt down, B's across.
pub fn draw_prompts(theme: &Theme, frame: &mut Frame, area: Rect, view: &PromptView) {
    let width = area.width.saturating_sub(4).min(90);
    let inner_w = width.saturating_sub(2) as usize;
    let col = 10;
    let mut lines = pair_lines(&view.pair, inner_w);
    lines.push(Line::styled(
        format!(
            "{:<14}{}",
            "A \\ B",
            view.labels
                .iter()
                .map(|l| format!("{:>col$}", text::clip(l, col - 1)))
                .collect::<String>()
        ),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    for (label, row) in view.labels.iter().zip(&view.matrix) {
        let mut spans = vec![Span::styled(
            format!("{:<14}", text::clip(label, 13)),
            Style::new().add_modifier(Modifier::BOLD),
        )];
        for (j, v) in row.iter().enumerate() {
            let style = if view.labels[j] == *label {
                theme.selected()
            } else {
                Style::new()
            };
            spans.push(Span::styled(format!("{v:>col$.4}"), style));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        format!(
            "{} of A under the row's prompt and B under the column's; retrieval asks a query \
             against documents (the off-diagonal cells).",
            view.similarity
        ),
        theme.dim(),
    ));
    popup(
        theme,
        frame,
        area,
        (width, 1),
        " Prompts side by side · any key closes ",
        lines,
    );
}

#[cfg(test)]
mod tests {
    use super::human_seconds;

    #[test]
    fn durations_for_people() {
        assert_eq!(human_seconds(0.0123), "12 ms");
        assert_eq!(human_seconds(3.21), "3.2 s");
        assert_eq!(human_seconds(600.0), "10 min");
        assert_eq!(human_seconds(36_000.0), "10.0 h");
        assert_eq!(human_seconds(1_000_000.0), "12 days");
        assert_eq!(human_seconds(1e9), "31.7 years");
    }
}
