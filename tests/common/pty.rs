//! The real binary in a pseudo-terminal: keys in, the screen (as a vt100 terminal shows it) and
//! the raw output out.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{Child, CommandBuilder, ExitStatus, MasterPty, PtySize, native_pty_system};

pub struct Pty {
    pub child: Box<dyn Child + Send + Sync>,
    pub screen: Screen,
    keys: Box<dyn Write + Send>,
    master: Box<dyn MasterPty + Send>,
}

/// What the terminal shows (a vt100 parser), and every byte the app wrote.
pub struct Screen {
    pub parser: Arc<Mutex<vt100::Parser>>,
    pub raw: Arc<Mutex<Vec<u8>>>,
}

fn size(rows: u16, cols: u16) -> PtySize {
    PtySize {
        rows,
        cols,
        pixel_width: 0,
        pixel_height: 0,
    }
}

/// Starts the binary with `args` in a `rows` x `cols` pseudo-terminal, in `cwd`, offline.
pub fn spawn(args: &[&str], env: &[(&str, &str)], cwd: &Path, rows: u16, cols: u16) -> Pty {
    let pair = native_pty_system().openpty(size(rows, cols)).unwrap();
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_sbert-tui"));
    cmd.args(args);
    cmd.cwd(cwd);
    cmd.env("TERM", "xterm-256color");
    cmd.env("HF_HUB_OFFLINE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let parser = Arc::new(Mutex::new(vt100::Parser::new(
        std::num::NonZero::new(rows).unwrap(),
        std::num::NonZero::new(cols).unwrap(),
        0,
    )));
    let raw = Arc::new(Mutex::new(Vec::new()));
    let mut reader = pair.master.try_clone_reader().unwrap();
    let (p, r) = (parser.clone(), raw.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            p.lock().unwrap().process(&buf[..n]);
            r.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let keys = pair.master.take_writer().unwrap();
    Pty {
        child,
        screen: Screen { parser, raw },
        keys,
        master: pair.master,
    }
}

/// [`spawn`] in the package folder (where `sample_data/` is), 40 x 120.
pub fn spawn_here(args: &[&str], env: &[(&str, &str)]) -> Pty {
    spawn(args, env, Path::new(env!("CARGO_MANIFEST_DIR")), 40, 120)
}

impl Pty {
    /// Types `bytes`, then gives the app a moment.
    pub fn send(&mut self, bytes: &[u8]) {
        self.send_now(bytes);
        std::thread::sleep(Duration::from_millis(30));
    }

    /// Types `bytes` without waiting.
    pub fn send_now(&mut self, bytes: &[u8]) {
        self.keys.write_all(bytes).unwrap();
        self.keys.flush().unwrap();
    }

    /// Resizes the terminal (the app gets SIGWINCH) and the screen that reads it.
    pub fn resize(&mut self, rows: u16, cols: u16) {
        self.master.resize(size(rows, cols)).unwrap();
        self.screen.parser.lock().unwrap().screen_mut().set_size(
            std::num::NonZero::new(rows).unwrap(),
            std::num::NonZero::new(cols).unwrap(),
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.process_id().unwrap()
    }

    /// Waits (at most `secs`) for the app to end.
    pub fn wait_exit(&mut self, secs: u64) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader take the last bytes.
                std::thread::sleep(Duration::from_millis(150));
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(secs), "did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens the training screen and waits for the form to have read the sample data.
    pub fn open_training_form(&mut self) {
        self.screen
            .wait_for("the explorer", |s| s.contains("8 × 8"));
        self.send(b"t");
        self.screen
            .wait_for("the form with the sample data read", |s| {
                s.contains("scored pairs (sentence1")
            });
    }
}

impl Screen {
    pub fn text(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    /// Everything the app wrote, as text.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.raw.lock().unwrap()).to_string()
    }

    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if pred(&text) {
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}; screen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// True when `out`, from byte `from` on, turns off what the app turned on: the alternate screen,
/// mouse capture and bracketed paste.
pub fn restored_after(out: &str, from: usize) -> bool {
    let tail = &out[from..];
    tail.contains("\x1b[?1049l") && tail.contains("\x1b[?1000l") && tail.contains("\x1b[?2004l")
}
