//! The terminal UI. `app` holds the state, `ui` draws it, `worker` owns the model on its own
//! thread. This module wires them to the terminal: one channel carries input events and worker
//! results into the UI thread, bursts are handled before one frame is drawn.

pub mod app;
pub mod demo;
pub mod editor;
pub mod keys;
pub mod messages;
pub mod theme;
pub mod ui;
pub mod worker;

use std::io::{self, Stdout};
use std::sync::mpsc::{Receiver, channel};
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
use app::App;
use messages::WorkerEvent;

/// What the UI starts with.
pub struct TuiOptions {
    pub model: String,
    pub pooling: Option<String>,
    pub device: DeviceChoice,
    pub max_seq_length: Option<usize>,
    pub sentences: Vec<String>,
}

enum AppEvent {
    Input(Event),
    Worker(WorkerEvent),
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

    let (_guard, mut terminal) = TerminalGuard::enter()?;
    // Input on its own thread, so the UI thread sleeps on one channel.
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            loop {
                match event::poll(Duration::from_millis(200)) {
                    Ok(true) => match event::read() {
                        Ok(ev) => {
                            if tx.send(AppEvent::Input(ev)).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                    Ok(false) => {}
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
    event_loop(&mut app, &rx, &requests, &mut terminal, trace.as_mut())
}

fn event_loop(
    app: &mut App,
    rx: &Receiver<AppEvent>,
    requests: &std::sync::mpsc::Sender<messages::Request>,
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    mut trace: Option<&mut io::BufWriter<std::fs::File>>,
) -> Result<()> {
    use std::io::Write;
    for r in app.take_requests() {
        requests.send(r)?;
    }
    while let Ok(first) = rx.recv() {
        let received = Instant::now();
        let mut had_result = false;
        for ev in std::iter::once(first).chain(rx.try_iter()) {
            match ev {
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
            }
        }
        for r in app.take_requests() {
            requests.send(r)?;
        }
        if app.quit {
            return Ok(());
        }
        app.size = terminal.size()?.into();
        let t = Instant::now();
        terminal.draw(|f| ui::draw(app, f))?;
        if let Some(tr) = trace.as_deref_mut() {
            writeln!(
                tr,
                "frame_ms {:.3} handled_ms {:.3} result {had_result} n {}",
                t.elapsed().as_secs_f64() * 1000.0,
                received.elapsed().as_secs_f64() * 1000.0,
                app.analysis.as_ref().map_or(0, |a| a.texts.len())
            )?;
            tr.flush()?;
        }
    }
    Ok(())
}
