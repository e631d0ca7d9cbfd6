//! Demo sentence sets shipped in `assets/demo/` and built into the binary.

pub struct DemoSet {
    pub name: &'static str,
    pub description: &'static str,
    text: &'static str,
}

impl DemoSet {
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
        name: "Paraphrases vs. unrelated",
        description: "paraphrase groups form bright blocks in the matrix",
        text: include_str!("../../assets/demo/paraphrases.txt"),
    },
    DemoSet {
        name: "Negation and word order",
        description: "'good' vs 'not good', 'dog bit man' vs 'man bit dog'",
        text: include_str!("../../assets/demo/negation.txt"),
    },
    DemoSet {
        name: "Chinese and English",
        description: "中文句子与英文对照 (an English model sees Chinese poorly)",
        text: include_str!("../../assets/demo/chinese.txt"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_has_sentences() {
        for set in DEMO_SETS {
            assert!(set.sentences().len() >= 6, "{}", set.name);
        }
    }
}
