//! The app: keys, mouse, paste, worker and training messages in; requests for the embedding
//! worker and effects (start / stop a run, read a data file) out. It routes between the two
//! screens, the explorer (`explorer.rs`) and the training screen (`training/`), which own their
//! state and their actions; what they share (the input line, pop-ups, the status line, the
//! outboxes) is the [`Shell`]. Pure and synchronous, so tests drive it by hand.

use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Position;

use super::corpus::CorpusScreen;
use super::corpus_worker::CorpusEvent;
use super::demo::DEMO_SETS;
use super::explorer::Explorer;
use super::hits::Hits;
use super::i18n::{tr, tr_with};
use super::keys::{self, Action, Context};
use super::lessons::LessonsScreen;
use super::messages::{Request, WorkerEvent};
use super::shell::{Confirm, CorpusInput, EditTarget, Effect, Mode, Shell, StatusMessage};
use super::training::{RunView, TrainingScreen};
use crate::lessons::{Action as LessonAction, Lang};
use crate::train::data::Dataset;
use crate::train::events::TrainEvent;

/// The explorer, the training screen (the explorer keeps working while a run trains), or the
/// lessons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Explorer,
    Training,
    Lessons,
    Corpus,
}

pub struct App {
    pub shell: Shell,
    pub explorer: Explorer,
    pub training: TrainingScreen,
    pub lessons: LessonsScreen,
    pub corpus: CorpusScreen,
    /// A corpus to open once the explorer's model is loaded (`--corpus FILE`).
    pub corpus_pending: Option<String>,
    pub screen: Screen,
    /// The language of the whole interface and of the lessons (`--lang`, `LANG`; `z` switches).
    pub lang: Lang,
    /// Where `W` / Esc goes back to from the lessons.
    pub before_lessons: Screen,
    pub color: bool,
    pub quit: bool,
    /// Where the last frame put things, for clicks (see `hits.rs`).
    pub hits: Hits,
}

impl App {
    pub fn new(sentences: Vec<String>, color: bool) -> Self {
        Self {
            shell: Shell::default(),
            explorer: Explorer::new(sentences),
            training: TrainingScreen::new(),
            lessons: LessonsScreen::new(crate::lessons::built_in()),
            corpus: CorpusScreen::new(),
            corpus_pending: None,
            screen: Screen::Explorer,
            lang: Lang::En,
            before_lessons: Screen::Explorer,
            color,
            quit: false,
            hits: Hits::default(),
        }
    }

    /// Requests for the embedding worker, in order; empties the outbox.
    pub fn take_requests(&mut self) -> Vec<Request> {
        self.shell.take_requests()
    }

    /// Requests for the corpus worker, in order.
    pub fn take_corpus_requests(&mut self) -> Vec<super::corpus_worker::CorpusRequest> {
        self.shell.take_corpus_requests()
    }

    /// The explorer's model (its name and pooling) for the corpus screen, once loaded.
    fn corpus_model(&self) -> Option<(String, String)> {
        match &self.explorer.base.model {
            super::explorer::ModelState::Ready(m) => Some((m.name.clone(), m.pooling.clone())),
            _ => None,
        }
    }

    /// Opens a corpus file on the corpus screen (`--corpus FILE`, or `o` there).
    pub fn open_corpus(&mut self, path: &str) {
        self.screen = Screen::Corpus;
        let model = self.corpus_model();
        let prompt = self.explorer.prompt.clone();
        self.corpus
            .open_file(path, model, prompt, &mut self.shell, self.lang);
    }

    /// Effects for the training side and files, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.shell.take_effects()
    }

    pub fn mode(&self) -> &Mode {
        &self.shell.mode
    }

    pub fn status(&self) -> Option<&StatusMessage> {
        self.shell.status.as_ref()
    }

    /// The sentences as shown right now: the one being typed counts, live.
    pub fn texts(&self) -> Vec<String> {
        self.explorer.texts(&self.shell.mode)
    }

    /// The run that is training now, if any.
    pub fn active_run(&self) -> Option<&RunView> {
        self.training.active_run()
    }

    /// Starts loading the model to explore.
    pub fn load_model(&mut self, spec: &str, pooling: Option<String>) {
        self.training.model_changed(spec);
        self.explorer.load_model(spec, pooling, &mut self.shell);
    }

    /// Shows a message in the status line.
    pub fn notify(&mut self, text: impl Into<String>, error: bool) {
        self.shell.set_status(text, error);
    }

    fn context(&self) -> Context {
        match (&self.shell.mode, self.screen) {
            (Mode::Editing(..), _) => Context::Editing,
            (
                Mode::Help
                | Mode::Poolings(_)
                | Mode::Prompts(_)
                | Mode::Cost(_)
                | Mode::Pipeline(_),
                _,
            ) => Context::Help,
            (Mode::Demo { .. }, _) => Context::Demo,
            (Mode::Confirm(_), _) => Context::Confirm,
            (Mode::Normal, Screen::Explorer) => self.explorer.focus.context(),
            (Mode::Normal, Screen::Training) => self.training.context(),
            (Mode::Normal, Screen::Lessons) => Context::Lessons,
            (Mode::Normal, Screen::Corpus) => Context::Corpus,
        }
    }

    pub fn on_key(&mut self, ev: KeyEvent) {
        let action = keys::lookup(&ev, self.context());
        match self.shell.mode.clone() {
            Mode::Help
            | Mode::Poolings(_)
            | Mode::Prompts(_)
            | Mode::Cost(_)
            | Mode::Pipeline(_) => {
                self.shell.mode = Mode::Normal;
                if action == Some(Action::Quit) {
                    self.request_quit();
                }
            }
            Mode::Demo { selected } => match action {
                Some(Action::DemoUp) => {
                    self.shell.mode = Mode::Demo {
                        selected: selected.saturating_sub(1),
                    }
                }
                Some(Action::DemoDown) => {
                    self.shell.mode = Mode::Demo {
                        selected: (selected + 1).min(DEMO_SETS.len() - 1),
                    }
                }
                Some(Action::DemoLoad) => {
                    let set = &DEMO_SETS[selected];
                    self.shell.mode = Mode::Normal;
                    self.screen = Screen::Explorer;
                    self.explorer
                        .replace_sentences(set.sentences(), &mut self.shell);
                    let name = set.name(self.lang);
                    self.shell.set_status(
                        tr_with(self.lang, "msg.demo_set", &[("name", &name)]),
                        false,
                    );
                }
                Some(Action::Quit) => {
                    self.shell.mode = Mode::Normal;
                    self.request_quit();
                }
                _ => self.shell.mode = Mode::Normal,
            },
            Mode::Confirm(what) => {
                self.shell.mode = Mode::Normal;
                let keep = match action {
                    Some(Action::ConfirmKeep) => true,
                    Some(Action::ConfirmDiscard) => false,
                    Some(Action::Quit) => {
                        // Ctrl-C in the question: quit now, the run stops without a checkpoint.
                        self.shell.effect(Effect::StopTraining {
                            keep_checkpoint: false,
                        });
                        self.quit = true;
                        return;
                    }
                    _ => return, // carry on
                };
                self.training.stop_run(keep, &mut self.shell);
                if what == Confirm::QuitDuringRun {
                    self.training.quit_after_stop = true;
                    self.shell
                        .set_status(tr(self.lang, "msg.stopping_quit"), false);
                }
            }
            Mode::Editing(..) => self.on_editing_key(ev, action),
            Mode::Normal => match (action, ev.code) {
                (Some(Action::LessonStep), KeyCode::Char(d)) => {
                    if let Some(n) = d.to_digit(10) {
                        self.run_lesson_step(n as usize);
                    }
                }
                (Some(action), _) => self.act(action),
                (None, _) => {}
            },
        }
    }

    fn on_editing_key(&mut self, ev: KeyEvent, action: Option<Action>) {
        let Mode::Editing(_, editor) = &mut self.shell.mode else {
            return;
        };
        let before = editor.text().to_string();
        match action {
            Some(Action::Commit) => return self.commit(),
            Some(Action::Cancel) => {
                self.shell.mode = Mode::Normal;
                self.explorer.cancel_edit(&mut self.shell);
                return;
            }
            Some(Action::Quit) => return self.request_quit(),
            Some(Action::CursorLeft) => editor.left(),
            Some(Action::CursorRight) => editor.right(),
            Some(Action::CursorHome) => editor.home(),
            Some(Action::CursorEnd) => editor.end(),
            Some(Action::Backspace) => editor.backspace(),
            Some(Action::DeleteForward) => editor.delete(),
            Some(Action::KillLine) => editor.kill_to_start(),
            Some(Action::DeleteWord) => editor.delete_word_back(),
            _ => {
                if let KeyCode::Char(c) = ev.code
                    && !ev
                        .modifiers
                        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
                {
                    editor.insert_char(c);
                }
            }
        }
        if editor.text() != before {
            if let Mode::Editing(EditTarget::Corpus(CorpusInput::Query), editor) = &self.shell.mode
            {
                let text = editor.text().to_string();
                self.corpus.query_changed(&text, &mut self.shell);
            } else {
                self.explorer.refresh(&mut self.shell);
            }
        }
    }

    /// Quit, unless a run is training: then ask what to do with it (asked twice: quit now).
    fn request_quit(&mut self) {
        self.end(true);
    }

    /// The process was asked to end (SIGTERM, SIGHUP): a training run stops at the end of its
    /// step and keeps a checkpoint, then the app quits; asked again, it quits at once.
    pub fn on_terminate(&mut self) {
        self.end(false);
    }

    /// Quits now, or once the training run has stopped: `ask` what to do with the run, or stop
    /// it keeping a checkpoint. Asked a second time while the run stops, quits at once.
    fn end(&mut self, ask: bool) {
        if self.active_run().is_none() {
            self.quit = true;
        } else if self.training.quit_after_stop {
            self.shell.effect(Effect::StopTraining {
                keep_checkpoint: false,
            });
            self.quit = true;
        } else if ask {
            self.shell.mode = Mode::Confirm(Confirm::QuitDuringRun);
        } else {
            self.shell.mode = Mode::Normal;
            self.training.stop_run(true, &mut self.shell);
            self.training.quit_after_stop = true;
            self.shell
                .set_status(tr(self.lang, "msg.asked_to_end"), false);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Quit => self.request_quit(),
            Action::Help => self.shell.mode = Mode::Help,
            Action::SwitchLanguage => self.lang = self.lang.other(),
            Action::DemoSets => self.shell.mode = Mode::Demo { selected: 0 },
            Action::PoolingsSideBySide => self.explorer.request_pooling_table(&mut self.shell),
            Action::Cost => self.explorer.request_cost(&mut self.shell),
            Action::Pipeline => self.explorer.request_pipeline(&mut self.shell),
            Action::DropoutCloud => self.explorer.request_dropout_cloud(&mut self.shell),
            Action::PromptsSideBySide => self.explorer.request_prompt_table(&mut self.shell),
            Action::Lessons => {
                if self.screen == Screen::Lessons {
                    self.screen = self.before_lessons;
                } else {
                    self.before_lessons = self.screen;
                    self.screen = Screen::Lessons;
                }
            }
            Action::CorpusScreen => {
                self.screen = if self.screen == Screen::Corpus {
                    Screen::Explorer
                } else {
                    Screen::Corpus
                };
                if self.screen == Screen::Corpus && self.corpus.path.is_none() {
                    self.corpus
                        .act(Action::OpenFile, &mut self.shell, self.lang);
                }
            }
            Action::Add if self.screen == Screen::Corpus => {
                let texts: Vec<String> = match &self.corpus.open {
                    Some(o) => self
                        .corpus
                        .selected_rows()
                        .into_iter()
                        .map(|r| o.corpus.texts[r].clone())
                        .collect(),
                    None => Vec::new(),
                };
                if texts.is_empty() {
                    self.shell
                        .set_status(tr(self.lang, "corpus.nothing_selected"), true);
                } else {
                    self.explorer
                        .paste_lines(&texts.join("\n"), &mut self.shell);
                    self.shell.set_status(
                        tr_with(self.lang, "corpus.added", &[("n", &texts.len())]),
                        false,
                    );
                }
            }
            Action::ToggleScreen => {
                self.screen = match self.screen {
                    Screen::Explorer | Screen::Lessons | Screen::Corpus => Screen::Training,
                    Screen::Training => Screen::Explorer,
                };
                if self.screen == Screen::Training {
                    self.training.opened(&mut self.shell);
                }
            }
            Action::Add => {
                self.screen = Screen::Explorer;
                self.explorer.act(action, &mut self.shell);
            }
            Action::StopRun if self.active_run().is_some() => {
                self.shell.mode = Mode::Confirm(Confirm::StopRun);
            }
            Action::Compare => {
                let start = self
                    .training
                    .newest_loadable()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.shell.edit(EditTarget::TunedSpec, &start);
            }
            Action::LoadRun => match self.training.selected_loadable() {
                Some(path) => {
                    self.screen = Screen::Explorer;
                    self.explorer
                        .load_tuned(&path.to_string_lossy(), &mut self.shell);
                }
                None => self
                    .shell
                    .set_status(tr(self.lang, "msg.no_loadable"), true),
            },
            action => {
                let handled = match self.screen {
                    Screen::Training => self.training.act(action, &mut self.shell),
                    Screen::Lessons => self.lessons.act(action),
                    Screen::Corpus => self.corpus.act(action, &mut self.shell, self.lang),
                    Screen::Explorer => false,
                };
                if !handled {
                    self.explorer.act(action, &mut self.shell);
                }
            }
        }
    }

    /// Runs step `n` (from 1) of the lesson on show: it acts on the explorer or the training
    /// form, and shows the screen it acted on (`W` comes back).
    pub fn run_lesson_step(&mut self, n: usize) {
        let Some(lesson) = self.lessons.current() else {
            return;
        };
        let lang = self.lang;
        let Some(step) = n.checked_sub(1).and_then(|i| lesson.steps.get(i)) else {
            return self.shell.set_status(
                tr_with(lang, "msg.lesson_steps", &[("n", &lesson.steps.len())]),
                true,
            );
        };
        let (action, label) = (step.action.clone(), step.label.get(lang).to_string());
        let sentences = lesson.sentences.clone();
        self.before_lessons = Screen::Lessons;
        self.shell.status = None;
        match action {
            LessonAction::Sentences => {
                self.screen = Screen::Explorer;
                self.explorer.replace_sentences(sentences, &mut self.shell);
            }
            LessonAction::Pooling(mode) => {
                self.screen = Screen::Explorer;
                self.explorer.set_pooling(mode, &mut self.shell);
            }
            LessonAction::Prompt(name) => {
                self.screen = Screen::Explorer;
                self.explorer.set_prompt(name, &mut self.shell);
            }
            LessonAction::PromptTable => {
                self.screen = Screen::Explorer;
                self.explorer.request_prompt_table(&mut self.shell);
            }
            LessonAction::Cost => {
                self.screen = Screen::Explorer;
                self.explorer.request_cost(&mut self.shell);
            }
            LessonAction::PoolingTable => {
                self.screen = Screen::Explorer;
                self.explorer.request_pooling_table(&mut self.shell);
            }
            LessonAction::Pipeline => {
                self.screen = Screen::Explorer;
                self.explorer.request_pipeline(&mut self.shell);
            }
            LessonAction::DropoutCloud => {
                self.screen = Screen::Explorer;
                self.explorer.cloud = None;
                self.explorer.request_dropout_cloud(&mut self.shell);
            }
            LessonAction::Compare(model) => {
                self.screen = Screen::Explorer;
                self.explorer.load_tuned(&model, &mut self.shell);
            }
            LessonAction::Train(t) => {
                self.screen = Screen::Training;
                self.training.prepare(&t, &mut self.shell);
            }
        }
        // The step's own message (an error, say) wins; otherwise say what ran.
        let failed = self.shell.status.as_ref().is_some_and(|s| s.error);
        if !failed {
            self.shell.set_status(
                tr_with(self.lang, "msg.step", &[("n", &n), ("label", &label)]),
                false,
            );
        }
    }

    fn commit(&mut self) {
        let Mode::Editing(target, editor) = std::mem::replace(&mut self.shell.mode, Mode::Normal)
        else {
            return;
        };
        let text = editor.text().to_string();
        match target {
            EditTarget::Field(f) => self.training.commit_field(f, text, &mut self.shell),
            EditTarget::Corpus(input) => {
                let model = self.corpus_model();
                let prompt = self.explorer.prompt.clone();
                self.corpus
                    .commit(input, text, model, prompt, &mut self.shell, self.lang);
            }
            EditTarget::ModelSpec if !text.trim().is_empty() => {
                self.training.model_changed(text.trim());
                self.explorer.commit(target, text, &mut self.shell);
            }
            target => {
                if target == EditTarget::TunedSpec {
                    self.screen = Screen::Explorer;
                }
                self.explorer.commit(target, text, &mut self.shell)
            }
        }
    }

    /// Pasted text: while typing it goes into the line; otherwise each non-empty line becomes a
    /// sentence.
    pub fn on_paste(&mut self, text: &str) {
        if let Mode::Editing(_, editor) = &mut self.shell.mode {
            editor.insert_str(text);
            self.explorer.refresh(&mut self.shell);
            return;
        }
        if matches!(self.shell.mode, Mode::Normal) {
            self.explorer.paste_lines(text, &mut self.shell);
        }
    }

    /// Clicks select a sentence in the list or a cell in the matrix; any click focuses its pane.
    /// Resolved from where the last frame drew them.
    pub fn on_mouse(&mut self, ev: MouseEvent) {
        if ev.kind != MouseEventKind::Down(MouseButton::Left)
            || self.shell.mode != Mode::Normal
            || self.screen != Screen::Explorer
        {
            return;
        }
        if let Some(hit) = self.hits.at(Position::new(ev.column, ev.row)) {
            self.explorer.click(hit);
        }
    }

    /// An answer from the corpus worker.
    pub fn on_corpus(&mut self, event: CorpusEvent) {
        self.corpus.on_event(event, &mut self.shell, self.lang);
    }

    pub fn on_worker(&mut self, event: WorkerEvent) {
        self.explorer.on_worker(event, &mut self.shell);
        // `--corpus FILE` waits for the explorer's model.
        if self.corpus_model().is_some()
            && let Some(path) = self.corpus_pending.take()
        {
            self.open_corpus(&path);
        }
    }

    /// An event from the training run.
    pub fn on_train(&mut self, event: &TrainEvent) {
        let ended = self.training.on_train(event, &mut self.shell);
        if ended && self.training.quit_after_stop {
            self.quit = true;
        }
    }

    /// The training thread ended with an error before it could report one.
    pub fn on_train_error(&mut self, message: &str) {
        self.training.on_train_error(message, &mut self.shell);
        if self.training.quit_after_stop {
            self.quit = true;
        }
    }

    /// A data file asked for by the form was read.
    pub fn on_data(&mut self, path: &str, eval: bool, result: Result<Arc<Dataset>, String>) {
        self.training.on_data(path, eval, result);
    }
}
