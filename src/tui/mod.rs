//! The terminal UI. `app` routes between the screens (`explorer`, `training`), `ui` draws them,
//! `worker` owns the model on its own thread. This module wires them to the terminal: one channel
//! carries input events, worker results, training events and signals into the UI thread; bursts
//! are handled before one frame is drawn. The terminal is put back on every way out: a normal
//! quit, an error, a panic (the hook), a signal (SIGTERM, SIGHUP, SIGINT: the app stops its run
//! and quits), and an abort (an allocation failure: a SIGABRT handler restores it first).

pub mod app;
pub mod corpus;
pub mod corpus_worker;
pub mod demo;
pub mod editor;
pub mod explorer;
pub mod hits;
pub mod i18n;
pub mod keys;
pub mod lessons;
pub mod messages;
pub mod shell;
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
use crate::train::data::Dataset;
use crate::train::events::TrainEvent;
use crate::train::run::StopSignal;
use app::App;
use messages::WorkerEvent;
use shell::Effect;

/// What the UI starts with.
pub struct TuiOptions {
    pub model: String,
    pub pooling: Option<String>,
    pub device: DeviceChoice,
    pub max_seq_length: Option<usize>,
    pub truncate_dim: Option<usize>,
    pub precision: crate::model::Precision,
    /// The prompt to start with.
    pub prompt: crate::model::Prompt,
    pub sentences: Vec<String>,
    /// A lesson to open first (`--lesson FILE`).
    pub lesson: Option<crate::lessons::Lesson>,
    pub lang: crate::lessons::Lang,
    /// A sentence-transformers CrossEncoder folder for the cost demonstration.
    pub cross_encoder: Option<std::path::PathBuf>,
    /// A corpus file to open on the corpus screen.
    pub corpus: Option<std::path::PathBuf>,
}

/// Environment variables that make the binary misbehave on purpose, for the end-to-end tests:
/// panic, or abort as an allocation failure does, after the first frame.
const TEST_PANIC: &str = "SBERT_TUI_TEST_PANIC";
const TEST_ABORT: &str = "SBERT_TUI_TEST_ABORT";

/// Redraw interval while a run trains (the elapsed time and ETA move).
const TICK: Duration = Duration::from_millis(50);

enum AppEvent {
    Input(Event),
    /// No input for a while: redraw if something is moving (a run's clock).
    Tick,
    Worker(WorkerEvent),
    Corpus(corpus_worker::CorpusEvent),
    Train(TrainEvent),
    /// The training thread ended; `Err` when it failed before it could report why.
    TrainDone(Result<(), String>),
    Data {
        path: String,
        eval: bool,
        result: Result<Arc<Dataset>, String>,
    },
    /// SIGTERM, SIGHUP or SIGINT arrived.
    Terminate,
}

/// The text of a caught panic.
pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Carries out what the app asked for besides embeddings: runs and data files.
struct Effects {
    tx: Sender<AppEvent>,
    stop: Option<Arc<StopSignal>>,
}

impl Effects {
    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::StartTraining { config, preloaded } => {
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
                            // A panic in the engine ends the run, not the app.
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    crate::train::run::train_with(
                                        *config, preloaded, &mut sink, &stop,
                                    )
                                }));
                            let done = match result {
                                Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                                Err(p) => {
                                    Err(format!("the training run crashed: {}", panic_message(&p)))
                                }
                            };
                            let _ = tx.send(AppEvent::TrainDone(done));
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
                        .map(Arc::new)
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
    #[cfg(unix)]
    emergency::ACTIVE.store(false, std::sync::atomic::Ordering::SeqCst);
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// The last resort when the process aborts (an allocation failure, a panic while panicking):
/// only async-signal-safe calls, the terminal modes as they were before raw mode, and escape
/// sequences that turn off mouse capture and bracketed paste and leave the alternate screen.
#[cfg(unix)]
mod emergency {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    static SAVED: OnceLock<libc::termios> = OnceLock::new();
    /// True while the UI owns the terminal.
    pub static ACTIVE: AtomicBool = AtomicBool::new(false);

    /// Restores the terminal if the UI owns it (for the allocator, when an allocation fails:
    /// the standard library then prints its message and aborts).
    pub fn restore_if_active() {
        if ACTIVE.swap(false, Ordering::SeqCst) {
            restore_now();
        }
    }

    /// Mouse modes off, bracketed paste off, main screen, cursor shown.
    const RESET: &[u8] =
        b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l\x1b[?2004l\x1b[?1049l\x1b[?25h";

    /// Saves the terminal's modes (before raw mode) and installs the SIGABRT handler.
    pub fn install() {
        // SAFETY: tcgetattr fills a plain struct; fd 0 may not be a terminal, then nothing is saved.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(0) == 1 && libc::tcgetattr(0, &mut t) == 0 {
                let _ = SAVED.set(t);
            }
        }
        // SAFETY: the handler only calls write(2) and tcsetattr(3), both async-signal-safe, then
        // lets the default action (abort) happen.
        let _ = unsafe {
            signal_hook::low_level::register(signal_hook::consts::SIGABRT, || {
                restore_if_active();
                let _ =
                    signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGABRT);
            })
        };
    }

    pub fn restore_now() {
        // SAFETY: write(2) and tcsetattr(3) on the process's own descriptors.
        unsafe {
            libc::write(1, RESET.as_ptr().cast(), RESET.len());
            if let Some(t) = SAVED.get() {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

/// Restores the terminal if the UI owns it, with async-signal-safe calls only: for the global
/// allocator of the binary to call when an allocation fails (the standard library then prints
/// its message, which would otherwise vanish with the alternate screen, and aborts).
pub fn restore_terminal_now() {
    #[cfg(unix)]
    emergency::restore_if_active();
}

impl TerminalGuard {
    fn enter() -> Result<(Self, Terminal<CrosstermBackend<Stdout>>)> {
        #[cfg(unix)]
        emergency::install();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Only a panic of the UI thread ends the app; the worker and training threads catch
            // theirs and report them (they must not restore the terminal under a live UI).
            if std::thread::current().name() == Some(UI_THREAD) {
                restore();
            }
            previous(info);
        }));
        enable_raw_mode()?;
        #[cfg(unix)]
        emergency::ACTIVE.store(true, std::sync::atomic::Ordering::SeqCst);
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

/// The name of the thread that owns the terminal.
const UI_THREAD: &str = "main";

/// Forwards SIGTERM, SIGHUP and SIGINT to the app as [`AppEvent::Terminate`] (the app stops a
/// run and quits). A third signal, when the app has not managed to quit, restores the terminal
/// and exits at once.
#[cfg(unix)]
fn forward_signals(tx: Sender<AppEvent>) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for (n, _) in signals.forever().enumerate() {
                if n >= 2 || tx.send(AppEvent::Terminate).is_err() {
                    emergency::restore_now();
                    std::process::exit(130);
                }
            }
        })?;
    Ok(())
}

/// Runs the explorer until the user quits.
pub fn run(options: TuiOptions) -> Result<()> {
    let (tx, rx) = channel::<AppEvent>();
    let requests = worker::spawn(
        tx.clone(),
        AppEvent::Worker,
        worker::WorkerOptions {
            device: options.device,
            max_seq_length: options.max_seq_length,
            truncate_dim: options.truncate_dim,
            precision: options.precision,
        },
    );
    let corpus_requests = corpus_worker::spawn(
        tx.clone(),
        AppEvent::Corpus,
        worker::WorkerOptions {
            device: options.device,
            max_seq_length: options.max_seq_length,
            truncate_dim: options.truncate_dim,
            precision: options.precision,
        },
        Some(crate::corpus::cache::VectorCache::default_root()),
    );
    let mut sentences = options.sentences;
    let total = sentences.len();
    sentences.truncate(explorer::MAX_SENTENCES);
    let mut app = App::new(sentences, theme::Theme::from_env().color);
    app.explorer.prompt = options.prompt;
    app.lang = options.lang;
    app.explorer.cross_encoder = options
        .cross_encoder
        .map(|p| p.to_string_lossy().into_owned());
    if let Some(lesson) = options.lesson {
        app.lessons.open_first(lesson);
        app.screen = app::Screen::Lessons;
    }
    app.load_model(&options.model, options.pooling);
    if let Some(path) = options.corpus {
        app.corpus_pending = Some(path.to_string_lossy().into_owned());
        app.screen = app::Screen::Corpus;
    }
    if total > explorer::MAX_SENTENCES {
        app.notify(
            i18n::tr_with(
                app.lang,
                "msg.kept_first",
                &[("max", &explorer::MAX_SENTENCES), ("total", &total)],
            ),
            true,
        );
    }

    let tx_effects = tx.clone();
    #[cfg(unix)]
    forward_signals(tx.clone())?;
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
    let mut hits = Default::default();
    terminal.draw(|f| hits = ui::draw(&app, f))?;
    app.hits = hits;
    if let Some(t) = trace.as_mut() {
        use std::io::Write;
        writeln!(
            t,
            "first_frame_ms {:.2}",
            started.elapsed().as_secs_f64() * 1000.0
        )?;
    }
    // Test hooks: prove that a panic and an abort restore the terminal (tests/tui_e2e.rs).
    if std::env::var_os(TEST_PANIC).is_some() {
        panic!("test panic after the first frame");
    }
    if std::env::var_os(TEST_ABORT).is_some() {
        // An allocation no machine can satisfy: the allocator fails, the standard library
        // prints its message and aborts.
        let v: Vec<u8> = Vec::with_capacity(1 << 62);
        std::hint::black_box(v);
    }
    let mut effects = Effects {
        tx: tx_effects,
        stop: None,
    };
    event_loop(
        &mut app,
        &rx,
        &requests,
        &corpus_requests,
        &mut effects,
        &mut terminal,
        trace.as_mut(),
    )
}

fn event_loop(
    app: &mut App,
    rx: &Receiver<AppEvent>,
    requests: &std::sync::mpsc::Sender<messages::Request>,
    corpus_requests: &std::sync::mpsc::Sender<corpus_worker::CorpusRequest>,
    effects: &mut Effects,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    mut trace: Option<&mut io::BufWriter<std::fs::File>>,
) -> Result<()> {
    use std::io::Write;
    for r in app.take_requests() {
        requests.send(r)?;
    }
    for r in app.take_corpus_requests() {
        corpus_requests.send(r)?;
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
                AppEvent::Corpus(c) => app.on_corpus(c),
                AppEvent::Train(e) => app.on_train(&e),
                AppEvent::TrainDone(Err(e)) => app.on_train_error(&e),
                AppEvent::TrainDone(Ok(())) => {}
                AppEvent::Data { path, eval, result } => app.on_data(&path, eval, result),
                AppEvent::Terminate => app.on_terminate(),
            }
        }
        for r in app.take_requests() {
            requests.send(r)?;
        }
        for r in app.take_corpus_requests() {
            corpus_requests.send(r)?;
        }
        for e in app.take_effects() {
            effects.apply(e);
        }
        if app.quit {
            return Ok(());
        }
        if only_ticks && app.active_run().is_none() && app.corpus.task.is_none() {
            continue;
        }
        let t = Instant::now();
        let mut hits = Default::default();
        terminal.draw(|f| hits = ui::draw(app, f))?;
        app.hits = hits;
        if let Some(tr) = trace.as_deref_mut() {
            writeln!(
                tr,
                "at_ms {:.1} frame_ms {:.3} handled_ms {:.3} result {had_result} input {had_input} training {} n {}",
                started.elapsed().as_secs_f64() * 1000.0,
                t.elapsed().as_secs_f64() * 1000.0,
                received.elapsed().as_secs_f64() * 1000.0,
                app.active_run().is_some(),
                app.explorer.analysis.as_ref().map_or(0, |a| a.texts.len())
            )?;
            tr.flush()?;
        }
    }
    Ok(())
}
