//! The key map: one table that both dispatches keys and generates the help overlay.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::i18n::tr;
use crate::lessons::Lang;

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Anywhere outside text entry.
    Global,
    Sentences,
    Matrix,
    Map,
    /// The training form.
    Form,
    /// A run in the training pane.
    Run,
    /// The list of this session's runs.
    History,
    /// Typing in the input line (a sentence, a path, a model name).
    Editing,
    /// The help overlay.
    Help,
    /// The demo-set picker.
    Demo,
    /// A question about a training run (stop it? quit while it trains?).
    Confirm,
    /// The lessons screen.
    Lessons,
    /// The corpus screen.
    Corpus,
}

impl Context {
    /// The heading of this context's keys in the help, in `lang`.
    pub fn title(self, lang: Lang) -> std::borrow::Cow<'static, str> {
        tr(lang, &format!("context.{self:?}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    NextPane,
    PrevPane,
    Help,
    NextPooling,
    NextPrompt,
    LoadModel,
    DemoSets,
    OpenFile,
    SaveFile,
    SwitchComponents,
    Add,
    Edit,
    Delete,
    MoveUp,
    MoveDown,
    Up,
    Down,
    Left,
    Right,
    Commit,
    Cancel,
    CursorLeft,
    CursorRight,
    CursorHome,
    CursorEnd,
    Backspace,
    DeleteForward,
    KillLine,
    DeleteWord,
    ToggleScreen,
    CycleView,
    Compare,
    CloseCompare,
    FieldUp,
    FieldDown,
    FieldPrev,
    FieldNext,
    FieldEdit,
    StartRun,
    StopRun,
    NewRun,
    LoadRun,
    HistoryUp,
    HistoryDown,
    /// Close a pop-up.
    Close,
    DemoUp,
    DemoDown,
    DemoLoad,
    /// Stop the run keeping a checkpoint.
    ConfirmKeep,
    /// Stop the run without a checkpoint.
    ConfirmDiscard,
    /// The lessons screen / back.
    Lessons,
    /// Run a step of the lesson (its number is the key: 1 to 9).
    LessonStep,
    ScrollUp,
    ScrollDown,
    /// English / Chinese.
    SwitchLanguage,
    /// A pair's similarity under every pooling mode.
    PoolingsSideBySide,
    /// Bi-encoder against cross-encoder cost, measured.
    Cost,
    /// A pair under each of the model's prompts.
    PromptsSideBySide,
    /// The selected sentence through every step of the model.
    Pipeline,
    /// SimCSE: the selected sentence encoded many times with dropout on, on the map.
    DropoutCloud,
    /// The corpus screen / back.
    CorpusScreen,
    /// Type a query over the corpus.
    Search,
    /// The next list of the corpus screen (hits, clusters, pairs).
    NextList,
    /// Community detection over the corpus.
    Communities,
    /// K-means over the corpus.
    KMeans,
    /// Paraphrase mining over the corpus.
    Mine,
    /// Write the corpus vectors to a file.
    Export,
    /// Stop the corpus task running now.
    CancelTask,
}

#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

const fn k(code: KeyCode) -> Key {
    Key {
        code,
        mods: KeyModifiers::NONE,
    }
}
const fn c(ch: char) -> Key {
    k(KeyCode::Char(ch))
}
const fn ctrl(ch: char) -> Key {
    Key {
        code: KeyCode::Char(ch),
        mods: KeyModifiers::CONTROL,
    }
}
const fn shift(code: KeyCode) -> Key {
    Key {
        code,
        mods: KeyModifiers::SHIFT,
    }
}

pub struct Binding {
    pub context: Context,
    pub keys: &'static [Key],
    /// How the keys are written in the help overlay.
    pub label: &'static str,
    pub action: Action,
    /// The key of what the binding does in `locales/app.yml`: `keys.<context>.<action>` (with a
    /// suffix when two bindings of a context share an action).
    pub help: &'static str,
}

impl Binding {
    /// What the binding does, in `lang`.
    pub fn help(&self, lang: Lang) -> std::borrow::Cow<'static, str> {
        tr(lang, self.help)
    }
}

const fn b(
    context: Context,
    keys: &'static [Key],
    label: &'static str,
    action: Action,
    help: &'static str,
) -> Binding {
    Binding {
        context,
        keys,
        label,
        action,
        help,
    }
}

use Action as A;
use Context as C;
use KeyCode as K;

pub const BINDINGS: &[Binding] = &[
    b(
        C::Global,
        &[ctrl('c')],
        "Ctrl-C",
        A::Quit,
        "keys.Global.QuitAlways",
    ),
    b(C::Global, &[c('q')], "q", A::Quit, "keys.Global.Quit"),
    b(
        C::Global,
        &[k(K::Tab)],
        "Tab",
        A::NextPane,
        "keys.Global.NextPane",
    ),
    b(
        C::Global,
        &[k(K::BackTab), shift(K::BackTab)],
        "Shift-Tab",
        A::PrevPane,
        "keys.Global.PrevPane",
    ),
    b(C::Global, &[c('?')], "?", A::Help, "keys.Global.Help"),
    b(C::Global, &[c('a')], "a", A::Add, "keys.Global.Add"),
    b(
        C::Global,
        &[c('p')],
        "p",
        A::NextPooling,
        "keys.Global.NextPooling",
    ),
    b(
        C::Global,
        &[c('P')],
        "P",
        A::NextPrompt,
        "keys.Global.NextPrompt",
    ),
    b(
        C::Global,
        &[c('m')],
        "m",
        A::LoadModel,
        "keys.Global.LoadModel",
    ),
    b(
        C::Global,
        &[c('D')],
        "D",
        A::DemoSets,
        "keys.Global.DemoSets",
    ),
    b(
        C::Global,
        &[c('o')],
        "o",
        A::OpenFile,
        "keys.Global.OpenFile",
    ),
    b(
        C::Global,
        &[c('w')],
        "w",
        A::SaveFile,
        "keys.Global.SaveFile",
    ),
    b(
        C::Global,
        &[c('c')],
        "c",
        A::SwitchComponents,
        "keys.Global.SwitchComponents",
    ),
    b(
        C::Global,
        &[c('t')],
        "t",
        A::ToggleScreen,
        "keys.Global.ToggleScreen",
    ),
    b(
        C::Global,
        &[c('b')],
        "b",
        A::PoolingsSideBySide,
        "keys.Global.PoolingsSideBySide",
    ),
    b(
        C::Global,
        &[c('Q')],
        "Q",
        A::PromptsSideBySide,
        "keys.Global.PromptsSideBySide",
    ),
    b(C::Global, &[c('C')], "C", A::Cost, "keys.Global.Cost"),
    b(
        C::Global,
        &[c('T')],
        "T",
        A::Pipeline,
        "keys.Global.Pipeline",
    ),
    b(
        C::Global,
        &[c('S')],
        "S",
        A::DropoutCloud,
        "keys.Global.DropoutCloud",
    ),
    b(C::Global, &[c('W')], "W", A::Lessons, "keys.Global.Lessons"),
    b(
        C::Global,
        &[c('F')],
        "F",
        A::CorpusScreen,
        "keys.Global.CorpusScreen",
    ),
    b(
        C::Corpus,
        &[c('o')],
        "o",
        A::OpenFile,
        "keys.Corpus.OpenFile",
    ),
    b(
        C::Corpus,
        &[c('/'), k(K::Enter)],
        "/ Enter",
        A::Search,
        "keys.Corpus.Search",
    ),
    b(
        C::Corpus,
        &[k(K::Up), c('k')],
        "↑ k",
        A::Up,
        "keys.Corpus.Up",
    ),
    b(
        C::Corpus,
        &[k(K::Down), c('j')],
        "↓ j",
        A::Down,
        "keys.Corpus.Down",
    ),
    b(
        C::Corpus,
        &[k(K::Tab)],
        "Tab",
        A::NextList,
        "keys.Corpus.NextList",
    ),
    b(
        C::Corpus,
        &[c('v')],
        "v",
        A::CycleView,
        "keys.Corpus.CycleView",
    ),
    b(
        C::Corpus,
        &[c('g')],
        "g",
        A::Communities,
        "keys.Corpus.Communities",
    ),
    b(C::Corpus, &[c('K')], "K", A::KMeans, "keys.Corpus.KMeans"),
    b(C::Corpus, &[c('M')], "M", A::Mine, "keys.Corpus.Mine"),
    b(C::Corpus, &[c('e')], "e", A::Export, "keys.Corpus.Export"),
    b(
        C::Corpus,
        &[c('x'), k(K::Esc)],
        "x Esc",
        A::CancelTask,
        "keys.Corpus.CancelTask",
    ),
    b(C::Corpus, &[c('a')], "a", A::Add, "keys.Corpus.Add"),
    b(
        C::Global,
        &[c('z')],
        "z",
        A::SwitchLanguage,
        "keys.Global.SwitchLanguage",
    ),
    b(
        C::Lessons,
        &[k(K::Up), c('k')],
        "↑ k",
        A::Up,
        "keys.Lessons.Up",
    ),
    b(
        C::Lessons,
        &[k(K::Down), c('j')],
        "↓ j",
        A::Down,
        "keys.Lessons.Down",
    ),
    b(
        C::Lessons,
        &[
            c('1'),
            c('2'),
            c('3'),
            c('4'),
            c('5'),
            c('6'),
            c('7'),
            c('8'),
            c('9'),
        ],
        "1-9",
        A::LessonStep,
        "keys.Lessons.LessonStep",
    ),
    b(
        C::Lessons,
        &[k(K::PageDown), c(' ')],
        "PgDn Space",
        A::ScrollDown,
        "keys.Lessons.ScrollDown",
    ),
    b(
        C::Lessons,
        &[k(K::PageUp), c('b')],
        "PgUp b",
        A::ScrollUp,
        "keys.Lessons.ScrollUp",
    ),
    b(
        C::Lessons,
        &[k(K::Esc)],
        "Esc",
        A::Lessons,
        "keys.Lessons.Lessons",
    ),
    b(
        C::Global,
        &[c('v')],
        "v",
        A::CycleView,
        "keys.Global.CycleView",
    ),
    b(C::Global, &[c('L')], "L", A::Compare, "keys.Global.Compare"),
    b(
        C::Global,
        &[c('u')],
        "u",
        A::CloseCompare,
        "keys.Global.CloseCompare",
    ),
    b(
        C::Sentences,
        &[k(K::Up), c('k')],
        "↑ k",
        A::Up,
        "keys.Sentences.Up",
    ),
    b(
        C::Sentences,
        &[k(K::Down), c('j')],
        "↓ j",
        A::Down,
        "keys.Sentences.Down",
    ),
    b(
        C::Sentences,
        &[k(K::Enter), c('e')],
        "Enter e",
        A::Edit,
        "keys.Sentences.Edit",
    ),
    b(
        C::Sentences,
        &[c('d'), k(K::Delete)],
        "d Del",
        A::Delete,
        "keys.Sentences.Delete",
    ),
    b(
        C::Sentences,
        &[c('K'), shift(K::Up)],
        "K Shift-↑",
        A::MoveUp,
        "keys.Sentences.MoveUp",
    ),
    b(
        C::Sentences,
        &[c('J'), shift(K::Down)],
        "J Shift-↓",
        A::MoveDown,
        "keys.Sentences.MoveDown",
    ),
    b(
        C::Matrix,
        &[k(K::Up), c('k')],
        "↑ k",
        A::Up,
        "keys.Matrix.Up",
    ),
    b(
        C::Matrix,
        &[k(K::Down), c('j')],
        "↓ j",
        A::Down,
        "keys.Matrix.Down",
    ),
    b(
        C::Matrix,
        &[k(K::Left), c('h')],
        "← h",
        A::Left,
        "keys.Matrix.Left",
    ),
    b(
        C::Matrix,
        &[k(K::Right), c('l')],
        "→ l",
        A::Right,
        "keys.Matrix.Right",
    ),
    b(
        C::Map,
        &[k(K::Up), c('k'), k(K::Left), c('h')],
        "↑ k",
        A::Up,
        "keys.Map.Up",
    ),
    b(
        C::Map,
        &[k(K::Down), c('j'), k(K::Right), c('l')],
        "↓ j",
        A::Down,
        "keys.Map.Down",
    ),
    b(
        C::Form,
        &[k(K::Up), c('k')],
        "↑ k",
        A::FieldUp,
        "keys.Form.FieldUp",
    ),
    b(
        C::Form,
        &[k(K::Down), c('j')],
        "↓ j",
        A::FieldDown,
        "keys.Form.FieldDown",
    ),
    b(
        C::Form,
        &[k(K::Left), c('h')],
        "← h",
        A::FieldPrev,
        "keys.Form.FieldPrev",
    ),
    b(
        C::Form,
        &[k(K::Right), c('l')],
        "→ l",
        A::FieldNext,
        "keys.Form.FieldNext",
    ),
    b(
        C::Form,
        &[k(K::Enter), c('e')],
        "Enter e",
        A::FieldEdit,
        "keys.Form.FieldEdit",
    ),
    b(C::Form, &[c('s')], "s", A::StartRun, "keys.Form.StartRun"),
    b(C::Run, &[c('x')], "x", A::StopRun, "keys.Run.StopRun"),
    b(C::Run, &[c('l')], "l", A::LoadRun, "keys.Run.LoadRun"),
    b(C::Run, &[c('n')], "n", A::NewRun, "keys.Run.NewRun"),
    b(
        C::History,
        &[k(K::Up), c('k')],
        "↑ k",
        A::HistoryUp,
        "keys.History.HistoryUp",
    ),
    b(
        C::History,
        &[k(K::Down), c('j')],
        "↓ j",
        A::HistoryDown,
        "keys.History.HistoryDown",
    ),
    b(
        C::History,
        &[c('l'), k(K::Enter)],
        "l Enter",
        A::LoadRun,
        "keys.History.LoadRun",
    ),
    b(C::History, &[c('n')], "n", A::NewRun, "keys.History.NewRun"),
    b(
        C::History,
        &[c('x')],
        "x",
        A::StopRun,
        "keys.History.StopRun",
    ),
    b(
        C::Help,
        &[k(K::Esc), c('?'), c('q')],
        "Esc ? q",
        A::Close,
        "keys.Help.Close",
    ),
    b(
        C::Demo,
        &[k(K::Up), c('k')],
        "↑ k",
        A::DemoUp,
        "keys.Demo.DemoUp",
    ),
    b(
        C::Demo,
        &[k(K::Down), c('j')],
        "↓ j",
        A::DemoDown,
        "keys.Demo.DemoDown",
    ),
    b(
        C::Demo,
        &[k(K::Enter)],
        "Enter",
        A::DemoLoad,
        "keys.Demo.DemoLoad",
    ),
    b(
        C::Demo,
        &[k(K::Esc), c('q')],
        "Esc q",
        A::Close,
        "keys.Demo.Close",
    ),
    b(
        C::Confirm,
        &[c('k'), c('y')],
        "k y",
        A::ConfirmKeep,
        "keys.Confirm.ConfirmKeep",
    ),
    b(
        C::Confirm,
        &[c('d')],
        "d",
        A::ConfirmDiscard,
        "keys.Confirm.ConfirmDiscard",
    ),
    b(
        C::Confirm,
        &[c('c'), k(K::Esc)],
        "c Esc",
        A::Close,
        "keys.Confirm.Close",
    ),
    b(
        C::Editing,
        &[k(K::Enter)],
        "Enter",
        A::Commit,
        "keys.Editing.Commit",
    ),
    b(
        C::Editing,
        &[k(K::Esc)],
        "Esc",
        A::Cancel,
        "keys.Editing.Cancel",
    ),
    b(
        C::Editing,
        &[k(K::Left)],
        "←",
        A::CursorLeft,
        "keys.Editing.CursorLeft",
    ),
    b(
        C::Editing,
        &[k(K::Right)],
        "→",
        A::CursorRight,
        "keys.Editing.CursorRight",
    ),
    b(
        C::Editing,
        &[k(K::Home), ctrl('a')],
        "Home Ctrl-A",
        A::CursorHome,
        "keys.Editing.CursorHome",
    ),
    b(
        C::Editing,
        &[k(K::End), ctrl('e')],
        "End Ctrl-E",
        A::CursorEnd,
        "keys.Editing.CursorEnd",
    ),
    b(
        C::Editing,
        &[k(K::Backspace)],
        "Backspace",
        A::Backspace,
        "keys.Editing.Backspace",
    ),
    b(
        C::Editing,
        &[k(K::Delete)],
        "Del",
        A::DeleteForward,
        "keys.Editing.DeleteForward",
    ),
    b(
        C::Editing,
        &[ctrl('u')],
        "Ctrl-U",
        A::KillLine,
        "keys.Editing.KillLine",
    ),
    b(
        C::Editing,
        &[ctrl('w')],
        "Ctrl-W",
        A::DeleteWord,
        "keys.Editing.DeleteWord",
    ),
];

fn matches(key: &Key, ev: &KeyEvent) -> bool {
    if key.code != ev.code {
        return false;
    }
    // Upper-case letters and symbols arrive with SHIFT on some terminals and not on others.
    let mods = if matches!(ev.code, KeyCode::Char(_)) {
        ev.modifiers - KeyModifiers::SHIFT
    } else {
        ev.modifiers
    };
    let want = if matches!(key.code, KeyCode::Char(_)) {
        key.mods - KeyModifiers::SHIFT
    } else {
        key.mods
    };
    mods == want
}

/// The action bound to `ev` in `context` (checked first) or, outside text entry, globally.
pub fn lookup(ev: &KeyEvent, context: Context) -> Option<Action> {
    let find = |ctx: Context| {
        BINDINGS
            .iter()
            .filter(|b| b.context == ctx)
            .find(|b| b.keys.iter().any(|key| matches(key, ev)))
            .map(|b| b.action)
    };
    if is_ctrl_c(ev) {
        return Some(Action::Quit);
    }
    match context {
        // These take no global keys: typing, and the pop-ups.
        Context::Editing | Context::Help | Context::Demo | Context::Confirm => find(context),
        ctx => find(ctx).or_else(|| find(Context::Global)),
    }
}

pub fn is_ctrl_c(ev: &KeyEvent) -> bool {
    ev.code == KeyCode::Char('c') && ev.modifiers.contains(KeyModifiers::CONTROL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    #[test]
    fn pane_keys_win_over_global_ones_and_editing_shadows_everything() {
        let j = key(KeyCode::Char('j'), KeyModifiers::NONE);
        assert_eq!(lookup(&j, Context::Sentences), Some(Action::Down));
        let q = key(KeyCode::Char('q'), KeyModifiers::NONE);
        assert_eq!(lookup(&q, Context::Matrix), Some(Action::Quit));
        assert_eq!(
            lookup(&q, Context::Editing),
            None,
            "q is a letter while typing"
        );
        let cc = key(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(lookup(&cc, Context::Editing), Some(Action::Quit));
        let shift_k = key(KeyCode::Char('K'), KeyModifiers::SHIFT);
        assert_eq!(lookup(&shift_k, Context::Sentences), Some(Action::MoveUp));
        let c = key(KeyCode::Char('c'), KeyModifiers::NONE);
        assert_eq!(lookup(&c, Context::Map), Some(Action::SwitchComponents));
        // In the stop question, `y` keeps a checkpoint and `c` carries on; `q` means nothing.
        let y = key(KeyCode::Char('y'), KeyModifiers::NONE);
        assert_eq!(lookup(&y, Context::Confirm), Some(Action::ConfirmKeep));
        assert_eq!(lookup(&c, Context::Confirm), Some(Action::Close));
        assert_eq!(lookup(&q, Context::Confirm), None);
        assert_eq!(lookup(&cc, Context::Confirm), Some(Action::Quit));
    }

    #[test]
    fn every_binding_has_help_and_no_key_is_bound_twice_in_one_context() {
        for (i, a) in BINDINGS.iter().enumerate() {
            assert!(!a.label.is_empty());
            assert!(
                a.help
                    .starts_with(&format!("keys.{:?}.{:?}", a.context, a.action)),
                "{} is not keyed by its context and action",
                a.help
            );
            for bnd in &BINDINGS[i + 1..] {
                if a.context != bnd.context {
                    continue;
                }
                for ka in a.keys {
                    for kb in bnd.keys {
                        assert!(
                            !(ka.code == kb.code && ka.mods == kb.mods),
                            "{:?} bound twice in {:?}",
                            ka.code,
                            a.context
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_help_text_is_in_both_languages_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for b in BINDINGS {
            assert!(seen.insert(b.help), "{} used twice", b.help);
            for lang in [Lang::En, Lang::Zh] {
                let text = crate::tui::i18n::lookup(lang, b.help);
                assert!(
                    text.as_ref().is_some_and(|t| !t.is_empty() && t != b.help),
                    "{} has no {lang:?} text",
                    b.help
                );
            }
        }
        for ctx in [
            Context::Global,
            Context::Sentences,
            Context::Matrix,
            Context::Map,
            Context::Form,
            Context::Run,
            Context::History,
            Context::Editing,
            Context::Help,
            Context::Demo,
            Context::Confirm,
            Context::Lessons,
        ] {
            for lang in [Lang::En, Lang::Zh] {
                let key = format!("context.{ctx:?}");
                assert!(crate::tui::i18n::lookup(lang, &key).is_some(), "{key}");
            }
        }
        assert_eq!(
            BINDINGS[0].help(Lang::En),
            "quit (always, even while typing)"
        );
    }

    #[test]
    fn z_switches_the_language_everywhere_outside_text_entry() {
        let z = key(KeyCode::Char('z'), KeyModifiers::NONE);
        for ctx in [
            Context::Sentences,
            Context::Matrix,
            Context::Map,
            Context::Form,
            Context::Run,
            Context::History,
            Context::Lessons,
        ] {
            assert_eq!(lookup(&z, ctx), Some(Action::SwitchLanguage), "{ctx:?}");
        }
        assert_eq!(
            lookup(&z, Context::Editing),
            None,
            "z is a letter while typing"
        );
    }
}
