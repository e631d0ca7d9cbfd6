//! The corpus screen: the search line, a list (hits, clusters or mined pairs) with the selected
//! item's texts in full, and the map of the whole corpus, drawn cell by cell: a density shading
//! when points outnumber the cells, cluster letters (coloured when colour is on), search hits as
//! their rank, the selected item labelled with its text, cluster centres with their letter.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use crate::text;
use crate::tui::app::App;
use crate::tui::corpus::{CorpusScreen, ListKind, MapView};
use crate::tui::corpus_worker::{ClusterMethod, CorpusTask};
use crate::tui::i18n::{tr, tr_with};
use crate::tui::shell::{CorpusInput, EditTarget, Mode};
use crate::tui::theme::Theme;

/// The letter of cluster `c` on the map and in the list (`+` past Z).
pub fn cluster_glyph(c: u32) -> char {
    char::from_u32('A' as u32 + c)
        .filter(|_| c < 26)
        .unwrap_or('+')
}

const PALETTE: [Color; 8] = [
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightCyan,
    Color::Rgb(255, 165, 0),
    Color::Rgb(170, 140, 255),
];

fn cluster_style(theme: &Theme, c: u32) -> Style {
    if theme.color {
        Style::new().fg(PALETTE[c as usize % PALETTE.len()])
    } else {
        Style::new()
    }
}

/// Density shades, from one point to the densest cell.
const DENSITY: [char; 5] = ['·', '░', '▒', '▓', '█'];

pub fn draw(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) {
    let lang = app.lang;
    let c = &app.corpus;
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    // The search line, in a box titled with the corpus.
    let opening = c.task.as_ref().is_some_and(|t| t.task == CorpusTask::Embed);
    let title = match (&c.open, c.path.as_ref().filter(|_| opening)) {
        (Some(o), _) => tr_with(
            lang,
            "corpus.title",
            &[
                (
                    "path",
                    &text::clip(&o.corpus.path.display().to_string(), 40),
                ),
                ("n", &o.corpus.len()),
                ("dim", &o.dim),
            ],
        ),
        (None, Some(p)) => tr_with(
            lang,
            "corpus.title_opening",
            &[("path", &text::clip(p, 50))],
        ),
        (None, None) => tr(lang, "corpus.title_none").into_owned(),
    };
    let searching = matches!(
        &app.shell.mode,
        Mode::Editing(EditTarget::Corpus(CorpusInput::Query), _)
    );
    let block = Block::bordered()
        .border_style(theme.border(searching))
        .title(title);
    let inner = block.inner(head);
    frame.render_widget(block, head);
    if let Mode::Editing(EditTarget::Corpus(CorpusInput::Query), editor) = &app.shell.mode {
        let prefix = format!("{}: ", tr(lang, "input.CorpusQuery"));
        let p = text::width(&prefix) as u16;
        let (shown, col) = editor.view(inner.width.saturating_sub(p) as usize);
        frame.render_widget(Paragraph::new(format!("{prefix}{shown}")), inner);
        frame.set_cursor_position((inner.x + p + col as u16, inner.y));
    } else {
        let line = if c.query.is_empty() {
            Line::styled(tr(lang, "corpus.search_hint"), theme.dim())
        } else {
            let mut spans = vec![
                Span::raw(format!("{}: ", tr(lang, "input.CorpusQuery"))),
                Span::styled(c.query.clone(), Style::new().add_modifier(Modifier::BOLD)),
            ];
            if let Some(ms) = c.hits_millis {
                spans.push(Span::styled(
                    format!(
                        "  {}",
                        tr_with(lang, "corpus.hits_time", &[("ms", &format!("{ms:.1}"))])
                    ),
                    theme.dim(),
                ));
            }
            Line::from(spans)
        };
        frame.render_widget(Paragraph::new(line), inner);
    }
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(46), Constraint::Percentage(54)]).areas(body);
    draw_list(app, theme, frame, left);
    draw_map(app, theme, frame, right);
    draw_foot(c, lang, theme, frame, foot);
}

/// The progress of the running task, or the keys.
fn draw_foot(
    c: &CorpusScreen,
    lang: crate::lessons::Lang,
    theme: &Theme,
    frame: &mut Frame,
    area: Rect,
) {
    let line = match &c.task {
        Some(t) => {
            let name = tr(lang, &format!("corpus.task.{:?}", t.task));
            let width = 24usize;
            let frac = if t.total > 0 {
                (t.done as f64 / t.total as f64).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let filled = (frac * width as f64).round() as usize;
            let bar = format!("[{}{}]", "=".repeat(filled), " ".repeat(width - filled));
            let count = if t.total == 0 {
                String::new()
            } else if t.task == CorpusTask::Embed {
                format!(" {}/{}", t.done, t.total)
            } else {
                format!(" {:.0}%", frac * 100.0)
            };
            let note = if t.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", t.note)
            };
            Line::from(vec![
                Span::styled(
                    format!("{name} "),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!("{bar}{count}{note}  ")),
                Span::styled(tr(lang, "corpus.cancel_hint"), theme.dim()),
            ])
        }
        None => Line::styled(tr(lang, "corpus.keys_hint"), theme.dim()),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_list(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) {
    let lang = app.lang;
    let c = &app.corpus;
    let tabs: Vec<Span> = [ListKind::Hits, ListKind::Clusters, ListKind::Pairs]
        .iter()
        .flat_map(|&k| {
            let label = tr(lang, &format!("corpus.list.{k:?}")).into_owned();
            let style = if k == c.list {
                theme.selected().add_modifier(Modifier::BOLD)
            } else {
                theme.dim()
            };
            [Span::styled(format!(" {label} "), style), Span::raw(" ")]
        })
        .collect();
    let block = Block::bordered()
        .border_style(theme.border(true))
        .title(Line::from(tabs));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(open) = &c.open else {
        let msg = if c.task.is_some() {
            tr(lang, "corpus.embedding_wait")
        } else {
            tr(lang, "corpus.open_hint")
        };
        frame.render_widget(
            Paragraph::new(msg)
                .style(theme.dim())
                .wrap(Wrap { trim: true }),
            inner,
        );
        return;
    };
    let texts = &open.corpus.texts;
    let ids = &open.corpus.ids;
    let w = inner.width as usize;
    let mut rows: Vec<Line> = Vec::new();
    let mut detail: Vec<String> = Vec::new();
    let mut summary: Option<String> = None;
    match c.list {
        ListKind::Hits => {
            for (rank, &(row, score)) in c.hits.iter().enumerate() {
                let head = format!("{:>2} {score:>7.4} [{}] ", (rank + 1) % 10, ids[row]);
                rows.push(Line::from(format!(
                    "{head}{}",
                    text::clip(
                        &text::sanitize(&texts[row]),
                        w.saturating_sub(text::width(&head))
                    )
                )));
            }
            if let Some(&(row, _)) = c.hits.get(c.cursor) {
                detail.push(texts[row].clone());
            }
            if c.hits.is_empty() {
                summary = Some(tr(lang, "corpus.no_hits").into_owned());
            }
        }
        ListKind::Clusters => match &c.clusters {
            Some(cv) => {
                let method = match cv.method {
                    ClusterMethod::Communities {
                        threshold,
                        min_size,
                    } => tr_with(
                        lang,
                        "corpus.communities_summary",
                        &[("t", &threshold), ("m", &min_size)],
                    ),
                    ClusterMethod::KMeans { k } => {
                        tr_with(lang, "corpus.kmeans_summary", &[("k", &k)])
                    }
                };
                let clustered: usize = cv.clusters.iter().map(|s| s.size).sum();
                summary = Some(tr_with(
                    lang,
                    "corpus.clusters_summary",
                    &[
                        ("method", &method),
                        ("n", &cv.clusters.len()),
                        ("in", &clustered),
                        ("total", &texts.len()),
                    ],
                ));
                for (i, s) in cv.clusters.iter().enumerate() {
                    let head = format!("{} {:>6}  ", cluster_glyph(i as u32), s.size);
                    let central = s
                        .central
                        .first()
                        .map_or(String::new(), |&r| text::sanitize(&texts[r]));
                    rows.push(Line::from(vec![
                        Span::styled(head.clone(), cluster_style(theme, i as u32)),
                        Span::raw(text::clip(&central, w.saturating_sub(text::width(&head)))),
                    ]));
                }
                if let Some(s) = cv.clusters.get(c.cursor) {
                    detail.extend(s.central.iter().map(|&r| texts[r].clone()));
                }
            }
            None => summary = Some(tr(lang, "corpus.no_clusters").into_owned()),
        },
        ListKind::Pairs => match &c.pairs {
            Some(p) => {
                summary = Some(tr_with(
                    lang,
                    "corpus.pairs_summary",
                    &[("n", &p.total), ("shown", &p.pairs.len())],
                ));
                for &(score, i, j) in &p.pairs {
                    let head = format!("{score:>7.4} ");
                    let room = w.saturating_sub(text::width(&head) + 3) / 2;
                    rows.push(Line::from(format!(
                        "{head}{} ⇄ {}",
                        text::clip(&text::sanitize(&texts[i]), room),
                        text::clip(&text::sanitize(&texts[j]), room)
                    )));
                }
                if let Some(&(_, i, j)) = p.pairs.get(c.cursor) {
                    detail.push(texts[i].clone());
                    detail.push(texts[j].clone());
                }
            }
            None => summary = Some(tr(lang, "corpus.no_pairs").into_owned()),
        },
    }
    let detail_h = if detail.is_empty() {
        0
    } else {
        4.min(inner.height / 3)
    };
    let summary_h = u16::from(summary.is_some());
    let [sum_area, list_area, detail_area] = Layout::vertical([
        Constraint::Length(summary_h),
        Constraint::Min(0),
        Constraint::Length(detail_h),
    ])
    .areas(inner);
    if let Some(s) = summary {
        frame.render_widget(Paragraph::new(Line::styled(s, theme.dim())), sum_area);
    }
    let view = list_area.height as usize;
    let first = super::scroll_offset(c.cursor, rows.len(), view);
    let shown: Vec<Line> = rows
        .into_iter()
        .enumerate()
        .skip(first)
        .take(view)
        .map(|(i, l)| {
            if i == c.cursor {
                l.style(theme.selected())
            } else {
                l
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(shown), list_area);
    if detail_h > 0 {
        let lines: Vec<Line> = detail
            .iter()
            .map(|t| Line::from(format!("▸ {}", text::sanitize(t))))
            .collect();
        frame.render_widget(
            Paragraph::new(lines)
                .block(
                    Block::new()
                        .borders(ratatui::widgets::Borders::TOP)
                        .border_style(theme.dim()),
                )
                .wrap(Wrap { trim: true }),
            detail_area,
        );
    }
}

fn draw_map(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) {
    let lang = app.lang;
    let c = &app.corpus;
    let title = match &c.map {
        Some(m) => tr_with(
            lang,
            "corpus.map_title",
            &[
                ("method", &m.method.label()),
                ("n", &m.points.len()),
                ("s", &format!("{:.1}", m.millis / 1000.0)),
            ],
        ),
        None => tr(lang, "corpus.map_none").into_owned(),
    };
    let block = Block::bordered()
        .border_style(theme.border(false))
        .title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if let Some(m) = &c.map {
        render_map(c, m, theme, inner, frame.buffer_mut());
    }
}

/// Cell of each point of `m` in an area of `w` x `h` cells.
fn cells(m: &MapView, w: usize, h: usize) -> Vec<Option<(usize, usize)>> {
    let finite = m
        .points
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in finite {
        x0 = x0.min(p[0]);
        x1 = x1.max(p[0]);
        y0 = y0.min(p[1]);
        y1 = y1.max(p[1]);
    }
    let (sx, sy) = ((x1 - x0).max(1e-9), (y1 - y0).max(1e-9));
    m.points
        .iter()
        .map(|p| {
            if !(p[0].is_finite() && p[1].is_finite()) {
                return None;
            }
            let cx = (((p[0] - x0) / sx) * (w - 1) as f32).round() as usize;
            let cy = (((y1 - p[1]) / sy) * (h - 1) as f32).round() as usize;
            Some((cx.min(w - 1), cy.min(h - 1)))
        })
        .collect()
}

fn render_map(c: &CorpusScreen, m: &MapView, theme: &Theme, area: Rect, buf: &mut Buffer) {
    let (w, h) = (area.width as usize, area.height as usize);
    if w < 2 || h < 2 {
        return;
    }
    let at = cells(m, w, h);
    let mut count = vec![0u32; w * h];
    // Per cell: how many points of each cluster (small maps of cluster -> count).
    let labels = c.clusters.as_ref().map(|cv| &cv.labels);
    let mut votes: Vec<Vec<(u32, u32)>> =
        vec![Vec::new(); if labels.is_some() { w * h } else { 0 }];
    for (k, cell) in at.iter().enumerate() {
        let Some((x, y)) = cell else { continue };
        let i = y * w + x;
        count[i] += 1;
        if let Some(l) = labels.and_then(|l| l[m.rows[k]]) {
            match votes[i].iter_mut().find(|(c, _)| *c == l) {
                Some(v) => v.1 += 1,
                None => votes[i].push((l, 1)),
            }
        }
    }
    let max = count.iter().copied().max().unwrap_or(0).max(1) as f32;
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if count[i] == 0 {
                continue;
            }
            let (ch, style) = match votes
                .get(i)
                .and_then(|v| v.iter().max_by_key(|(c, n)| (*n, std::cmp::Reverse(*c))))
            {
                Some(&(cl, _)) => (cluster_glyph(cl), cluster_style(theme, cl)),
                None => {
                    // Density: one point is a dot; more, a shade by log share of the densest cell.
                    let level = if count[i] == 1 {
                        0
                    } else {
                        let f = (count[i] as f32).ln() / max.ln().max(1e-6);
                        1 + ((f * 3.0) as usize).min(3)
                    };
                    let st = if theme.color {
                        Style::new().fg(Color::LightBlue)
                    } else {
                        Style::new()
                    };
                    (DENSITY[level], st)
                }
            };
            buf[(area.x + x as u16, area.y + y as u16)]
                .set_char(ch)
                .set_style(style);
        }
    }
    let cell_of_row = |row: usize| -> Option<(usize, usize)> {
        m.rows.binary_search(&row).ok().and_then(|k| at[k])
    };
    let put = |buf: &mut Buffer, x: usize, y: usize, s: &str, style: Style| {
        let room = w.saturating_sub(x);
        let s = text::clip(s, room);
        buf.set_string(area.x + x as u16, area.y + y as u16, s, style);
    };
    let strong = Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED);
    // Cluster centres: the letter at the mean cell of the cluster's points.
    if let Some(cv) = &c.clusters {
        let mut sums = vec![(0usize, 0usize, 0usize); cv.clusters.len().min(26)];
        for (k, cell) in at.iter().enumerate() {
            if let (Some((x, y)), Some(l)) = (cell, cv.labels[m.rows[k]])
                && (l as usize) < sums.len()
            {
                let s = &mut sums[l as usize];
                *s = (s.0 + x, s.1 + y, s.2 + 1);
            }
        }
        for (l, &(sx, sy, n)) in sums.iter().enumerate() {
            if let (Some(cx), Some(cy)) = (sx.checked_div(n), sy.checked_div(n)) {
                let g = cluster_glyph(l as u32).to_string();
                put(
                    buf,
                    cx,
                    cy,
                    &g,
                    cluster_style(theme, l as u32)
                        .add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
                );
            }
        }
    }
    // Search hits: their rank (1 to 9, 0 for the tenth).
    for (rank, &(row, _)) in c.hits.iter().enumerate().rev() {
        if let Some((x, y)) = cell_of_row(row) {
            let style = if theme.color {
                Style::new()
                    .fg(Color::Black)
                    .bg(Color::Yellow)
                    .add_modifier(Modifier::BOLD)
            } else {
                strong
            };
            put(buf, x, y, &((rank + 1) % 10).to_string(), style);
        }
    }
    for row in c.selected_rows().into_iter().take(3) {
        if let Some((x, y)) = cell_of_row(row) {
            put(buf, x, y, "◉", strong);
        }
    }
    // The selected item's text, drawn last so that no marker cuts it: beside its marker, on
    // its line or the one above or below, whichever hides no other marker or hit rank.
    if let Some(open) = &c.open {
        let rows = c.selected_rows();
        let marks: Vec<(usize, usize)> = rows
            .iter()
            .take(3)
            .chain(c.hits.iter().map(|(r, _)| r))
            .filter_map(|&r| cell_of_row(r))
            .collect();
        // The first (a cluster's most central member) gets its text.
        if let Some((x, y)) = rows.first().and_then(|&r| cell_of_row(r)) {
            let label = text::clip(&text::sanitize(&open.corpus.texts[rows[0]]), 28);
            let lw = text::width(&label);
            let lx = if x + 2 + lw <= w {
                x + 2
            } else {
                x.saturating_sub(lw + 1)
            };
            let free = |ly: usize| {
                !marks
                    .iter()
                    .any(|&(mx, my)| my == ly && (lx..lx + lw).contains(&mx))
            };
            let ly = [Some(y), y.checked_sub(1), Some(y + 1).filter(|&v| v < h)]
                .into_iter()
                .flatten()
                .find(|&ly| free(ly))
                .unwrap_or(y);
            put(buf, lx, ly, &label, theme.selected());
        }
    }
}
