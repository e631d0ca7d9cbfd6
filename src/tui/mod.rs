//! The terminal UI. `app` holds the state, `ui` draws it, `worker` owns the model on its own
//! thread. This module wires them to the terminal: one channel carries input events and worker
//! results into the UI thread, bursts are handled before one frame is drawn.

pub mod app;
pub mod demo;
pub mod editor;
pub mod keys;
pub mod messages;
pub mod theme;
pub mod training;
pub mod ui;
pub mod worker;

use std::io::{self, Stdout};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use anyhow::Result;
use crossterm::event::{
    self, DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
    Event,
};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use crate::model::DeviceChoice;
use crate::train::events::TrainEvent;
use crate::train::run::StopSignal;
use app::{App, Effect};
use messages::WorkerEvent;

/// What the UI starts with.
pub struct TuiOptions {
    pub model: String,
    pub pooling: Option<String>,
    pub device: DeviceChoice,
    pub max_seq_length: Option<usize>,
    pub sentences: Vec<String>,
}

/// Redraw interval while a run trains (the elapsed time and ETA move).
const TICK: Duration = Duration::from_millis(50);

enum AppEvent {
    Input(Event),
    /// No input for a while: redraw if something is moving (a run's clock).
    Tick,
    Worker(WorkerEvent),
    Train(TrainEvent),
    /// The training thread ended; `Err` when it failed before it could report why.
    TrainDone(Result<(), String>),
    Data {
        path: String,
        eval: bool,
        result: Result<training::DataSummary, String>,
    },
}

/// Carries out what the app asked for besides embeddings: runs and data files.
struct Effects {
    tx: Sender<AppEvent>,
    stop: Option<Arc<StopSignal>>,
}

impl Effects {
    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::StartTraining(config) => {
                let stop = Arc::new(StopSignal::new());
                self.stop = Some(stop.clone());
                let tx = self.tx.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("training".into())
                        .spawn(move || {
                            let events = tx.clone();
                            let mut sink = |e: &TrainEvent| {
                                let _ = events.send(AppEvent::Train(e.clone()));
                            };
                            let result = crate::train::run::train(*config, None, &mut sink, &stop);
                            let _ = tx.send(AppEvent::TrainDone(
                                result.map(|_| ()).map_err(|e| e.to_string()),
                            ));
                        });
                if let Err(e) = spawned {
                    let _ = self.tx.send(AppEvent::TrainDone(Err(format!(
                        "cannot start a thread: {e}"
                    ))));
                }
            }
            Effect::StopTraining { keep_checkpoint } => {
                if let Some(stop) = &self.stop {
                    stop.stop(keep_checkpoint);
                }
            }
            Effect::InspectData { path, eval } => {
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let result = crate::train::data::load(std::path::Path::new(&path))
                        .map(|d| training::DataSummary::of(&d))
                        .map_err(|e| e.to_string());
                    let _ = tx.send(AppEvent::Data { path, eval, result });
                });
            }
        }
    }
}

/// Puts the terminal back as it was: on drop, and from the panic hook before the panic message.
struct TerminalGuard;

fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

impl TerminalGuard {
    fn enter() -> Result<(Self, Terminal<CrosstermBackend<Stdout>>)> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        enable_raw_mode()?;
        let guard = TerminalGuard;
        execute!(
            io::stdout(),
            EnterAlternateScreen,
            EnableMouseCapture,
            EnableBracketedPaste
        )?;
        let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        Ok((guard, terminal))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Runs the explorer until the user quits.
pub fn run(options: TuiOptions) -> Result<()> {
    let (tx, rx) = channel::<AppEvent>();
    let requests = worker::spawn(
        tx.clone(),
        AppEvent::Worker,
        options.device,
        options.max_seq_length,
    );
    let mut app = App::new(options.sentences, theme::Theme::from_env().color);
    app.load_model(&options.model, options.pooling);

    let tx_effects = tx.clone();
    let (_guard, mut terminal) = TerminalGuard::enter()?;
    // Input on its own thread, so the UI thread sleeps on one channel.
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            loop {
                match event::poll(TICK) {
                    Ok(true) => match event::read() {
                        Ok(ev) => {
                            if tx.send(AppEvent::Input(ev)).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                    Ok(false) => {
                        if tx.send(AppEvent::Tick).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        })?;

    let trace = std::env::var_os("SBERT_TUI_TRACE")
        .map(std::fs::File::create)
        .transpose()?;
    let mut trace = trace.map(io::BufWriter::new);
    let started = Instant::now();
    app.size = terminal.size()?.into();
    terminal.draw(|f| ui::draw(&app, f))?;
    if let Some(t) = trace.as_mut() {
        use std::io::Write;
        writeln!(
            t,
            "first_frame_ms {:.2}",
            started.elapsed().as_secs_f64() * 1000.0
        )?;
    }
    // Test hook: proves the panic path restores the terminal (tests/tui_e2e.rs).
    if std::env::var_os("SBERT_TUI_TEST_PANIC").is_some() {
        panic!("test panic after the first frame");
    }
    let mut effects = Effects {
        tx: tx_effects,
        stop: None,
    };
    event_loop(
        &mut app,
        &rx,
        &requests,
        &mut effects,
        &mut terminal,
        trace.as_mut(),
    )
}

fn event_loop(
    app: &mut App,
    rx: &Receiver<AppEvent>,
    requests: &std::sync::mpsc::Sender<messages::Request>,
    effects: &mut Effects,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    mut trace: Option<&mut io::BufWriter<std::fs::File>>,
) -> Result<()> {
    use std::io::Write;
    for r in app.take_requests() {
        requests.send(r)?;
    }
    for e in app.take_effects() {
        effects.apply(e);
    }
    let started = Instant::now();
    while let Ok(first) = rx.recv() {
        let received = Instant::now();
        let mut had_result = false;
        let mut had_input = false;
        let mut only_ticks = true;
        for ev in std::iter::once(first).chain(rx.try_iter()) {
            only_ticks &= matches!(ev, AppEvent::Tick);
            had_input |= matches!(ev, AppEvent::Input(_));
            match ev {
                AppEvent::Tick => {}
                AppEvent::Input(Event::Key(k)) if k.kind != event::KeyEventKind::Release => {
                    app.on_key(k)
                }
                AppEvent::Input(Event::Paste(text)) => app.on_paste(&text),
                AppEvent::Input(Event::Mouse(m)) => app.on_mouse(m),
                AppEvent::Input(_) => {}
                AppEvent::Worker(w) => {
                    had_result |= matches!(w, WorkerEvent::Embedded { .. });
                    app.on_worker(w)
                }
                AppEvent::Train(e) => app.on_train(&e),
                AppEvent::TrainDone(Err(e)) => app.on_train_error(&e),
                AppEvent::TrainDone(Ok(())) => {}
                AppEvent::Data { path, eval, result } => app.on_data(&path, eval, result),
            }
        }
        for r in app.take_requests() {
            requests.send(r)?;
        }
        for e in app.take_effects() {
            effects.apply(e);
        }
        if app.quit {
            return Ok(());
        }
        if only_ticks && app.active_run().is_none() {
            continue;
        }
        app.size = terminal.size()?.into();
        let t = Instant::now();
        terminal.draw(|f| ui::draw(app, f))?;
        if let Some(tr) = trace.as_deref_mut() {
            writeln!(
                tr,
                "at_ms {:.1} frame_ms {:.3} handled_ms {:.3} result {had_result} input {had_input} training {} n {}",
                started.elapsed().as_secs_f64() * 1000.0,
                t.elapsed().as_secs_f64() * 1000.0,
                received.elapsed().as_secs_f64() * 1000.0,
                app.active_run().is_some(),
                app.analysis.as_ref().map_or(0, |a| a.texts.len())
            )?;
            tr.flush()?;
        }
    }
    Ok(())
}
