//! The words of the interface in the app's language, from `locales/app.yml` (rust-i18n, built
//! into the binary). The language is always passed explicitly, never the crate's global locale:
//! the app holds one [`Lang`], and tests draw both languages at once on parallel threads.

use std::borrow::Cow;
use std::fmt::Display;

use crate::lessons::Lang;

/// The text of `key` in `lang` (English when the key has no `lang` text; the key itself when it
/// has none at all).
pub fn tr(lang: Lang, key: &str) -> Cow<'static, str> {
    let text: Cow<'_, str> = rust_i18n::t!(key, locale = lang.code());
    Cow::Owned(text.into_owned())
}

/// The text of `key` in `lang` with its `%{name}` placeholders filled in.
pub fn tr_with(lang: Lang, key: &str, args: &[(&str, &dyn Display)]) -> String {
    let names: Vec<&str> = args.iter().map(|(n, _)| *n).collect();
    let values: Vec<String> = args.iter().map(|(_, v)| v.to_string()).collect();
    rust_i18n::replace_patterns(&tr(lang, key), &names, &values)
}

/// The text of `key` in `lang`, or `fallback` when the locale file does not have the key (words
/// that come from the engine: a new setting or loss shows its English name until translated).
pub fn tr_or(lang: Lang, key: &str, fallback: &'static str) -> Cow<'static, str> {
    match lookup(lang, key) {
        Some(t) => Cow::Owned(t),
        None => Cow::Borrowed(fallback),
    }
}

/// The text of `key` in `lang` exactly (no fallback to English), if the locale file has it.
pub fn lookup(lang: Lang, key: &str) -> Option<String> {
    crate::_rust_i18n_backend()
        .translate(lang.code(), key)
        .map(Cow::into_owned)
}

/// Every key of the locale file with the languages it has text in.
pub fn keys() -> Vec<(String, Vec<String>)> {
    let backend = crate::_rust_i18n_backend();
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for locale in backend.available_locales() {
        for (key, _) in backend.messages_for_locale(&locale).unwrap_or_default() {
            out.entry(key.into_owned())
                .or_default()
                .push(locale.to_string());
        }
    }
    out.into_iter().collect()
}

/// `s` padded with spaces to `width` terminal cells (CJK characters take two); never cut.
pub fn pad_right(s: &str, width: usize) -> String {
    let w = crate::text::width(s);
    format!("{s}{}", " ".repeat(width.saturating_sub(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_take_the_language_given_and_fill_placeholders() {
        assert_eq!(tr(Lang::En, "status.ready"), "ready");
        assert_eq!(tr(Lang::Zh, "status.ready"), "就绪");
        assert_eq!(tr_with(Lang::En, "status.dim", &[("n", &384)]), "dim 384");
        assert_eq!(tr_with(Lang::Zh, "status.dim", &[("n", &384)]), "维度 384");
        assert_eq!(tr_or(Lang::Zh, "no.such.key", "fallback"), "fallback");
        assert_eq!(lookup(Lang::Zh, "no.such.key"), None);
    }

    #[test]
    fn every_key_has_english_and_chinese() {
        let locales: Vec<String> = rust_i18n::available_locales!()
            .into_iter()
            .map(Cow::into_owned)
            .collect();
        assert_eq!(
            locales,
            ["en", "zh"],
            "a misspelt language in locales/app.yml?"
        );
        let keys = keys();
        assert!(keys.len() > 200, "{} keys", keys.len());
        for (key, langs) in &keys {
            assert_eq!(langs, &["en", "zh"], "{key}");
            for lang in [Lang::En, Lang::Zh] {
                let text = lookup(lang, key).unwrap();
                assert!(!text.trim().is_empty(), "{key} is empty in {lang:?}");
                assert!(
                    !text.contains('%') || text.contains("%{"),
                    "{key}: a bare % in {lang:?}"
                );
            }
            // The same placeholders in both languages.
            let holes = |t: &str| {
                let mut v: Vec<String> = t
                    .split("%{")
                    .skip(1)
                    .filter_map(|r| r.split_once('}').map(|(n, _)| n.to_string()))
                    .collect();
                v.sort();
                v.dedup();
                v
            };
            assert_eq!(
                holes(&lookup(Lang::En, key).unwrap()),
                holes(&lookup(Lang::Zh, key).unwrap()),
                "{key}"
            );
        }
    }

    /// The English of words the engine owns is the engine's own, so English screens read the
    /// same as the engine's messages.
    #[test]
    fn english_agrees_with_the_engine() {
        use crate::analysis::pca::PcaError;
        use crate::train::data::DataKind;
        use crate::train::losses::LossKind;
        use crate::train::rules::Setting;
        use crate::tui::ui::training::{data_description, loss_explanation, setting_label};
        let settings = [
            Setting::Model,
            Setting::Data,
            Setting::Loss,
            Setting::Pooling,
            Setting::Epochs,
            Setting::BatchSize,
            Setting::Lr,
            Setting::WarmupRatio,
            Setting::WeightDecay,
            Setting::MaxGradNorm,
            Setting::MaxSeqLength,
            Setting::Seed,
            Setting::Device,
            Setting::Eval,
            Setting::EvalSteps,
            Setting::Teacher,
            Setting::Output,
            Setting::CheckpointSteps,
            Setting::KeepCheckpoints,
            Setting::TripletDistance,
            Setting::Margin,
            Setting::Scale,
            Setting::Prompts,
            Setting::MatryoshkaDims,
            Setting::MatryoshkaWeights,
            Setting::AddDense,
            Setting::DenseActivation,
            Setting::GradientAccumulation,
            Setting::MiniBatchSize,
            Setting::Augment,
            Setting::EdaRates,
            Setting::BackTranslation,
            Setting::Crops,
            Setting::Adversarial,
        ];
        for f in settings {
            assert_eq!(
                lookup(Lang::En, &format!("setting.{f:?}")).unwrap(),
                f.label()
            );
            assert_ne!(setting_label(f, Lang::Zh), f.label(), "{f:?}");
        }
        for l in LossKind::ALL {
            assert_eq!(
                lookup(Lang::En, &format!("loss.{l:?}")).unwrap(),
                l.explain()
            );
            assert_ne!(loss_explanation(l, Lang::Zh), l.explain(), "{l:?}");
        }
        for d in [
            DataKind::ScoredPairs,
            DataKind::LabeledPairs,
            DataKind::Nli,
            DataKind::Pairs,
            DataKind::Triplets,
            DataKind::MarginTriplets,
            DataKind::Texts,
            DataKind::Parallel,
        ] {
            assert_eq!(
                lookup(Lang::En, &format!("data.{d:?}")).unwrap(),
                d.describe()
            );
            assert_ne!(data_description(d, Lang::Zh), d.describe(), "{d:?}");
        }
        assert_eq!(
            tr_with(Lang::En, "map.too_few", &[("n", &2)]),
            PcaError::TooFew(2).to_string()
        );
        assert_eq!(
            tr(Lang::En, "map.no_spread"),
            PcaError::NoSpread.to_string()
        );
        assert_eq!(
            tr(Lang::En, "map.non_finite"),
            PcaError::NonFinite.to_string()
        );
    }

    #[test]
    fn padding_counts_cells() {
        assert_eq!(pad_right("ab", 4), "ab  ");
        assert_eq!(pad_right("模型", 6), "模型  ");
        assert_eq!(pad_right("toolong", 3), "toolong");
    }
}
