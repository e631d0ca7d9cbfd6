//! The layering the project keeps, checked on the source: no module imports a module that
//! imports it back (directly or around a loop); `model`, `train` and `analysis` know nothing of
//! terminals; the UI knows nothing of candle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of `src/` by path (`tui::explorer`), with its source (tests left out).
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                let mut next = prefix.to_vec();
                next.push(p.file_name().unwrap().to_string_lossy().into_owned());
                walk(&p, &next, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let mut path = prefix.to_vec();
                if !matches!(name.as_str(), "mod" | "lib" | "main") {
                    path.push(name);
                }
                let src = std::fs::read_to_string(&p).unwrap();
                let src = match src.find("#[cfg(test)]\nmod tests") {
                    Some(i) => src[..i].to_string(),
                    None => src,
                };
                out.insert(path.join("::"), src);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

/// Paths that start with `crate::` or `super::`, with grouped imports expanded.
fn paths(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while let Some(off) = src[i..].find(['c', 's']) {
        let at = i + off;
        i = at + 1;
        let rest = &src[at..];
        if !(rest.starts_with("crate::") || rest.starts_with("super::")) {
            continue;
        }
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches(':').to_string();
        if rest[end..].starts_with('{') && rest[..end].ends_with("::") {
            let close = rest[end..].find('}').map_or(rest.len(), |c| end + c);
            for item in rest[end + 1..close].split(',') {
                let item = item.trim().split(" as ").next().unwrap_or("").trim();
                if !item.is_empty() {
                    out.push(format!("{path}::{item}"));
                }
            }
        }
        out.push(path);
    }
    out
}

/// The module a path names: the longest prefix that is a module.
fn resolve(cur: &str, path: &str, mods: &BTreeMap<String, String>) -> Option<String> {
    let mut base: Vec<&str> = if cur.is_empty() {
        Vec::new()
    } else {
        cur.split("::").collect()
    };
    let mut segs: Vec<&str> = path.split("::").collect();
    match segs.first() {
        Some(&"crate") => {
            base.clear();
            segs.remove(0);
        }
        Some(&"super") => {
            while segs.first() == Some(&"super") {
                base.pop();
                segs.remove(0);
            }
        }
        _ => return None,
    }
    let full: Vec<&str> = base.into_iter().chain(segs).collect();
    (1..=full.len())
        .rev()
        .map(|k| full[..k].join("::"))
        .find(|m| mods.contains_key(m))
}

#[test]
fn no_module_imports_its_way_back_to_itself() {
    let mods = modules();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, src) in &mods {
        let targets: BTreeSet<String> = paths(src)
            .iter()
            .filter_map(|p| resolve(m, p, &mods))
            // A module sees its parents (they declare it); that is not an import.
            .filter(|t| t != m && !t.is_empty() && !m.starts_with(&format!("{t}::")))
            .collect();
        edges.insert(m.clone(), targets);
    }
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for t in edges.get(m).into_iter().flatten() {
            match state.get(t.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == t).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(t.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(t, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    assert!(mods.len() > 40, "found the modules: {}", mods.len());
    for m in mods.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new())
        {
            panic!("an import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_engine_knows_no_terminal_and_the_ui_no_candle() {
    for (m, src) in modules() {
        let top = m.split("::").next().unwrap_or("");
        if matches!(top, "model" | "train" | "analysis") {
            for word in ["ratatui", "crossterm", "crate::tui"] {
                assert!(!src.contains(word), "{m} uses {word}");
            }
        }
        if top == "tui" {
            for word in ["candle_core", "candle_nn", "Tensor"] {
                assert!(!src.contains(word), "{m} uses {word}");
            }
        }
    }
}
