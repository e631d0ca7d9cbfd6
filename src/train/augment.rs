//! Data augmentation (SBERT v2): EDA (Wei & Zou 2019: synonym replacement, random insertion,
//! random swap, random deletion) and back-translation from a parallel file the user gives. Each
//! row gets `copies` augmented copies, each text column changed independently and the label
//! kept; the originals stay. Seeded: the same seed gives the same rows.
//!
//! The synonyms are `assets/synonyms/en.txt` (ours, CC0 1.0): groups of everyday English words.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::data::{self, DataError, DataKind, Dataset, Example};

/// How rows are augmented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Augmented copies of each row (the original is kept).
    pub copies: usize,
    /// EDA's rates: synonym replacement, random insertion and random swap change
    /// `max(1, rate × words)` words; random deletion drops each word with its rate. A copy uses
    /// one of the operations whose rate is above 0, drawn at random; all 0: no EDA.
    pub eda: [f64; 4],
    /// A parallel file (`source, translation`) whose translations are paraphrases of the
    /// sources (back-translations): a text found as a source is replaced by one of them.
    pub back_translation: Option<PathBuf>,
}

impl Augment {
    /// EDA's suggested rates (alpha 0.1 for each operation).
    pub const DEFAULT_EDA: [f64; 4] = [0.1, 0.1, 0.1, 0.1];

    /// Reads EDA's rates as typed: four comma-separated numbers `SR,RI,RS,RD`.
    pub fn parse_rates(s: &str) -> Result<[f64; 4], String> {
        let v: Vec<f64> = s
            .split(',')
            .map(|x| x.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("`{s}`: {e}"))?;
        v.try_into()
            .map_err(|v: Vec<f64>| format!("four rates SR,RI,RS,RD, not {}", v.len()))
    }

    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} augmented copies of each row", self.copies)];
        if self.eda.iter().any(|r| *r > 0.0) {
            parts.push(format!(
                "EDA (synonym replacement {}, random insertion {}, random swap {}, random deletion {})",
                self.eda[0], self.eda[1], self.eda[2], self.eda[3]
            ));
        }
        if let Some(p) = &self.back_translation {
            parts.push(format!("back-translation from {}", p.display()));
        }
        parts.join("; ")
    }
}

/// Synonym groups: each word's synonyms are the other words of its groups.
#[derive(Debug, Clone, Default)]
pub struct Synonyms(HashMap<String, Vec<String>>);

impl Synonyms {
    /// The shipped English list.
    pub fn english() -> Self {
        Self::parse(include_str!("../../assets/synonyms/en.txt"))
    }

    pub fn parse(text: &str) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let group: Vec<String> = line
                .split(',')
                .map(|w| w.trim().to_lowercase())
                .filter(|w| !w.is_empty())
                .collect();
            for w in &group {
                let syns = map.entry(w.clone()).or_default();
                for other in &group {
                    if other != w && !syns.contains(other) {
                        syns.push(other.clone());
                    }
                }
            }
        }
        Self(map)
    }

    pub fn of(&self, word: &str) -> &[String] {
        self.0.get(word).map_or(&[], Vec::as_slice)
    }
}

/// A word split into its leading punctuation, its letters and its trailing punctuation, so that
/// "Dog," is looked up as "dog" and a synonym keeps the comma and the capital.
fn split_word(w: &str) -> (&str, &str, &str) {
    let start = w.find(|c: char| c.is_alphanumeric()).unwrap_or(w.len());
    let end = w.rfind(|c: char| c.is_alphanumeric()).map_or(start, |i| {
        i + w[i..].chars().next().map_or(1, char::len_utf8)
    });
    (&w[..start], &w[start..end.max(start)], &w[end.max(start)..])
}

fn with_case_of(model: &str, word: &str) -> String {
    if model.chars().next().is_some_and(char::is_uppercase) {
        let mut c = word.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    } else {
        word.to_string()
    }
}

/// The EDA operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    SynonymReplacement,
    RandomInsertion,
    RandomSwap,
    RandomDeletion,
}

const OPERATIONS: [Operation; 4] = [
    Operation::SynonymReplacement,
    Operation::RandomInsertion,
    Operation::RandomSwap,
    Operation::RandomDeletion,
];

/// One EDA operation on `sentence` at `rate`.
pub fn eda(
    sentence: &str,
    op: Operation,
    rate: f64,
    synonyms: &Synonyms,
    rng: &mut impl Rng,
) -> String {
    let mut words: Vec<String> = sentence.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        return sentence.to_string();
    }
    let n = ((rate * words.len() as f64) as usize).max(1);
    let syns_of = |w: &str| synonyms.of(&split_word(w).1.to_lowercase()).to_vec();
    match op {
        Operation::SynonymReplacement => {
            let mut candidates: Vec<usize> = (0..words.len())
                .filter(|&i| !syns_of(&words[i]).is_empty())
                .collect();
            let mut done = 0;
            while done < n && !candidates.is_empty() {
                let k = rng.random_range(0..candidates.len());
                let i = candidates.swap_remove(k);
                let (pre, core, post) = split_word(&words[i]);
                let syn = syns_of(&words[i]).choose(rng).cloned().unwrap_or_default();
                words[i] = format!("{pre}{}{post}", with_case_of(core, &syn));
                done += 1;
            }
        }
        Operation::RandomInsertion => {
            for _ in 0..n {
                let with_syns: Vec<usize> = (0..words.len())
                    .filter(|&i| !syns_of(&words[i]).is_empty())
                    .collect();
                let Some(&i) = with_syns.choose(rng) else {
                    break;
                };
                let syn = syns_of(&words[i]).choose(rng).cloned().unwrap_or_default();
                // Not at the very front, so the sentence keeps its capital.
                let at = rng.random_range(1..=words.len());
                words.insert(at, syn);
            }
        }
        Operation::RandomSwap => {
            if words.len() >= 2 {
                for _ in 0..n {
                    let i = rng.random_range(0..words.len());
                    let j = rng.random_range(0..words.len());
                    words.swap(i, j);
                }
            }
        }
        Operation::RandomDeletion => {
            if words.len() > 1 {
                let kept: Vec<String> = words
                    .iter()
                    .filter(|_| rng.random::<f64>() >= rate)
                    .cloned()
                    .collect();
                words = if kept.is_empty() {
                    vec![words.choose(rng).cloned().unwrap_or_default()]
                } else {
                    kept
                };
            }
        }
    }
    words.join(" ")
}

/// Reads the back-translation file: each source's paraphrases.
pub fn read_back_translations(path: &Path) -> Result<HashMap<String, Vec<String>>, DataError> {
    let d = data::load(path)?;
    if d.kind != DataKind::Parallel {
        return Err(DataError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: format!(
                "back-translation needs `source, translation` columns, but this file holds {}",
                d.kind.describe()
            ),
        });
    }
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for e in &d.examples {
        if let Example::Parallel {
            source,
            translation,
        } = e
        {
            map.entry(source.clone())
                .or_default()
                .push(translation.clone());
        }
    }
    Ok(map)
}

/// Makes augmented texts: back-translation where the text has one (and EDA is off or loses the
/// draw), else an EDA operation drawn among those with a rate above 0.
pub struct Augmenter {
    pub augment: Augment,
    synonyms: Synonyms,
    back: HashMap<String, Vec<String>>,
    rng: ChaCha8Rng,
}

impl Augmenter {
    pub fn new(augment: &Augment, seed: u64) -> Result<Self, DataError> {
        let back = match &augment.back_translation {
            Some(p) => read_back_translations(p)?,
            None => HashMap::new(),
        };
        Ok(Self {
            augment: augment.clone(),
            synonyms: Synonyms::english(),
            back,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xa09_3e47),
        })
    }

    pub fn text(&mut self, text: &str) -> String {
        let ops: Vec<(Operation, f64)> = OPERATIONS
            .iter()
            .copied()
            .zip(self.augment.eda)
            .filter(|(_, r)| *r > 0.0)
            .collect();
        let back = self.back.get(text).filter(|v| !v.is_empty());
        let use_back = match (back, ops.is_empty()) {
            (Some(_), true) => true,
            (Some(_), false) => self.rng.random_bool(0.5),
            (None, _) => false,
        };
        if use_back {
            return back
                .and_then(|v| v.choose(&mut self.rng))
                .cloned()
                .unwrap_or_else(|| text.to_string());
        }
        match ops.choose(&mut self.rng).copied() {
            Some((op, rate)) => eda(text, op, rate, &self.synonyms, &mut self.rng),
            None => text.to_string(),
        }
    }

    /// An augmented copy of a row: every text column changed, the label kept.
    pub fn row(&mut self, e: &Example) -> Example {
        let mut t = |s: &String| self.text(s);
        match e {
            Example::Scored { a, b, score } => Example::Scored {
                a: t(a),
                b: t(b),
                score: *score,
            },
            Example::Labeled { a, b, label } => Example::Labeled {
                a: t(a),
                b: t(b),
                label: *label,
            },
            Example::Nli {
                premise,
                hypothesis,
                label,
            } => Example::Nli {
                premise: t(premise),
                hypothesis: t(hypothesis),
                label: *label,
            },
            Example::Pair { anchor, positive } => Example::Pair {
                anchor: t(anchor),
                positive: t(positive),
            },
            Example::Triplet {
                anchor,
                positive,
                negative,
            } => Example::Triplet {
                anchor: t(anchor),
                positive: t(positive),
                negative: t(negative),
            },
            Example::MarginTriplet {
                query,
                positive,
                negative,
                margin,
            } => Example::MarginTriplet {
                query: t(query),
                positive: t(positive),
                negative: t(negative),
                margin: *margin,
            },
            Example::Text(s) => Example::Text(t(s)),
            Example::Parallel {
                source,
                translation,
            } => Example::Parallel {
                source: t(source),
                translation: t(translation),
            },
        }
    }
}

/// Contriever's crop lengths (Izacard et al. 2022): a span of 10% to 50% of the document.
pub const CONTRIEVER_CROP: [f64; 2] = [0.1, 0.5];

/// The in-batch losses that train on pairs of crops.
pub const CROP_LOSSES: [super::losses::LossKind; 3] = [
    super::losses::LossKind::Mnr,
    super::losses::LossKind::MnrSymmetric,
    super::losses::LossKind::CachedMnr,
];

/// An independent random crop of `doc`: a span of words whose length is a `ratio` (uniform in
/// `[ratio[0], ratio[1]]`) of the document's words, at least one, starting anywhere it fits.
pub fn crop(doc: &str, ratio: [f64; 2], rng: &mut impl Rng) -> String {
    let words: Vec<&str> = doc.split_whitespace().collect();
    if words.len() <= 1 {
        return doc.trim().to_string();
    }
    let r = if ratio[1] > ratio[0] {
        rng.random_range(ratio[0]..=ratio[1])
    } else {
        ratio[0]
    };
    let len = ((r * words.len() as f64).round() as usize).clamp(1, words.len());
    let start = rng.random_range(0..=words.len() - len);
    words[start..start + len].join(" ")
}

/// Contriever's positive pairs: two independent crops of each document of a batch, drawn anew
/// for every (seed, epoch, row), so each epoch sees other crops and a resumed run the same ones.
pub fn crop_pairs(
    docs: &[(usize, &Example)],
    ratio: [f64; 2],
    seed: u64,
    epoch: usize,
) -> Vec<Example> {
    docs.iter()
        .map(|&(row, e)| {
            let doc = e.texts()[0];
            let mut rng = ChaCha8Rng::seed_from_u64(
                seed ^ 0xc0_97e1 ^ ((epoch as u64) << 40) ^ (row as u64).wrapping_mul(0x9E37),
            );
            Example::Pair {
                anchor: crop(doc, ratio, &mut rng),
                positive: crop(doc, ratio, &mut rng),
            }
        })
        .collect()
}

/// `data` with `copies` augmented copies of each row after it.
pub fn augment(data: &Dataset, augment: &Augment, seed: u64) -> Result<Dataset, DataError> {
    let mut a = Augmenter::new(augment, seed)?;
    let mut examples = Vec::with_capacity(data.examples.len() * (1 + augment.copies));
    for e in &data.examples {
        examples.push(e.clone());
        for _ in 0..augment.copies {
            examples.push(a.row(e));
        }
    }
    Ok(Dataset {
        examples,
        ..data.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(3)
    }

    #[test]
    fn the_shipped_list_reads_and_groups_are_mutual() {
        let s = Synonyms::english();
        assert!(s.of("man").contains(&"guy".to_string()));
        assert!(s.of("guy").contains(&"man".to_string()));
        assert!(s.of("zebra").is_empty());
        assert!(s.0.len() > 300, "{} words", s.0.len());
        assert!(s.0.keys().all(|w| !w.contains(' ')), "single words only");
    }

    #[test]
    fn each_operation_does_what_it_says() {
        let syn = Synonyms::parse("dog, hound\nplaying, frolicking");
        let s = "The Dog is playing outside.";
        let r = eda(s, Operation::SynonymReplacement, 0.5, &syn, &mut rng());
        // Two of five words: both words with synonyms change; the capital stays.
        assert_eq!(r, "The Hound is frolicking outside.");
        let r = eda(s, Operation::RandomInsertion, 0.2, &syn, &mut rng());
        assert_eq!(r.split(' ').count(), 6);
        assert!(r.starts_with("The ") && (r.contains("hound") || r.contains("frolicking")));
        let r = eda(s, Operation::RandomSwap, 0.2, &syn, &mut rng());
        let mut a: Vec<&str> = r.split(' ').collect();
        let mut b: Vec<&str> = s.split(' ').collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same words");
        let r = eda(s, Operation::RandomDeletion, 0.99, &syn, &mut rng());
        assert_eq!(r.split(' ').count(), 1, "at least one word stays: {r}");
        assert_eq!(eda(s, Operation::RandomDeletion, 0.0, &syn, &mut rng()), s);
    }

    #[test]
    fn crops_are_spans_of_the_document_of_the_asked_length() {
        let doc = (0..100)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut r = rng();
        for _ in 0..50 {
            let c = crop(&doc, CONTRIEVER_CROP, &mut r);
            let n = c.split(' ').count();
            assert!((10..=50).contains(&n), "{n} words");
            assert!(doc.contains(&c), "a contiguous span");
        }
        assert_eq!(crop("one", CONTRIEVER_CROP, &mut r), "one");
        let e = Example::Text(doc.clone());
        let a = crop_pairs(&[(3, &e)], CONTRIEVER_CROP, 1, 0);
        assert_eq!(a, crop_pairs(&[(3, &e)], CONTRIEVER_CROP, 1, 0), "seeded");
        assert_ne!(
            a,
            crop_pairs(&[(3, &e)], CONTRIEVER_CROP, 1, 1),
            "new crops each epoch"
        );
        let Example::Pair { anchor, positive } = &a[0] else {
            panic!("a pair")
        };
        assert_ne!(anchor, positive, "independent crops");
    }

    #[test]
    fn augmentation_is_seeded_and_keeps_the_labels() {
        let d = Dataset {
            path: "d.csv".into(),
            kind: DataKind::ScoredPairs,
            columns: vec![],
            examples: vec![Example::Scored {
                a: "A man is playing a guitar.".into(),
                b: "A woman is slicing an onion.".into(),
                score: 0.2,
            }],
            scores_scaled: false,
            stamp: None,
        };
        let a = Augment {
            copies: 3,
            eda: Augment::DEFAULT_EDA,
            back_translation: None,
        };
        let x = augment(&d, &a, 1).unwrap();
        assert_eq!(x.examples.len(), 4);
        assert_eq!(x.examples[0], d.examples[0]);
        assert_eq!(x.examples, augment(&d, &a, 1).unwrap().examples);
        assert_ne!(x.examples, augment(&d, &a, 2).unwrap().examples);
        for e in &x.examples {
            assert!(matches!(e, Example::Scored { score, .. } if *score == 0.2));
        }
        assert!(x.examples[1..].iter().any(|e| *e != d.examples[0]));
    }
}
