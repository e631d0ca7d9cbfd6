//! The similarity pane: an N x N heat map with the value in each cell, row and column labels, a
//! legend, and the two sentences under the cursor. It scrolls when N exceeds the screen.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::scroll_offset;
use crate::analysis::similarity::Similarity;
use crate::lessons::Lang;
use crate::text;
use crate::tui::app::App;
use crate::tui::explorer::{MatrixView, ModelState};
use crate::tui::hits::{GridHits, Pane};
use crate::tui::i18n::{tr, tr_with};
use crate::tui::theme::{SHADE_BOUNDS, SHADES, Theme, shade};

/// Columns per cell: " 0.83 " plus a separator (or a shade glyph without colour).
const CELL: usize = 7;
/// Rows under the grid: the cursor's two sentences and the legend.
const FOOTER: usize = 2;

struct Grid {
    inner: Rect,
    label_w: usize,
    rows: usize,
    cols: usize,
    row0: usize,
    col0: usize,
}

fn grid(app: &App, area: Rect, n: usize) -> Grid {
    let inner = Block::bordered().inner(area);
    let label_w = (inner.width as usize / 3).clamp(4, 22);
    let cols = (inner.width as usize).saturating_sub(label_w) / CELL;
    let rows = (inner.height as usize).saturating_sub(1 + FOOTER);
    let row = app.explorer.selected.min(n.saturating_sub(1));
    let col = app.explorer.matrix_col.min(n.saturating_sub(1));
    Grid {
        inner,
        label_w,
        rows,
        cols,
        row0: scroll_offset(row, n, rows),
        col0: scroll_offset(col, n, cols),
    }
}

/// A cell: the value, after a shade glyph without colour; `heat` is the value on the [-1, 1]
/// scale of the colours and glyphs.
fn cell_text(theme: &Theme, v: f32, heat: f32, diff: bool) -> String {
    match (diff, theme.color) {
        (false, true) => format!(" {} ", five(v, false)),
        (false, false) => format!("{}{} ", shade(heat), five(v, false)),
        // Differences carry their sign; without colour an arrow marks the larger changes.
        (true, true) => format!(" {} ", five(v, true)),
        (true, false) => format!("{}{} ", diff_mark(v), five(v, true)),
    }
}

/// ▲ / ▼ for a change of more than 0.05 either way.
pub fn diff_mark(v: f32) -> char {
    if v > 0.05 {
        '▲'
    } else if v < -0.05 {
        '▼'
    } else {
        ' '
    }
}

/// The name of what the pane shows, in the app's language (the similarity function by its own
/// name).
pub fn view_name(app: &App) -> String {
    let a = app.explorer.analysis.as_ref();
    match (app.explorer.view, a.is_some_and(|a| a.tuned.is_some())) {
        (MatrixView::Tuned, true) => tr(app.lang, "view.tuned").into_owned(),
        (MatrixView::Difference, true) => tr(app.lang, "view.difference").into_owned(),
        (_, true) => tr(app.lang, "view.base").into_owned(),
        _ => a.map_or(Similarity::Cosine, |a| a.similarity).to_string(),
    }
}

/// Whether the pane shows the difference between the fine-tuned and the base model.
fn shows_difference(app: &App) -> bool {
    app.explorer.view == MatrixView::Difference
        && app
            .explorer
            .analysis
            .as_ref()
            .is_some_and(|a| a.tuned.is_some())
}

/// A value in five columns, whatever its size (dot products and distances are not in [-1, 1]).
fn five(v: f32, signed: bool) -> String {
    let d = match v.abs() {
        x if x < 9.995 => 2,
        x if x < 99.95 => 1,
        _ => 0,
    };
    if signed {
        format!("{v:>+5.d$}")
    } else {
        format!("{v:>5.d$}")
    }
}

/// Draws the pane; returns where the cells went (for clicks), when a grid was drawn.
pub fn draw(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) -> Option<GridHits> {
    let focused = app.explorer.focus == Pane::Matrix;
    let lang = app.lang;
    let n = app.explorer.analysis.as_ref().map_or(0, |a| a.texts.len());
    let updating = if app.explorer.pending() {
        tr(lang, "matrix.updating")
    } else {
        "".into()
    };
    let view = view_name(app);
    let block = Block::bordered()
        .title(if app.explorer.analysis.is_some() {
            tr_with(
                lang,
                "matrix.title",
                &[("view", &view), ("n", &n), ("updating", &updating)],
            )
        } else {
            tr(lang, "matrix.title_none").into_owned()
        })
        .border_style(theme.border(focused));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(a) = &app.explorer.analysis else {
        let failure = app.explorer.base.failure().or(app
            .explorer
            .tuned
            .as_ref()
            .and_then(|t| t.failure()));
        let msg = match (&app.explorer.base.model, failure) {
            (ModelState::Loading { message, .. }, _) => message.clone(),
            (ModelState::Failed { error, .. }, _) => {
                tr_with(lang, "matrix.failed", &[("error", error)])
            }
            (ModelState::Ready(_), Some(e)) => {
                tr_with(lang, "matrix.cannot_embed", &[("error", &e)])
            }
            (ModelState::Ready(_), None) => tr(lang, "status.embedding").into_owned(),
        };
        frame.render_widget(
            Paragraph::new(text::sanitize(&msg)).wrap(Default::default()),
            inner,
        );
        return None;
    };
    if n == 0 {
        frame.render_widget(
            Paragraph::new(Line::styled(tr(lang, "matrix.empty"), theme.dim())),
            inner,
        );
        return None;
    }
    let g = grid(app, area, n);
    let diff = shows_difference(app);
    let shown = app.explorer.view;
    // Similarities outside [-1, 1] (dot products, negated distances) are coloured by where they
    // fall between the smallest and the largest value shown.
    let heat = {
        let bounded = a.similarity.bounded() || diff;
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        if !bounded {
            for i in 0..n {
                for j in 0..n {
                    let v = a.value(shown, i, j);
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
        move |v: f32| {
            if bounded || hi <= lo {
                v
            } else {
                2.0 * (v - lo) / (hi - lo) - 1.0
            }
        }
    };
    if g.rows < n || g.cols < n {
        // Say which part of the matrix is on screen.
        let shown = tr_with(
            lang,
            "matrix.shown",
            &[
                ("r0", &g.row0),
                ("r1", &((g.row0 + g.rows).min(n) - 1)),
                ("c0", &g.col0),
                ("c1", &((g.col0 + g.cols.max(1)).min(n) - 1)),
                ("n", &n),
            ],
        );
        let w = text::width(&shown) as u16;
        if area.width > w + 2 {
            frame.render_widget(
                Paragraph::new(Span::styled(shown, theme.dim())),
                Rect::new(area.right() - w - 1, area.y, w, 1),
            );
        }
    }
    let row = app.explorer.selected.min(n - 1);
    let col = app.explorer.matrix_col.min(n - 1);
    let mut lines = Vec::new();

    // Header: column indices.
    let mut header = vec![Span::raw(" ".repeat(g.label_w))];
    for j in (g.col0..n).take(g.cols) {
        let style = if j == col || j == row {
            theme.selected()
        } else {
            theme.dim()
        };
        header.push(Span::styled(format!("{j:>6} "), style));
    }
    lines.push(Line::from(header));

    for i in (g.row0..n).take(g.rows) {
        let label_style = if i == row {
            theme.selected()
        } else {
            Style::new()
        };
        let label = text::pad(
            &format!("{i:>2} {}", a.texts[i]),
            g.label_w.saturating_sub(1),
        );
        let mut spans = vec![Span::styled(format!("{label} "), label_style)];
        for j in (g.col0..n).take(g.cols) {
            let v = a.value(shown, i, j);
            let mut style = if diff {
                theme.diff(v)
            } else {
                theme.heat(heat(v))
            };
            if i == row && j == col {
                style =
                    style.add_modifier(Modifier::REVERSED | Modifier::BOLD | Modifier::UNDERLINED);
            }
            spans.push(Span::styled(cell_text(theme, v, heat(v), diff), style));
        }
        lines.push(Line::from(spans));
    }
    let body_h = (1 + g.rows.min(n)) as u16;
    frame.render_widget(
        Paragraph::new(lines),
        Rect {
            height: body_h.min(inner.height),
            ..inner
        },
    );

    // Footer: the two sentences under the cursor, then the legend.
    let width = inner.width as usize;
    let footer_y = inner.y + inner.height.saturating_sub(FOOTER as u16);
    if inner.height as usize > FOOTER {
        let value = match &a.tuned {
            Some(t) => format!(
                " = {:.4} → {:.4}",
                a.base.matrix[row][col], t.matrix[row][col]
            ),
            None => format!(" = {:.4}", a.value(shown, row, col)),
        };
        let room = width.saturating_sub(text::width(&value) + 12) / 2;
        let pair = Line::from(vec![
            Span::styled(format!("[{row}] "), theme.selected()),
            Span::raw(text::clip(&a.texts[row], room)),
            Span::raw(" ↔ "),
            Span::styled(format!("[{col}] "), theme.selected()),
            Span::raw(text::clip(&a.texts[col], room)),
            Span::styled(value, Style::new().add_modifier(Modifier::BOLD)),
        ]);
        frame.render_widget(
            Paragraph::new(pair),
            Rect::new(inner.x, footer_y, inner.width, 1),
        );
        frame.render_widget(
            Paragraph::new(if diff {
                diff_legend(theme, lang)
            } else {
                legend(theme, lang)
            }),
            Rect::new(inner.x, footer_y + 1, inner.width, 1),
        );
    }
    let visible_cols = g.cols.min(n - g.col0);
    let visible_rows = g.rows.min(n - g.row0);
    Some(GridHits {
        cells: Rect::new(
            g.inner.x + g.label_w as u16,
            g.inner.y + 1,
            (visible_cols * CELL) as u16,
            (visible_rows as u16).min(g.inner.height.saturating_sub(1)),
        ),
        cell_width: CELL as u16,
        row0: g.row0,
        col0: g.col0,
        n,
    })
}

fn diff_legend(theme: &Theme, lang: Lang) -> Line<'static> {
    let mut spans = vec![Span::styled(tr(lang, "matrix.legend"), theme.dim())];
    if theme.color {
        for v in [-0.3f32, -0.1, 0.0, 0.1, 0.3] {
            spans.push(Span::styled(format!("{v:>+5.1}"), theme.diff(v)));
        }
        spans.push(Span::raw(tr(lang, "matrix.diff_legend")));
    } else {
        spans.push(Span::raw(tr(lang, "matrix.diff_marks")));
    }
    Line::from(spans)
}

fn legend(theme: &Theme, lang: Lang) -> Line<'static> {
    let mut spans = vec![Span::styled(tr(lang, "matrix.legend"), theme.dim())];
    if theme.color {
        spans.push(Span::raw("-1 "));
        for (v, style) in theme.heat_stops() {
            spans.push(Span::styled(format!("{v:>5.1}"), style));
        }
        spans.push(Span::raw(" +1"));
    } else {
        let mut lower = "<".to_string();
        for (i, glyph) in SHADES.iter().enumerate() {
            let range = match i {
                0 => format!("{lower}{:.1}", SHADE_BOUNDS[0]),
                i if i < SHADES.len() - 1 => {
                    format!("{:.1}-{:.1}", SHADE_BOUNDS[i - 1], SHADE_BOUNDS[i])
                }
                _ => format!("≥{:.1}", SHADE_BOUNDS[i - 1]),
            };
            let shown = if *glyph == ' ' {
                tr(lang, "matrix.blank").into_owned()
            } else {
                glyph.to_string()
            };
            spans.push(Span::raw(format!("{shown} {range}  ")));
            lower.clear();
        }
    }
    Line::from(spans)
}
