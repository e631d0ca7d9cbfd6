//! The workshop's live views that are not pop-ups of their own pane: a sentence's pipeline
//! (tokens to final vector) and what a ranking or triplet loss saw in the batch just trained.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

use crate::lessons::Lang;
use crate::model::PoolingMode;
use crate::text;
use crate::train::events::BatchView;
use crate::tui::i18n::{pad_right, tr, tr_with};
use crate::tui::shell::PipelineView;
use crate::tui::theme::Theme;

/// How many leading values of a vector a row shows.
const HEAD: usize = 4;

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn head(v: &[f32]) -> String {
    let mut s: Vec<String> = v.iter().take(HEAD).map(|x| format!("{x:+.3}")).collect();
    if v.len() > HEAD {
        s.push("…".into());
    }
    s.join(" ")
}

/// A bar of `cells` cells for `frac` in [0, 1], in eighths.
pub fn bar(frac: f32, cells: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (frac.clamp(0.0, 1.0) * (cells * 8) as f32).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(PARTS[eighths % 8]);
    }
    pad_right(&s, cells)
}

/// The lines of the pipeline view, for a pop-up `width` cells wide with room for `rows` lines.
pub fn pipeline_lines(
    lang: Lang,
    theme: &Theme,
    view: &PipelineView,
    width: usize,
    rows: usize,
) -> Vec<Line<'static>> {
    let p = &view.pipeline;
    let mut lines = vec![Line::styled(
        text::clip(&format!("\"{}\"", text::sanitize(&view.text)), width),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    let unknown = p.tokens.iter().filter(|t| t.unknown).count();
    lines.push(Line::raw(tr_with(
        lang,
        "pipeline.summary",
        &[
            ("n", &p.tokens.len()),
            ("max", &p.max_seq_length),
            ("pooling", &p.pooling),
            ("unknown", &unknown),
        ],
    )));
    if p.truncated {
        lines.push(Line::styled(
            tr_with(
                lang,
                "pipeline.cut",
                &[("max", &p.max_seq_length), ("dropped", &p.dropped)],
            ),
            theme.error(),
        ));
    }
    if p.pooling == PoolingMode::Max {
        lines.push(Line::styled(
            tr(lang, "pipeline.max_note").into_owned(),
            theme.dim(),
        ));
    }
    if p.tokens.iter().all(|t| t.weight.is_none()) {
        lines.push(Line::styled(
            tr(lang, "pipeline.no_weights").into_owned(),
            theme.dim(),
        ));
    }
    lines.push(Line::styled(
        tr(lang, "pipeline.header").into_owned(),
        Style::new().add_modifier(Modifier::UNDERLINED),
    ));
    // Rows left for tokens: the stages and their heading take stages + 2.
    let reserved = p.stages.len() + 2;
    let room = rows.saturating_sub(lines.len() + reserved).max(3);
    let top = p
        .tokens
        .iter()
        .filter_map(|t| t.weight)
        .fold(0f32, f32::max)
        .max(1e-12);
    let shown = if p.tokens.len() > room {
        room - 1
    } else {
        p.tokens.len()
    };
    for (i, t) in p.tokens.iter().enumerate().take(shown) {
        let mut piece = text::clip(&text::sanitize(&t.piece), 14);
        if t.unknown {
            piece.push('?');
        }
        let weight = match t.weight {
            Some(w) => format!("{w:.3} {}", bar(w / top, 10)),
            None => " ".repeat(16),
        };
        let style = if t.unknown {
            theme.error()
        } else if t.special {
            theme.dim()
        } else {
            Style::new()
        };
        let mut spans = vec![
            Span::raw(format!("{i:>3}  ")),
            Span::styled(pad_right(&piece, 15), style),
            Span::raw(format!("{:>6}  {weight}  {:>6.2}  ", t.id, norm(&t.vector))),
            Span::styled(head(&t.vector), theme.dim()),
        ];
        if !t.pooled {
            spans.push(Span::styled(
                format!("  ({})", tr(lang, "pipeline.not_pooled")),
                theme.dim(),
            ));
        }
        lines.push(Line::from(spans));
    }
    if shown < p.tokens.len() {
        lines.push(Line::styled(
            tr_with(
                lang,
                "pipeline.more_tokens",
                &[("n", &(p.tokens.len() - shown))],
            ),
            theme.dim(),
        ));
    }
    lines.push(Line::styled(
        tr(lang, "pipeline.stages").into_owned(),
        Style::new().add_modifier(Modifier::UNDERLINED),
    ));
    for (name, v) in &p.stages {
        lines.push(Line::from(vec![
            Span::styled(
                pad_right(&text::clip(name, 22), 23),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "{}  ‖v‖ {:>6.3}  ",
                pad_right(&tr_with(lang, "pipeline.values", &[("n", &v.len())]), 10),
                norm(v)
            )),
            Span::styled(head(v), theme.dim()),
        ]));
    }
    lines
}

/// The pipeline pop-up: as wide as the screen allows (up to 110 cells), nearly as tall.
pub fn draw_pipeline(
    lang: Lang,
    theme: &Theme,
    frame: &mut Frame,
    area: Rect,
    view: &PipelineView,
) {
    let width = area.width.min(110);
    let rows = area.height.saturating_sub(4) as usize;
    let lines = pipeline_lines(lang, theme, view, width.saturating_sub(2) as usize, rows);
    let title = tr_with(
        lang,
        "pipeline.title",
        &[("model", &text::clip(&view.model, 40))],
    );
    super::help::popup(theme, frame, area, (width, 0), &title, lines);
}

/// What the loss saw in the last batch, as lines for the training pane (`width` cells).
pub fn batch_lines(
    lang: Lang,
    theme: &Theme,
    view: &BatchView,
    width: usize,
) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let clip = |s: String| text::clip(&s, width);
    match view {
        BatchView::Ranking {
            cosines,
            rows,
            correct,
            ..
        } => {
            let mut lines = vec![
                Line::styled(clip(tr(lang, "batch.ranking.title").into_owned()), bold),
                Line::styled(
                    clip(tr_with(
                        lang,
                        "batch.ranking.note",
                        &[("correct", correct), ("rows", rows)],
                    )),
                    theme.dim(),
                ),
            ];
            // Six cells a column after a four-cell row label.
            let k = cosines.len().min(width.saturating_sub(4) / 6).max(1);
            let mut head = String::from("    ");
            for j in 0..k {
                head.push_str(&format!("{:>6}", format!("p{j}")));
            }
            lines.push(Line::styled(head, theme.dim()));
            for (i, row) in cosines.iter().enumerate().take(k) {
                // The anchor's best candidate among all shown.
                let best = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
                let mut spans = vec![Span::styled(format!("  a{i:<1} "), theme.dim())];
                for (j, &v) in row.iter().enumerate().take(k) {
                    spans.push(if i == j {
                        Span::styled(format!("[{v:>4.2}]"), bold)
                    } else if j == best {
                        // An in-batch negative beats this anchor's own positive.
                        Span::styled(format!("{v:>6.2}"), theme.error())
                    } else {
                        Span::styled(format!("{v:>6.2}"), theme.heat(v))
                    });
                }
                lines.push(Line::from(spans));
            }
            lines
        }
        BatchView::Triplet {
            distances,
            margin,
            distance,
            rows,
            violating,
            ..
        } => {
            let mut lines = vec![
                Line::styled(
                    clip(tr_with(
                        lang,
                        "batch.triplet.title",
                        &[("distance", distance), ("margin", &format!("{margin}"))],
                    )),
                    bold,
                ),
                Line::styled(
                    clip(tr_with(
                        lang,
                        "batch.triplet.note",
                        &[("violating", violating), ("rows", rows)],
                    )),
                    theme.dim(),
                ),
                Line::styled(tr(lang, "batch.triplet.header").into_owned(), theme.dim()),
            ];
            for (i, &(p, n)) in distances.iter().enumerate() {
                let gap = (p - n) as f64 + margin;
                let (mark, style) = if gap > 0.0 {
                    (tr(lang, "batch.triplet.pushes"), theme.error())
                } else {
                    (tr(lang, "batch.triplet.done"), theme.dim())
                };
                lines.push(Line::from(vec![
                    Span::raw(format!("{i:>2} {p:>7.3} {n:>7.3}  {gap:>+9.3}  ")),
                    Span::styled(mark.into_owned(), style),
                ]));
            }
            lines
        }
    }
}
