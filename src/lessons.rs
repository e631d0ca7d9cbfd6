//! Lessons for workshops: short texts in English and Chinese, a formula, sentences, and the steps
//! a teacher runs on the live model (load the sentences, switch pooling or prompt, compare with a
//! fine-tuned model, prepare a training run). Lesson files are TOML; the ones in
//! `assets/lessons/` are built in, and `--lesson FILE` opens another. Knows nothing of terminals.
//!
//! ```toml
//! title.en = "Pooling"
//! title.zh = "池化"
//! text.en = "..."
//! text.zh = "..."
//! formula = "mean = (1/n) Σ h_i"          # optional, drawn as it is written
//! sentences = ["A man is playing a guitar.", "..."]
//!
//! [[step]]
//! label.en = "Max pooling"
//! label.zh = "最大池化"
//! pooling = "max"                          # or: sentences = true, prompt = "query" / "none",
//!                                          # compare = "MODEL", train = { data, loss, eval, epochs },
//!                                          # demo = "pooling" / "cost" / "prompts" /
//!                                          #        "pipeline" / "dropout"
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::model::PoolingMode;

/// The language lessons (and, in time, the app) are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Zh,
}

impl Lang {
    /// From `--lang` or the environment's `LANG` / `LC_ALL` (`zh_CN.UTF-8` is Chinese).
    pub fn from_code(code: &str) -> Option<Self> {
        let c = code.trim().to_ascii_lowercase();
        if c.starts_with("zh") {
            Some(Lang::Zh)
        } else if c.starts_with("en") || c == "c" || c == "posix" || c.is_empty() {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// The language the environment asks for (`LC_ALL`, then `LANG`); English otherwise.
    pub fn from_env() -> Self {
        ["LC_ALL", "LANG"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find(|v| !v.is_empty())
            .and_then(|v| Lang::from_code(&v))
            .unwrap_or_default()
    }

    pub fn other(self) -> Self {
        match self {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }
}

/// A text in both languages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub en: String,
    pub zh: String,
}

impl Text {
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::En => &self.en,
            Lang::Zh => &self.zh,
        }
    }
}

/// A training run a lesson prepares in the training form (the teacher starts it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainStep {
    pub data: String,
    pub loss: String,
    #[serde(default)]
    pub eval: Option<String>,
    #[serde(default)]
    pub epochs: Option<u32>,
}

/// What a step does to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Show the lesson's sentences in the explorer.
    Sentences,
    Pooling(PoolingMode),
    /// A prompt name of the model; `None`: no prompt.
    Prompt(Option<String>),
    /// Load a model (folder or Hub id) beside the current one, to compare.
    Compare(String),
    Train(TrainStep),
    /// The similarity of the selected pair under every pooling mode.
    PoolingTable,
    /// Bi-encoder against cross-encoder cost on the explorer's sentences, timed.
    Cost,
    /// The selected pair under each of the model's prompts.
    PromptTable,
    /// The selected sentence through every step of the model.
    Pipeline,
    /// The selected sentence encoded many times with dropout on, drawn on the map (SimCSE).
    DropoutCloud,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub label: Text,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lesson {
    /// Where it came from (a file name), for messages.
    pub source: String,
    pub title: Text,
    pub text: Text,
    pub formula: Option<String>,
    pub sentences: Vec<String>,
    pub steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    label: Text,
    #[serde(default)]
    sentences: Option<bool>,
    #[serde(default)]
    pooling: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    compare: Option<String>,
    #[serde(default)]
    train: Option<TrainStep>,
    /// A live demonstration: `pooling` (every pooling side by side), `cost`, `prompts`,
    /// `pipeline` (the selected sentence through every step) or `dropout` (SimCSE's copies).
    #[serde(default)]
    demo: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLesson {
    title: Text,
    text: Text,
    #[serde(default)]
    formula: Option<String>,
    #[serde(default)]
    sentences: Vec<String>,
    #[serde(default)]
    step: Vec<RawStep>,
}

/// The lessons built into the binary, in teaching order (the files in `assets/lessons/`).
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "01-embeddings.toml",
        include_str!("../assets/lessons/01-embeddings.toml"),
    ),
    (
        "02-bi-encoder.toml",
        include_str!("../assets/lessons/02-bi-encoder.toml"),
    ),
    (
        "03-pooling.toml",
        include_str!("../assets/lessons/03-pooling.toml"),
    ),
    (
        "04-dense.toml",
        include_str!("../assets/lessons/04-dense.toml"),
    ),
    (
        "05-losses.toml",
        include_str!("../assets/lessons/05-losses.toml"),
    ),
    (
        "06-cross-encoder-cost.toml",
        include_str!("../assets/lessons/06-cross-encoder-cost.toml"),
    ),
    (
        "07-simcse.toml",
        include_str!("../assets/lessons/07-simcse.toml"),
    ),
    (
        "08-e5-prompts.toml",
        include_str!("../assets/lessons/08-e5-prompts.toml"),
    ),
    (
        "09-sentence-t5.toml",
        include_str!("../assets/lessons/09-sentence-t5.toml"),
    ),
    (
        "10-sbert-v2.toml",
        include_str!("../assets/lessons/10-sbert-v2.toml"),
    ),
    (
        "11-negation-fine-tune.toml",
        include_str!("../assets/lessons/11-negation-fine-tune.toml"),
    ),
];

/// Reads a lesson from its TOML text; errors name `source`, and the step and field at fault.
pub fn parse(source: &str, text: &str) -> Result<Lesson, String> {
    let raw: RawLesson = toml::from_str(text).map_err(|e| format!("{source}: {e}"))?;
    let mut steps = Vec::new();
    for (i, s) in raw.step.into_iter().enumerate() {
        let at = format!("{source}: step {}", i + 1);
        let mut actions = Vec::new();
        if s.sentences == Some(true) {
            actions.push(Action::Sentences);
        }
        if let Some(p) = s.pooling {
            let mode = p
                .parse::<PoolingMode>()
                .map_err(|e| format!("{at}: pooling: {e}"))?;
            actions.push(Action::Pooling(mode));
        }
        if let Some(p) = s.prompt {
            let p = p.trim().to_string();
            actions.push(Action::Prompt((p != "none" && !p.is_empty()).then_some(p)));
        }
        if let Some(m) = s.compare {
            if m.trim().is_empty() {
                return Err(format!("{at}: compare: an empty model name"));
            }
            actions.push(Action::Compare(m));
        }
        if let Some(t) = s.train {
            if t.data.trim().is_empty() {
                return Err(format!("{at}: train.data: an empty file name"));
            }
            t.loss
                .parse::<crate::train::losses::LossKind>()
                .map_err(|e| format!("{at}: train.loss: {e}"))?;
            actions.push(Action::Train(t));
        }
        if let Some(d) = s.demo {
            match d.as_str() {
                "pooling" => actions.push(Action::PoolingTable),
                "cost" => actions.push(Action::Cost),
                "prompts" => actions.push(Action::PromptTable),
                "pipeline" => actions.push(Action::Pipeline),
                "dropout" => actions.push(Action::DropoutCloud),
                other => {
                    return Err(format!(
                        "{at}: demo: `{other}` is not a demonstration \
                         (pooling, cost, prompts, pipeline, dropout)"
                    ));
                }
            }
        }
        if actions.len() != 1 {
            return Err(format!(
                "{at}: a step does one thing: sentences = true, pooling, prompt, compare, \
                 train or demo (found {})",
                actions.len()
            ));
        }
        steps.push(Step {
            label: s.label,
            action: actions.remove(0),
        });
    }
    if steps.iter().any(|s| s.action == Action::Sentences) && raw.sentences.is_empty() {
        return Err(format!(
            "{source}: sentences: a step shows the lesson's sentences, but it has none"
        ));
    }
    if steps.len() > 9 {
        return Err(format!(
            "{source}: {} steps; at most 9 (keys 1 to 9)",
            steps.len()
        ));
    }
    Ok(Lesson {
        source: source.to_string(),
        title: raw.title,
        text: raw.text,
        formula: raw.formula.map(|f| f.trim_matches('\n').to_string()),
        sentences: raw.sentences,
        steps,
    })
}

/// Reads a lesson file.
pub fn load(path: &Path) -> Result<Lesson, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// The built-in lessons.
pub fn built_in() -> Vec<Lesson> {
    BUILT_IN
        .iter()
        .map(|(name, text)| {
            parse(&format!("assets/lessons/{name}"), text)
                .unwrap_or_else(|e| panic!("a built-in lesson: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_lesson_reads_and_has_both_languages() {
        let lessons = built_in();
        assert_eq!(lessons.len(), BUILT_IN.len());
        for l in &lessons {
            for lang in [Lang::En, Lang::Zh] {
                assert!(!l.title.get(lang).trim().is_empty(), "{}", l.source);
                assert!(!l.text.get(lang).trim().is_empty(), "{}", l.source);
                for s in &l.steps {
                    assert!(!s.label.get(lang).trim().is_empty(), "{}", l.source);
                }
            }
            assert!(!l.steps.is_empty(), "{}: no step to run", l.source);
        }
    }

    #[test]
    fn the_files_in_assets_are_the_built_in_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/lessons");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        names.sort();
        let built: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, built);
    }

    #[test]
    fn a_step_of_each_kind() {
        let l = parse(
            "x.toml",
            r#"
title = { en = "T", zh = "标题" }
text = { en = "A", zh = "甲" }
formula = "\ny = f(x)\n"
sentences = ["a", "b"]
[[step]]
label = { en = "show", zh = "显示" }
sentences = true
[[step]]
label = { en = "max", zh = "最大" }
pooling = "max"
[[step]]
label = { en = "q", zh = "q" }
prompt = "query"
[[step]]
label = { en = "no prompt", zh = "无" }
prompt = "none"
[[step]]
label = { en = "cmp", zh = "比较" }
compare = "my-model"
[[step]]
label = { en = "train", zh = "训练" }
train = { data = "d.csv", loss = "cosine", eval = "e.csv", epochs = 2 }
"#,
        )
        .unwrap();
        assert_eq!(l.formula.as_deref(), Some("y = f(x)"));
        let actions: Vec<Action> = l.steps.into_iter().map(|s| s.action).collect();
        assert_eq!(
            actions,
            vec![
                Action::Sentences,
                Action::Pooling(PoolingMode::Max),
                Action::Prompt(Some("query".into())),
                Action::Prompt(None),
                Action::Compare("my-model".into()),
                Action::Train(TrainStep {
                    data: "d.csv".into(),
                    loss: "cosine".into(),
                    eval: Some("e.csv".into()),
                    epochs: Some(2),
                }),
            ]
        );
    }

    #[test]
    fn bad_lessons_name_the_file_step_and_field() {
        let head = "title = { en = \"T\", zh = \"t\" }\ntext = { en = \"A\", zh = \"a\" }\n";
        let bad = |body: &str| parse("l.toml", &format!("{head}{body}")).unwrap_err();
        let e = bad("[[step]]\nlabel = { en = \"x\", zh = \"x\" }\npooling = \"median\"\n");
        assert!(e.starts_with("l.toml: step 1: pooling:"), "{e}");
        let e = bad("[[step]]\nlabel = { en = \"x\", zh = \"x\" }\n");
        assert!(e.contains("step 1: a step does one thing"), "{e}");
        let e = bad("[[step]]\nlabel = { en = \"x\", zh = \"x\" }\nsentences = true\n");
        assert!(e.contains("has none"), "{e}");
        let e = bad("[[step]]\nlabel = { en = \"x\" }\nsentences = true\n");
        assert!(e.starts_with("l.toml:") && e.contains("zh"), "{e}");
        let e = bad(
            "[[step]]\nlabel = { en = \"x\", zh = \"x\" }\ntrain = { data = \"d.csv\", loss = \"hinge\" }\n",
        );
        assert!(e.starts_with("l.toml: step 1: train.loss:"), "{e}");
        let e = bad("colour = 3\n");
        assert!(e.contains("colour"), "{e}");
        let e = parse("l.toml", "title = 3").unwrap_err();
        assert!(e.starts_with("l.toml:"), "{e}");
    }

    #[test]
    fn languages_from_the_environment_codes() {
        assert_eq!(Lang::from_code("zh_CN.UTF-8"), Some(Lang::Zh));
        assert_eq!(Lang::from_code("zh"), Some(Lang::Zh));
        assert_eq!(Lang::from_code("en_GB.UTF-8"), Some(Lang::En));
        assert_eq!(Lang::from_code("C.UTF-8"), None);
        assert_eq!(Lang::from_code("C"), Some(Lang::En));
        assert_eq!(Lang::from_code("fr"), None);
    }
}
