//! Pop-ups: the help overlay (built from the key map itself), the demo-set picker, the
//! question about a run, and every pooling side by side.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::lessons::Lang;
use crate::model::cost::CostReport;
use crate::text;
use crate::tui::app::App;
use crate::tui::demo::DEMO_SETS;
use crate::tui::i18n::{tr, tr_with};
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

/// Clears `rect` and one column either side of it (within `area`): a wide (CJK) character
/// under the pop-up's left border would otherwise keep drawing over it.
fn clear(frame: &mut Frame, area: Rect, rect: Rect) {
    let left = rect.x.saturating_sub(1).max(area.x);
    let right = (rect.x + rect.width + 1).min(area.x + area.width);
    frame.render_widget(
        Clear,
        Rect {
            x: left,
            width: right - left,
            ..rect
        },
    );
}

/// Where bindings apply, in the order the help lists them (the help's own keys are in its title).
const HELP_ORDER: [Context; 12] = [
    Context::Global,
    Context::Lessons,
    Context::Corpus,
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

/// The help text in `lang`: every binding, one group of lines per place where bindings apply.
pub fn help_groups(lang: Lang) -> Vec<Vec<Line<'static>>> {
    HELP_ORDER
        .iter()
        .map(|&ctx| {
            let mut lines = vec![Line::styled(
                ctx.title(lang),
                Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            )];
            for b in BINDINGS.iter().filter(|b| b.context == ctx) {
                lines.push(Line::from(vec![
                    Span::styled(
                        format!("  {:<12}", b.label),
                        Style::new().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(b.help(lang)),
                ]));
            }
            lines
        })
        .collect()
}

/// The help text as one column.
pub fn help_lines(lang: Lang) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for g in help_groups(lang) {
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

pub fn draw_help(lang: Lang, theme: &Theme, frame: &mut Frame, area: Rect) {
    let block = Block::bordered()
        .title(tr(lang, "help.title"))
        .border_style(theme.border(true));
    let height = area.height.saturating_sub(2).max(1) as usize;
    let cols = columns(help_groups(lang), height);
    let tallest = cols.iter().map(Vec::len).max().unwrap_or(0) as u16;
    let col_w: u16 = 62;
    let popup = centered(area, col_w * cols.len() as u16 + 2, tallest + 2);
    clear(frame, area, popup);
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let parts =
        Layout::horizontal(vec![Constraint::Ratio(1, cols.len() as u32); cols.len()]).split(inner);
    for (col, part) in cols.into_iter().zip(parts.iter()) {
        frame.render_widget(Paragraph::new(col), *part);
    }
}

pub fn draw_demo(lang: Lang, theme: &Theme, frame: &mut Frame, area: Rect, selected: usize) {
    let mut lines = Vec::new();
    for (i, set) in DEMO_SETS.iter().enumerate() {
        let style = if i == selected {
            theme.selected()
        } else {
            Style::new()
        };
        let marker = if i == selected { "▶ " } else { "  " };
        lines.push(Line::styled(format!("{marker}{}", set.name(lang)), style));
        lines.push(Line::styled(
            format!("    {}", set.description(lang)),
            theme.dim(),
        ));
    }
    lines.push(Line::raw(""));
    lines.extend(binding_lines(Context::Demo, lang));
    let popup = centered(area, 66, lines.len() as u16 + 2);
    clear(frame, area, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(tr(lang, "demo.title"))
                .border_style(theme.border(true)),
        ),
        popup,
    );
}

/// The lines of a pop-up's keys, from the key map.
fn binding_lines(ctx: Context, lang: Lang) -> Vec<Line<'static>> {
    BINDINGS
        .iter()
        .filter(|b| b.context == ctx)
        .map(|b| {
            Line::from(vec![
                Span::styled(
                    format!("{:<7}", b.label),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(b.help(lang)),
            ])
        })
        .collect()
}

pub fn draw_confirm(theme: &Theme, frame: &mut Frame, area: Rect, what: Confirm, app: &App) {
    let id = app.active_run().map_or(0, |r| r.id);
    let key = match what {
        Confirm::StopRun => "confirm.stop",
        Confirm::QuitDuringRun => "confirm.quit",
    };
    let title = tr_with(app.lang, key, &[("id", &id)]);
    let lines = binding_lines(Context::Confirm, app.lang);
    let popup = centered(area, 66, lines.len() as u16 + 2);
    clear(frame, area, popup);
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
pub fn draw_poolings(lang: Lang, theme: &Theme, frame: &mut Frame, area: Rect, view: &PoolingView) {
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
        tr(
            lang,
            if view.dense {
                "poolings.note_dense"
            } else {
                "poolings.note"
            },
        ),
        theme.dim(),
    ));
    popup(
        theme,
        frame,
        area,
        (width, 0),
        &tr(lang, "poolings.title"),
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
pub(super) fn popup(
    theme: &Theme,
    frame: &mut Frame,
    area: Rect,
    (width, spare): (u16, u16),
    title: &str,
    lines: Vec<Line>,
) {
    let rect = centered(area, width, lines.len() as u16 + 2 + spare);
    let paragraph = Paragraph::new(lines).wrap(Wrap { trim: false });
    clear(frame, area, rect);
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
    human_seconds_in(Lang::En, s)
}

/// [`human_seconds`] in `lang` (days and years are words; ms, s, min and h are symbols).
pub fn human_seconds_in(lang: Lang, s: f64) -> String {
    match s {
        s if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s if s < 63_072_000.0 => {
            tr_with(lang, "time.days", &[("n", &format!("{:.0}", s / 86_400.0))])
        }
        s => tr_with(
            lang,
            "time.years",
            &[("n", &format!("{:.1}", s / 31_536_000.0))],
        ),
    }
}

/// Bi-encoder against cross-encoder cost, as measured on the current sentences.
pub fn draw_cost(
    lang: Lang,
    theme: &Theme,
    frame: &mut Frame,
    area: Rect,
    r: &CostReport,
    texts: &[String],
) {
    let human_seconds = |s| human_seconds_in(lang, s);
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
        tr_with(lang, "cost.timed_on", &[("n", &group(r.cross_measured))])
    } else {
        String::new()
    };
    let passes = |n: usize| format!("{:>10}", group(n));
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines = vec![
        Line::styled(tr_with(lang, "cost.now", &[("n", &r.n)]), bold),
        Line::raw(tr_with(
            lang,
            "cost.bi_now",
            &[
                ("passes", &passes(r.bi_passes)),
                ("dots", &group(r.n * r.n)),
                ("time", &human_seconds(r.bi_seconds + r.dot_seconds)),
            ],
        )),
        Line::raw(tr_with(
            lang,
            "cost.cross_now",
            &[
                ("passes", &passes(r.cross_passes)),
                ("measured", &measured),
                ("time", &human_seconds(r.cross_seconds)),
            ],
        )),
        Line::raw(""),
        Line::styled(
            tr_with(lang, "cost.extrapolated", &[("n", &group(big))]),
            bold,
        ),
        Line::raw(tr_with(
            lang,
            "cost.bi",
            &[
                ("passes", &passes(big)),
                ("time", &human_seconds(r.bi_seconds_10k)),
            ],
        )),
        Line::raw(tr_with(
            lang,
            "cost.cross",
            &[
                ("passes", &passes(big * (big - 1) / 2)),
                ("time", &human_seconds(r.cross_seconds_10k)),
            ],
        )),
        Line::raw(""),
        Line::styled(tr(lang, "cost.note"), theme.dim()),
    ];
    let width = area.width.saturating_sub(4).min(90);
    if let Some(ce) = &r.cross_encoder {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            tr_with(
                lang,
                "cost.ce.title",
                &[
                    ("model", &text::clip(&ce.model, 30)),
                    ("pairs", &group(ce.measured)),
                ],
            ),
            bold,
        ));
        lines.push(Line::raw(tr_with(
            lang,
            "cost.ce.times",
            &[
                ("measured", &human_seconds(ce.measured_seconds)),
                ("all", &human_seconds(ce.seconds)),
                ("n", &group(big)),
                ("big", &human_seconds(ce.seconds_10k)),
            ],
        )));
        let label = ce.labels.first().cloned().unwrap_or_default();
        lines.push(Line::styled(
            tr_with(
                lang,
                "cost.ce.header",
                &[("label", &text::clip(&label, 12))],
            ),
            theme.dim(),
        ));
        let room = (width as usize).saturating_sub(2 + 12 + 18);
        for p in ce.top(0, 5) {
            let name = |i: usize| texts.get(i).map_or(String::new(), |t| text::sanitize(t));
            let pair = format!("[{}] {} / [{}] {}", p.i, name(p.i), p.j, name(p.j));
            lines.push(Line::raw(format!(
                "{}  {:>7.4}  {:>7.4}",
                crate::tui::i18n::pad_right(&text::clip(&pair, room), room),
                p.cross.first().copied().unwrap_or(f32::NAN),
                p.bi
            )));
        }
    }
    popup(
        theme,
        frame,
        area,
        (width, 1),
        &tr(lang, "cost.title"),
        lines,
    );
}

/// A pair under each of the model's prompts: A's prompt down, B's across.
pub fn draw_prompts(lang: Lang, theme: &Theme, frame: &mut Frame, area: Rect, view: &PromptView) {
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
        tr_with(lang, "prompts.note", &[("similarity", &view.similarity)]),
        theme.dim(),
    ));
    popup(
        theme,
        frame,
        area,
        (width, 1),
        &tr(lang, "prompts.title"),
        lines,
    );
}

#[cfg(test)]
mod tests {
    use super::{Lang, human_seconds, human_seconds_in};

    #[test]
    fn durations_for_people() {
        assert_eq!(human_seconds(0.0123), "12 ms");
        assert_eq!(human_seconds(3.21), "3.2 s");
        assert_eq!(human_seconds(600.0), "10 min");
        assert_eq!(human_seconds(36_000.0), "10.0 h");
        assert_eq!(human_seconds(1_000_000.0), "12 days");
        assert_eq!(human_seconds(1e9), "31.7 years");
        assert_eq!(human_seconds_in(Lang::Zh, 1_000_000.0), "12 天");
        assert_eq!(human_seconds_in(Lang::Zh, 1e9), "31.7 年");
    }
}
