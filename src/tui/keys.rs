//! The key map: one table that both dispatches keys and generates the help overlay.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

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
}

impl Context {
    pub fn title(self) -> &'static str {
        match self {
            Context::Global => "Everywhere",
            Context::Sentences => "Sentences pane",
            Context::Matrix => "Similarity pane",
            Context::Map => "Map pane",
            Context::Form => "Training form",
            Context::Run => "Training run",
            Context::History => "Run history",
            Context::Editing => "While typing",
            Context::Help => "This help",
            Context::Demo => "Demo sets",
            Context::Confirm => "Stopping a run",
            Context::Lessons => "Lessons",
        }
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
    pub help: &'static str,
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
        "quit (always, even while typing)",
    ),
    b(C::Global, &[c('q')], "q", A::Quit, "quit"),
    b(C::Global, &[k(K::Tab)], "Tab", A::NextPane, "next pane"),
    b(
        C::Global,
        &[k(K::BackTab), shift(K::BackTab)],
        "Shift-Tab",
        A::PrevPane,
        "previous pane",
    ),
    b(C::Global, &[c('?')], "?", A::Help, "this help"),
    b(C::Global, &[c('a')], "a", A::Add, "add a sentence"),
    b(
        C::Global,
        &[c('p')],
        "p",
        A::NextPooling,
        "next pooling mode (cls, mean, max, ...)",
    ),
    b(
        C::Global,
        &[c('P')],
        "P",
        A::NextPrompt,
        "next prompt of the model (none, query, passage, ...)",
    ),
    b(
        C::Global,
        &[c('m')],
        "m",
        A::LoadModel,
        "load another model (folder or Hub id)",
    ),
    b(C::Global, &[c('D')], "D", A::DemoSets, "demo sentence sets"),
    b(
        C::Global,
        &[c('o')],
        "o",
        A::OpenFile,
        "open a sentence file (one per line)",
    ),
    b(
        C::Global,
        &[c('w')],
        "w",
        A::SaveFile,
        "save the sentences to a file",
    ),
    b(
        C::Global,
        &[c('c')],
        "c",
        A::SwitchComponents,
        "map axes: PC1/PC2 or PC2/PC3",
    ),
    b(
        C::Global,
        &[c('t')],
        "t",
        A::ToggleScreen,
        "training pane / explorer",
    ),
    b(
        C::Global,
        &[c('b')],
        "b",
        A::PoolingsSideBySide,
        "every pooling side by side (selected sentence and its neighbour, or the matrix cell)",
    ),
    b(
        C::Global,
        &[c('Q')],
        "Q",
        A::PromptsSideBySide,
        "prompts side by side: the pair under each of the model's prompts (query, passage, ...)",
    ),
    b(
        C::Global,
        &[c('C')],
        "C",
        A::Cost,
        "cost: N bi-encoder passes against N(N-1)/2 cross-encoder passes, timed now",
    ),
    b(
        C::Global,
        &[c('W')],
        "W",
        A::Lessons,
        "workshop lessons (English and Chinese) / back",
    ),
    b(
        C::Lessons,
        &[k(K::Up), c('k')],
        "↑ k",
        A::Up,
        "previous lesson",
    ),
    b(
        C::Lessons,
        &[k(K::Down), c('j')],
        "↓ j",
        A::Down,
        "next lesson",
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
        "run that step of the lesson (on the current model)",
    ),
    b(
        C::Lessons,
        &[k(K::PageDown), c(' ')],
        "PgDn Space",
        A::ScrollDown,
        "scroll the lesson down",
    ),
    b(
        C::Lessons,
        &[k(K::PageUp), c('b')],
        "PgUp b",
        A::ScrollUp,
        "scroll the lesson up",
    ),
    b(
        C::Lessons,
        &[c('z')],
        "z",
        A::SwitchLanguage,
        "English / 中文",
    ),
    b(C::Lessons, &[k(K::Esc)], "Esc", A::Lessons, "back"),
    b(
        C::Global,
        &[c('v')],
        "v",
        A::CycleView,
        "compare: base / fine-tuned / difference",
    ),
    b(
        C::Global,
        &[c('L')],
        "L",
        A::Compare,
        "load a fine-tuned model or checkpoint to compare",
    ),
    b(
        C::Global,
        &[c('u')],
        "u",
        A::CloseCompare,
        "close the comparison",
    ),
    b(
        C::Sentences,
        &[k(K::Up), c('k')],
        "↑ k",
        A::Up,
        "previous sentence",
    ),
    b(
        C::Sentences,
        &[k(K::Down), c('j')],
        "↓ j",
        A::Down,
        "next sentence",
    ),
    b(
        C::Sentences,
        &[k(K::Enter), c('e')],
        "Enter e",
        A::Edit,
        "edit the sentence",
    ),
    b(
        C::Sentences,
        &[c('d'), k(K::Delete)],
        "d Del",
        A::Delete,
        "delete the sentence",
    ),
    b(
        C::Sentences,
        &[c('K'), shift(K::Up)],
        "K Shift-↑",
        A::MoveUp,
        "move the sentence up",
    ),
    b(
        C::Sentences,
        &[c('J'), shift(K::Down)],
        "J Shift-↓",
        A::MoveDown,
        "move the sentence down",
    ),
    b(C::Matrix, &[k(K::Up), c('k')], "↑ k", A::Up, "cell above"),
    b(
        C::Matrix,
        &[k(K::Down), c('j')],
        "↓ j",
        A::Down,
        "cell below",
    ),
    b(
        C::Matrix,
        &[k(K::Left), c('h')],
        "← h",
        A::Left,
        "cell to the left",
    ),
    b(
        C::Matrix,
        &[k(K::Right), c('l')],
        "→ l",
        A::Right,
        "cell to the right",
    ),
    b(
        C::Map,
        &[k(K::Up), c('k'), k(K::Left), c('h')],
        "↑ k",
        A::Up,
        "previous sentence",
    ),
    b(
        C::Map,
        &[k(K::Down), c('j'), k(K::Right), c('l')],
        "↓ j",
        A::Down,
        "next sentence",
    ),
    b(
        C::Form,
        &[k(K::Up), c('k')],
        "↑ k",
        A::FieldUp,
        "previous field",
    ),
    b(
        C::Form,
        &[k(K::Down), c('j')],
        "↓ j",
        A::FieldDown,
        "next field",
    ),
    b(
        C::Form,
        &[k(K::Left), c('h')],
        "← h",
        A::FieldPrev,
        "previous choice (loss, pooling, device)",
    ),
    b(
        C::Form,
        &[k(K::Right), c('l')],
        "→ l",
        A::FieldNext,
        "next choice",
    ),
    b(
        C::Form,
        &[k(K::Enter), c('e')],
        "Enter e",
        A::FieldEdit,
        "edit the field",
    ),
    b(
        C::Form,
        &[c('s')],
        "s",
        A::StartRun,
        "start the run (checks every field first)",
    ),
    b(
        C::Run,
        &[c('x')],
        "x",
        A::StopRun,
        "stop the run (asks about a checkpoint)",
    ),
    b(
        C::Run,
        &[c('l')],
        "l",
        A::LoadRun,
        "load the result next to the base model",
    ),
    b(C::Run, &[c('n')], "n", A::NewRun, "a new run (the form)"),
    b(
        C::History,
        &[k(K::Up), c('k')],
        "↑ k",
        A::HistoryUp,
        "previous run",
    ),
    b(
        C::History,
        &[k(K::Down), c('j')],
        "↓ j",
        A::HistoryDown,
        "next run",
    ),
    b(
        C::History,
        &[c('l'), k(K::Enter)],
        "l Enter",
        A::LoadRun,
        "load that run's model next to the base model",
    ),
    b(
        C::History,
        &[c('n')],
        "n",
        A::NewRun,
        "a new run (the form)",
    ),
    b(
        C::History,
        &[c('x')],
        "x",
        A::StopRun,
        "stop the running run",
    ),
    b(
        C::Help,
        &[k(K::Esc), c('?'), c('q')],
        "Esc ? q",
        A::Close,
        "close (any other key too)",
    ),
    b(
        C::Demo,
        &[k(K::Up), c('k')],
        "↑ k",
        A::DemoUp,
        "previous set",
    ),
    b(
        C::Demo,
        &[k(K::Down), c('j')],
        "↓ j",
        A::DemoDown,
        "next set",
    ),
    b(
        C::Demo,
        &[k(K::Enter)],
        "Enter",
        A::DemoLoad,
        "load the set (replaces the sentences)",
    ),
    b(
        C::Demo,
        &[k(K::Esc), c('q')],
        "Esc q",
        A::Close,
        "close (any other key too)",
    ),
    b(
        C::Confirm,
        &[c('k'), c('y')],
        "k y",
        A::ConfirmKeep,
        "stop at the end of this step, keeping a checkpoint",
    ),
    b(
        C::Confirm,
        &[c('d')],
        "d",
        A::ConfirmDiscard,
        "stop without a checkpoint",
    ),
    b(
        C::Confirm,
        &[c('c'), k(K::Esc)],
        "c Esc",
        A::Close,
        "carry on: do not stop or quit (any other key too)",
    ),
    b(C::Editing, &[k(K::Enter)], "Enter", A::Commit, "accept"),
    b(C::Editing, &[k(K::Esc)], "Esc", A::Cancel, "cancel"),
    b(
        C::Editing,
        &[k(K::Left)],
        "←",
        A::CursorLeft,
        "cursor left (by character)",
    ),
    b(
        C::Editing,
        &[k(K::Right)],
        "→",
        A::CursorRight,
        "cursor right",
    ),
    b(
        C::Editing,
        &[k(K::Home), ctrl('a')],
        "Home Ctrl-A",
        A::CursorHome,
        "start of line",
    ),
    b(
        C::Editing,
        &[k(K::End), ctrl('e')],
        "End Ctrl-E",
        A::CursorEnd,
        "end of line",
    ),
    b(
        C::Editing,
        &[k(K::Backspace)],
        "Backspace",
        A::Backspace,
        "delete before the cursor",
    ),
    b(
        C::Editing,
        &[k(K::Delete)],
        "Del",
        A::DeleteForward,
        "delete at the cursor",
    ),
    b(
        C::Editing,
        &[ctrl('u')],
        "Ctrl-U",
        A::KillLine,
        "delete to the start of the line",
    ),
    b(
        C::Editing,
        &[ctrl('w')],
        "Ctrl-W",
        A::DeleteWord,
        "delete the word before the cursor",
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
            assert!(!a.help.is_empty() && !a.label.is_empty());
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
}
