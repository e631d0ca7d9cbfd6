//! The map pane: a 2-D PCA projection on a braille canvas, each point labelled, the selected
//! sentence highlighted, the explained variance of each axis in the title.

use ratatui::Frame;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::Modifier;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Line as CanvasLine, Points};
use ratatui::widgets::{Block, Paragraph, Wrap};

use crate::analysis::pca::PcaError;
use crate::text;
use crate::tui::app::App;
use crate::tui::hits::Pane;
use crate::tui::i18n::{tr, tr_with};
use crate::tui::theme::Theme;

/// Columns of text per label.
const LABEL: usize = 14;

fn bounds(values: impl Iterator<Item = f64>) -> [f64; 2] {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return [-1.0, 1.0];
    }
    let pad = ((hi - lo) * 0.08).max(1e-6);
    [lo - pad, hi + pad]
}

pub fn draw(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) {
    let lang = app.lang;
    let focused = app.explorer.focus == Pane::Map;
    let block = Block::bordered().border_style(theme.border(focused));
    let Some(a) = &app.explorer.analysis else {
        frame.render_widget(block.title(tr(lang, "map.title_plain")), area);
        return;
    };
    let basis = match &a.pca {
        Ok(b) => b,
        Err(e) => {
            let inner = block.inner(area);
            frame.render_widget(block.title(tr(lang, "map.title_plain")), area);
            let reason = match e {
                PcaError::TooFew(n) => tr_with(lang, "map.too_few", &[("n", n)]),
                PcaError::NoSpread => tr(lang, "map.no_spread").into_owned(),
                PcaError::NonFinite => tr(lang, "map.non_finite").into_owned(),
                PcaError::Failed(_) => e.to_string(),
            };
            let msg = tr_with(lang, "map.none", &[("reason", &reason)]);
            frame.render_widget(
                Paragraph::new(msg)
                    .style(theme.dim())
                    .alignment(Alignment::Center)
                    .wrap(Wrap { trim: true }),
                Rect {
                    y: inner.y + inner.height / 2,
                    height: inner.height - inner.height / 2,
                    ..inner
                },
            );
            return;
        }
    };
    let (cx, cy) = match app.explorer.axes.components() {
        (x, y) if y < basis.components() => (x, y),
        _ => (0, 1),
    };
    let ratio = |c: usize| {
        basis
            .explained_variance_ratio
            .get(c)
            .copied()
            .unwrap_or(0.0)
            * 100.0
    };
    let compare = !a.tuned_coords.is_empty();
    let title = tr_with(
        lang,
        "map.title",
        &[
            (
                "compare",
                &if compare {
                    tr(lang, "map.compare")
                } else {
                    "".into()
                },
            ),
            ("x", &(cx + 1)),
            ("xr", &format!("{:.1}%", ratio(cx))),
            ("y", &(cy + 1)),
            ("yr", &format!("{:.1}%", ratio(cy))),
        ],
    );
    let xy = |p: &Vec<f64>| (p[cx], p.get(cy).copied().unwrap_or(0.0));
    let base_pts: Vec<(f64, f64)> = a.coords.iter().map(xy).collect();
    let tuned_pts: Vec<(f64, f64)> = a.tuned_coords.iter().map(xy).collect();
    // With a comparison, the labels go to the fine-tuned points; the base points trail behind.
    let pts: Vec<(f64, f64)> = if compare {
        tuned_pts.clone()
    } else {
        base_pts.clone()
    };
    // SimCSE's dropout copies of one sentence, around its point.
    let cloud = app.explorer.visible_cloud();
    let cloud_pts: Vec<(f64, f64)> =
        cloud.map_or_else(Vec::new, |c| c.points.iter().map(xy).collect());
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = base_pts
        .iter()
        .chain(&tuned_pts)
        .chain(&cloud_pts)
        .filter(finite)
        .copied()
        .collect();
    let xb = bounds(all.iter().map(|p| p.0));
    let yb = bounds(all.iter().map(|p| p.1));
    let selected = app.explorer.selected.min(pts.len().saturating_sub(1));
    let inner = Block::bordered().inner(area);
    let labels: Vec<String> = (0..pts.len())
        .map(|i| {
            let mark = if i == selected { "◉" } else { "" };
            format!("{mark}{i} {}", text::clip(&a.texts[i], LABEL))
        })
        .collect();
    let placed = place_labels(&pts, &labels, selected, xb, yb, inner);
    let normal = theme.point();
    let hot = theme.point_selected();
    let trail = theme.trail();
    let sel_style = theme.selected().add_modifier(Modifier::BOLD);
    let block = match cloud {
        Some(c) => {
            let i = a.texts.iter().position(|t| *t == c.text).unwrap_or(0);
            block.title_bottom(Line::styled(
                tr_with(
                    lang,
                    "cloud.legend",
                    &[
                        ("n", &c.points.len()),
                        ("i", &i),
                        ("between", &format!("{:.3}", c.between)),
                        ("to_eval", &format!("{:.3}", c.to_eval)),
                    ],
                ),
                theme.dim(),
            ))
        }
        None => block,
    };
    let canvas = Canvas::default()
        .block(block.title(title))
        .marker(Marker::Braille)
        .x_bounds(xb)
        .y_bounds(yb)
        .paint(move |ctx| {
            if compare {
                for (i, (from, to)) in base_pts.iter().zip(&tuned_pts).enumerate() {
                    let color = if i == selected { hot } else { trail };
                    ctx.draw(&CanvasLine::new(from.0, from.1, to.0, to.1, color));
                }
                ctx.layer();
            }
            if !cloud_pts.is_empty() {
                ctx.draw(&Points {
                    coords: &cloud_pts,
                    color: trail,
                });
                ctx.layer();
            }
            let others: Vec<(f64, f64)> = pts
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != selected)
                .map(|(_, p)| *p)
                .collect();
            ctx.draw(&Points {
                coords: &others,
                color: normal,
            });
            if let Some(p) = pts.get(selected) {
                ctx.layer();
                ctx.draw(&Points {
                    coords: std::slice::from_ref(p),
                    color: hot,
                });
            }
            for l in &placed {
                let line = if l.selected {
                    Line::from(Span::styled(l.text.clone(), sel_style))
                } else {
                    Line::from(l.text.clone())
                };
                ctx.print(l.x, l.y, line);
            }
        });
    frame.render_widget(canvas, area);
}

struct Placed {
    x: f64,
    y: f64,
    text: String,
    selected: bool,
}

/// Puts labels next to their points without covering other points or labels: the selected
/// sentence first, then by index; a label that does not fit shrinks to its number, or is left
/// out. Works in terminal cells, then converts back to canvas coordinates.
fn place_labels(
    pts: &[(f64, f64)],
    labels: &[String],
    selected: usize,
    xb: [f64; 2],
    yb: [f64; 2],
    inner: Rect,
) -> Vec<Placed> {
    let (w, h) = (inner.width as usize, inner.height as usize);
    if w < 2 || h < 2 || pts.is_empty() {
        return Vec::new();
    }
    let (sx, sy) = (
        (w - 1) as f64 / (xb[1] - xb[0]),
        (h - 1) as f64 / (yb[1] - yb[0]),
    );
    // Where the braille dot of a point lands: ratatui rounds onto a 2x4 sub-cell grid.
    let dot = |&(x, y): &(f64, f64)| {
        let px = ((x - xb[0]) * (2 * w - 1) as f64 / (xb[1] - xb[0])).round() as usize;
        let py = ((yb[1] - y) * (4 * h - 1) as f64 / (yb[1] - yb[0])).round() as usize;
        ((px / 2).min(w - 1), (py / 4).min(h - 1))
    };
    let mut taken = vec![vec![false; w]; h];
    for p in pts {
        let (c, r) = dot(p);
        taken[r][c] = true;
    }
    let mut order: Vec<usize> = (0..pts.len()).collect();
    order.sort_by_key(|&i| (i != selected, i));
    let mut placed = Vec::new();
    for i in order {
        let (c, r) = dot(&pts[i]);
        let full = labels[i].clone();
        let short = full.split(' ').next().unwrap_or_default().to_string();
        'found: for candidate in [full, short] {
            let len = text::width(&candidate);
            let starts = [
                (r as isize, c as isize + 1),
                (r as isize - 1, c as isize),
                (r as isize + 1, c as isize),
                (r as isize, c as isize - len as isize),
            ];
            for (row, col) in starts {
                if row < 0 || col < 0 || row as usize >= h || col as usize + len > w {
                    continue;
                }
                let (row, col) = (row as usize, col as usize);
                let end = (col + len + 1).min(w);
                if taken[row][col..end].iter().any(|&t| t) {
                    continue;
                }
                taken[row][col..end].iter_mut().for_each(|t| *t = true);
                placed.push(Placed {
                    x: (xb[0] + (col as f64 + 0.5) / sx).min(xb[1]),
                    y: (yb[1] - (row as f64 + 0.5) / sy).max(yb[0]),
                    text: candidate,
                    selected: i == selected,
                });
                break 'found;
            }
        }
    }
    placed
}
