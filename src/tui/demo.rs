//! Demo sentence sets shipped in `assets/demo/` and built into the binary; their names and
//! descriptions are in `locales/app.yml` (`demo.<key>.name`, `demo.<key>.description`).

use std::borrow::Cow;

use super::i18n::tr;
use crate::lessons::Lang;

pub struct DemoSet {
    /// The set's key in the locale file.
    pub key: &'static str,
    text: &'static str,
}

impl DemoSet {
    pub fn name(&self, lang: Lang) -> Cow<'static, str> {
        tr(lang, &format!("demo.{}.name", self.key))
    }

    pub fn description(&self, lang: Lang) -> Cow<'static, str> {
        tr(lang, &format!("demo.{}.description", self.key))
    }

    pub fn sentences(&self) -> Vec<String> {
        self.text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

pub const DEMO_SETS: &[DemoSet] = &[
    DemoSet {
        key: "paraphrases",
        text: include_str!("../../assets/demo/paraphrases.txt"),
    },
    DemoSet {
        key: "negation",
        text: include_str!("../../assets/demo/negation.txt"),
    },
    DemoSet {
        key: "chinese",
        text: include_str!("../../assets/demo/chinese.txt"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_has_sentences() {
        for set in DEMO_SETS {
            assert!(set.sentences().len() >= 6, "{}", set.key);
            for lang in [Lang::En, Lang::Zh] {
                for what in ["name", "description"] {
                    let key = format!("demo.{}.{what}", set.key);
                    assert!(crate::tui::i18n::lookup(lang, &key).is_some(), "{key}");
                }
            }
        }
    }
}
