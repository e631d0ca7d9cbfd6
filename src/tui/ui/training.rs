//! The training pane: the form (or the selected run's progress), the loss curves (whole run and
//! recent steps, raw and smoothed), the evaluation metric over steps, and the session's runs.

use std::borrow::Cow;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, Gauge, GraphType, Paragraph, Wrap};

use crate::lessons::Lang;
use crate::text;
use crate::train::data::DataKind;
use crate::train::losses::LossKind;
use crate::train::rules::Setting;
use crate::tui::app::App;
use crate::tui::i18n::{pad_right, tr, tr_or, tr_with};
use crate::tui::theme::Theme;
use crate::tui::training::{Form, MODEL_POOLING, RunStatus, RunView, TrainFocus, is_choice};

/// Steps in the "recent" loss chart.
const RECENT: usize = 50;

/// A setting's label in `lang` (the engine's English name until the locale file has it).
pub fn setting_label(f: Setting, lang: Lang) -> Cow<'static, str> {
    tr_or(lang, &format!("setting.{f:?}"), f.label())
}

/// What a loss does, in one line, in `lang`.
pub fn loss_explanation(l: LossKind, lang: Lang) -> Cow<'static, str> {
    tr_or(lang, &format!("loss.{l:?}"), l.explain())
}

/// What a data file holds, in `lang`.
pub fn data_description(d: DataKind, lang: Lang) -> Cow<'static, str> {
    tr_or(lang, &format!("data.{d:?}"), d.describe())
}

pub fn draw(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) {
    let lang = app.lang;
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(42), Constraint::Percentage(58)]).areas(area);
    let main_focus = app.training.focus == TrainFocus::Main;
    let shown = app.training.runs.get(app.training.run_selected);
    if app.training.form_shown() {
        draw_form(&app.training.form, lang, theme, frame, left, main_focus);
    } else if let Some(run) = shown {
        draw_run(run, lang, theme, frame, left, main_focus);
    }
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Percentage(40),
        Constraint::Percentage(35),
        Constraint::Percentage(25),
    ])
    .areas(right);
    let [recent, metric] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
    let run = shown.filter(|_| !app.training.form_shown() || app.active_run().is_some());
    let run = run.or(app.active_run());
    draw_loss(run, lang, theme, frame, top, None);
    draw_loss(run, lang, theme, frame, recent, Some(RECENT));
    draw_metric(run, lang, theme, frame, metric);
    draw_history(app, theme, frame, bottom);
}

fn field_value(form: &Form, f: Setting, lang: Lang) -> String {
    let v = form.get(f);
    if f == Setting::Pooling && v == MODEL_POOLING {
        format!("◀ {} ▶", tr(lang, "run.models_own"))
    } else if f == Setting::Adversarial && v == "off" {
        format!("◀ {} ▶", tr(lang, "form.switched_off"))
    } else if is_choice(f) {
        format!("◀ {v} ▶")
    } else if v.is_empty() {
        match f {
            Setting::MaxSeqLength => tr(lang, "form.models_length").into_owned(),
            Setting::Eval | Setting::AddDense | Setting::Augment | Setting::BackTranslation => {
                tr(lang, "form.none").into_owned()
            }
            Setting::MatryoshkaDims => tr(lang, "form.off").into_owned(),
            Setting::MatryoshkaWeights => tr(lang, "form.one_each").into_owned(),
            _ => String::new(),
        }
    } else {
        v.to_string()
    }
}

fn draw_form(form: &Form, lang: Lang, theme: &Theme, frame: &mut Frame, area: Rect, focused: bool) {
    let block = Block::bordered()
        .title(tr(lang, "form.title"))
        .border_style(theme.border(focused));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let label_w = 18;
    let mut lines: Vec<Line> = Vec::new();
    let mut selected_line = 0;
    let visible = form.visible();
    for (i, &f) in visible.iter().enumerate() {
        let selected = i == form.selected.min(visible.len() - 1);
        if selected {
            selected_line = lines.len();
        }
        let error = form.error(f);
        let mark = match (selected, error.is_some()) {
            (true, _) => "▶",
            (false, true) => "!",
            _ => " ",
        };
        let style = if selected {
            theme.selected()
        } else {
            Style::new()
        };
        let value = field_value(form, f, lang);
        let room = width.saturating_sub(label_w + 2);
        let label = pad_right(&setting_label(f, lang), label_w);
        lines.push(Line::from(vec![
            Span::styled(format!("{mark}{label} "), style),
            Span::styled(text::clip(&value, room), style),
        ]));
        if let Some(e) = error {
            lines.push(Line::styled(
                format!("   ! {}", text::clip(e, width.saturating_sub(5))),
                theme.error(),
            ));
        }
        let note = match f {
            Setting::Data | Setting::Eval => {
                let d = if f == Setting::Data {
                    &form.data
                } else {
                    &form.eval
                };
                match d {
                    Some(Ok(d)) => Some(format!(
                        "{} · {}{}",
                        data_description(d.summary.kind, lang),
                        tr_with(lang, "form.rows", &[("n", &d.summary.rows)]),
                        if d.summary.scores_scaled {
                            tr(lang, "form.scaled")
                        } else {
                            "".into()
                        }
                    )),
                    Some(Err(_)) | None => None,
                }
            }
            Setting::Loss => form
                .get(f)
                .parse::<crate::train::losses::LossKind>()
                .ok()
                .map(|l| loss_explanation(l, lang).into_owned()),
            _ => None,
        };
        if let Some(note) = note {
            lines.push(Line::styled(
                format!("   {}", text::clip(&note, width.saturating_sub(3))),
                theme.dim(),
            ));
        }
    }
    if let Some(Ok(d)) = &form.data {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            tr_with(
                lang,
                "form.first_rows",
                &[("columns", &d.summary.columns.join(", "))],
            ),
            theme.dim(),
        ));
        for row in &d.summary.preview {
            lines.push(Line::raw(text::clip(
                &format!("  {}", row.join(" │ ")),
                width,
            )));
        }
        let augmented = form.augment_preview();
        if !augmented.is_empty() {
            let heading = if form.get(Setting::BackTranslation).trim().is_empty() {
                "form.augmented"
            } else {
                "form.augmented_eda_only"
            };
            lines.push(Line::styled(tr(lang, heading), theme.dim()));
            for row in &augmented {
                lines.push(Line::raw(text::clip(
                    &format!("  {}", row.join(" │ ")),
                    width,
                )));
            }
        }
    }
    let hint_h = 1;
    let body_h = inner.height.saturating_sub(hint_h) as usize;
    let offset = selected_line.saturating_sub(body_h.saturating_sub(3).max(1));
    let body: Vec<Line> = lines.into_iter().skip(offset).take(body_h).collect();
    frame.render_widget(
        Paragraph::new(body),
        Rect {
            height: body_h as u16,
            ..inner
        },
    );
    if inner.height > 0 {
        frame.render_widget(
            Paragraph::new(Line::styled(tr(lang, "form.keys"), theme.dim())),
            Rect::new(inner.x, inner.bottom() - 1, inner.width, 1),
        );
    }
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn status_line(run: &RunView, lang: Lang, theme: &Theme) -> Line<'static> {
    match &run.status {
        RunStatus::Starting => Line::raw(tr(lang, "run.starting")),
        RunStatus::Running => Line::raw(tr(lang, "run.training")),
        RunStatus::Stopping => Line::raw(tr(lang, "run.stopping")),
        RunStatus::Finished => Line::styled(
            tr_with(
                lang,
                "run.finished",
                &[("path", &run.config.output.display())],
            ),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        RunStatus::Failed(m) => {
            Line::styled(tr_with(lang, "run.failed", &[("error", m)]), theme.error())
        }
        RunStatus::Cancelled { checkpoint } => Line::raw(match checkpoint {
            Some(p) => tr_with(lang, "run.stopped_checkpoint", &[("path", &p.display())]),
            None => tr(lang, "run.stopped").into_owned(),
        }),
    }
}

fn draw_run(
    run: &RunView,
    lang: Lang,
    theme: &Theme,
    frame: &mut Frame,
    area: Rect,
    focused: bool,
) {
    let block = Block::bordered()
        .title(tr_with(lang, "run.title", &[("id", &run.id)]))
        .border_style(theme.border(focused));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height < 3 {
        return;
    }
    let [status, gauge, body, hint] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(inner);
    frame.render_widget(
        Paragraph::new(status_line(run, lang, theme)).wrap(Wrap { trim: true }),
        status,
    );
    let ratio = if run.total_steps > 0 {
        run.step as f64 / run.total_steps as f64
    } else {
        0.0
    };
    let gauge_style = if theme.color {
        Style::new().fg(ratatui::style::Color::Cyan)
    } else {
        Style::new()
    };
    frame.render_widget(
        Gauge::default()
            .gauge_style(gauge_style)
            .ratio(ratio.clamp(0.0, 1.0))
            .label(tr_with(
                lang,
                "run.gauge",
                &[
                    ("step", &run.step),
                    ("total", &run.total_steps),
                    ("epoch", &format!("{:.2}", run.epoch)),
                ],
            )),
        gauge,
    );
    let c = &run.config;
    let mut lines = vec![
        Line::raw(tr_with(
            lang,
            "run.speed",
            &[
                ("eta", &run.eta().map_or("-".into(), duration)),
                ("elapsed", &duration(run.elapsed)),
                ("rate", &format!("{:.0}", run.sentences_per_second)),
            ],
        )),
        Line::raw(tr_with(
            lang,
            "run.loss",
            &[
                (
                    "loss",
                    &run.losses
                        .last()
                        .map_or("-".into(), |l| format!("{:.4}", l.1)),
                ),
                (
                    "smoothed",
                    &run.smoothed
                        .last()
                        .map_or("-".into(), |l| format!("{:.4}", l.1)),
                ),
                ("lr", &format!("{:.2e}", run.learning_rate)),
            ],
        )),
    ];
    if let Some((step, m)) = run.evals.last() {
        let shown: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        lines.push(Line::raw(tr_with(
            lang,
            "run.eval",
            &[("step", step), ("metrics", &shown.join(", "))],
        )));
    }
    lines.push(Line::raw(""));
    if let Some(view) = &run.batch {
        lines.extend(super::workshop::batch_lines(
            lang,
            theme,
            view,
            body.width as usize,
        ));
        lines.push(Line::raw(""));
    }
    for (k, v) in [
        ("model", c.model.clone()),
        ("data", c.data.display().to_string()),
        ("loss", c.loss.name().to_string()),
        (
            "pooling",
            c.pooling.as_ref().map_or_else(
                || tr(lang, "run.models_own").into_owned(),
                |p| p.to_string(),
            ),
        ),
        ("epochs_batch", format!("{} · {}", c.epochs, c.batch_size)),
        ("lr_warmup", format!("{:e} · {}", c.lr, c.warmup_ratio)),
        (
            "seed_device",
            format!(
                "{} · {}",
                c.seed,
                if run.device.is_empty() {
                    c.device.to_string()
                } else {
                    run.device.clone()
                }
            ),
        ),
        (
            "eval",
            c.eval.as_ref().map_or_else(
                || tr(lang, "form.none").into_owned(),
                |p| p.display().to_string(),
            ),
        ),
        ("extras", techniques(c)),
        ("output", c.output.display().to_string()),
    ] {
        if k == "extras" && v.is_empty() {
            continue;
        }
        let k = tr(lang, &format!("run.cfg.{k}"));
        lines.push(Line::from(vec![
            Span::styled(pad_right(&k, 15), theme.dim()),
            Span::raw(text::clip(&v, (body.width as usize).saturating_sub(15))),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), body);
    let keys = tr(
        lang,
        if run.status.is_active() {
            "run.keys_active"
        } else {
            "run.keys_done"
        },
    );
    frame.render_widget(Paragraph::new(Line::styled(keys, theme.dim())), hint);
}

/// The run's training techniques beyond loss and pooling, in one line (empty: none).
fn techniques(c: &crate::train::config::TrainConfig) -> String {
    let mut parts = Vec::new();
    if c.loss == crate::train::losses::LossKind::CachedMnr {
        parts.push(format!("mini-batch {}", c.mini_batch_size));
    }
    if c.gradient_accumulation_steps > 1 {
        parts.push(format!("accumulation ×{}", c.gradient_accumulation_steps));
    }
    if !c.matryoshka_dims.is_empty() {
        let dims: Vec<String> = c.matryoshka_dims.iter().map(ToString::to_string).collect();
        parts.push(format!("matryoshka {}", dims.join(",")));
    }
    if let Some(d) = c.add_dense {
        parts.push(format!("dense {} {}", d.dim, d.activation));
    }
    if let Some(a) = &c.augment {
        parts.push(format!("augmented ×{}", a.copies));
    }
    if let Some(a) = c.adversarial {
        parts.push(if a.steps <= 1 {
            format!("FGM ε {}", a.epsilon)
        } else {
            format!("PGD {}×{} ε {}", a.steps, a.alpha, a.epsilon)
        });
    }
    if let Some([lo, hi]) = c.crops {
        parts.push(format!("crops {lo}-{hi}"));
    }
    parts.join(" · ")
}

fn bounds(values: impl Iterator<Item = f64>) -> [f64; 2] {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return [0.0, 1.0];
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    [lo - pad, hi + pad]
}

fn axis_labels(b: [f64; 2], decimals: usize) -> Vec<Line<'static>> {
    vec![
        Line::raw(format!("{:.*}", decimals, b[0])),
        Line::raw(format!("{:.*}", decimals, b[1])),
    ]
}

fn placeholder(frame: &mut Frame, area: Rect, block: Block, msg: &str, theme: &Theme) {
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(
        Paragraph::new(Line::styled(msg.to_string(), theme.dim())).wrap(Wrap { trim: true }),
        inner,
    );
}

/// The loss: the whole run, or the last `window` steps; raw and smoothed.
fn draw_loss(
    run: Option<&RunView>,
    lang: Lang,
    theme: &Theme,
    frame: &mut Frame,
    area: Rect,
    window: Option<usize>,
) {
    let title = match window {
        None => tr(lang, "chart.loss_all").into_owned(),
        Some(n) => tr_with(lang, "chart.loss_recent", &[("n", &n)]),
    };
    let block = Block::bordered().title(title);
    let Some(run) = run.filter(|r| !r.losses.is_empty()) else {
        return placeholder(frame, area, block, &tr(lang, "chart.no_steps"), theme);
    };
    let skip = window.map_or(0, |n| run.losses.len().saturating_sub(n));
    let raw: Vec<(f64, f64)> = run.losses[skip..].to_vec();
    let smooth: Vec<(f64, f64)> = run.smoothed[skip..].to_vec();
    let xb = [raw[0].0, raw[raw.len() - 1].0.max(raw[0].0 + 1.0)];
    let yb = bounds(raw.iter().chain(&smooth).map(|p| p.1));
    let (raw_style, smooth_style) = if theme.color {
        (
            Style::new().fg(ratatui::style::Color::DarkGray),
            Style::new().fg(ratatui::style::Color::Cyan),
        )
    } else {
        (Style::new(), Style::new().add_modifier(Modifier::BOLD))
    };
    let datasets = vec![
        Dataset::default()
            .name("raw")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(raw_style)
            .data(&raw),
        Dataset::default()
            .name("smoothed")
            .marker(if theme.color {
                Marker::Braille
            } else {
                Marker::Dot
            })
            .graph_type(GraphType::Line)
            .style(smooth_style)
            .data(&smooth),
    ];
    frame.render_widget(chart(datasets, block, xb, yb, theme), area);
}

/// A line chart with step numbers below and values at the side, no legend over the data.
fn chart<'a>(
    datasets: Vec<Dataset<'a>>,
    block: Block<'a>,
    xb: [f64; 2],
    yb: [f64; 2],
    theme: &Theme,
) -> Chart<'a> {
    let axis = |b: [f64; 2], decimals| {
        Axis::default()
            .bounds(b)
            .labels(axis_labels(b, decimals))
            .style(theme.dim())
    };
    Chart::new(datasets)
        .legend_position(None)
        .block(block)
        .x_axis(axis(xb, 0))
        .y_axis(axis(yb, 3))
}

/// The first evaluation metric over steps.
fn draw_metric(run: Option<&RunView>, lang: Lang, theme: &Theme, frame: &mut Frame, area: Rect) {
    let name = run
        .and_then(|r| r.evals.first())
        .and_then(|(_, m)| m.first())
        .map_or_else(
            || tr(lang, "chart.evaluation").into_owned(),
            |(k, _)| k.clone(),
        );
    let last = run
        .and_then(|r| r.evals.last())
        .and_then(|(_, m)| m.first())
        .map_or(String::new(), |(_, v)| format!(" · {v:.4}"));
    let block = Block::bordered().title(format!(" {name}{last} "));
    let Some(run) = run.filter(|r| !r.evals.is_empty()) else {
        let msg = match run {
            Some(r) if r.config.eval.is_none() => "chart.no_eval_file",
            _ => "chart.no_eval_yet",
        };
        return placeholder(frame, area, block, &tr(lang, msg), theme);
    };
    let points: Vec<(f64, f64)> = run
        .evals
        .iter()
        .filter_map(|(s, m)| m.first().map(|(_, v)| (*s as f64, *v)))
        .filter(|p| p.1.is_finite())
        .collect();
    let xb = [0.0, (run.total_steps.max(1)) as f64];
    let yb = bounds(points.iter().map(|p| p.1));
    let style = if theme.color {
        Style::new().fg(ratatui::style::Color::Yellow)
    } else {
        Style::new()
    };
    let data = vec![
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(style)
            .data(&points),
    ];
    frame.render_widget(chart(data, block, xb, yb, theme), area);
}

fn draw_history(app: &App, theme: &Theme, frame: &mut Frame, area: Rect) {
    let lang = app.lang;
    let focused = app.training.focus == TrainFocus::History;
    let block = Block::bordered()
        .title(tr(lang, "runs.title"))
        .border_style(theme.border(focused));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if app.training.runs.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled(tr(lang, "runs.none"), theme.dim())),
            inner,
        );
        return;
    }
    let offset = super::scroll_offset(
        app.training.run_selected,
        app.training.runs.len(),
        inner.height as usize,
    );
    let lines: Vec<Line> = app
        .training
        .runs
        .iter()
        .enumerate()
        .skip(offset)
        .take(inner.height as usize)
        .map(|(i, r)| {
            let status = match &r.status {
                RunStatus::Starting | RunStatus::Running => {
                    format!("{}%", 100 * r.step / r.total_steps.max(1))
                }
                RunStatus::Stopping => tr(lang, "runs.stopping").into_owned(),
                RunStatus::Finished => tr(lang, "runs.finished").into_owned(),
                RunStatus::Failed(_) => tr(lang, "runs.failed").into_owned(),
                RunStatus::Cancelled { .. } => tr(lang, "runs.stopped").into_owned(),
            };
            let metric = r
                .final_metric()
                .map_or(String::new(), |(k, v)| format!("{k} {v:.4}"));
            let data = r
                .config
                .data
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned());
            let line = format!(
                "{} {:>2} {} {:<8} {} {} · {}  {}",
                if i == app.training.run_selected {
                    "▶"
                } else {
                    " "
                },
                r.id,
                pad_right(&status, 9),
                r.config.loss.name(),
                pad_right(&text::clip(&data, 22), 22),
                tr_with(lang, "runs.epochs", &[("n", &r.config.epochs)]),
                metric,
                r.config.output.display()
            );
            let style = if i == app.training.run_selected {
                theme.selected()
            } else {
                Style::new()
            };
            Line::styled(text::clip(&line, inner.width as usize), style)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}
