//! The design's layering rule, checked: no import cycles between the files
//! of `client-core/src` (a module and its own submodules aside, which Rust's
//! layout ties together). Lower layers never name higher ones, so a file
//! can be read, tested and changed without the ones above it.
//!
//! A file's dependencies are the modules it names by path (`crate::a::b`,
//! `super::c`), outside comments and its `#[cfg(test)] mod tests`. That is
//! a conservative reading: a path in a string would count too; none does.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `policy/rate_limit/mod.rs` → `policy::rate_limit`; `lib.rs` → ``.
fn module_of(relative: &Path) -> String {
    let text = relative.to_string_lossy().replace('\\', "/");
    let text = text.trim_end_matches(".rs");
    let text = text.strip_suffix("/mod").unwrap_or(text);
    if text == "lib" {
        String::new()
    } else {
        text.replace('/', "::")
    }
}

/// The code of a file without comments and without its unit tests.
fn code(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(at) => &source[..at],
        None => source,
    };
    source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths after each `prefix` in `code`: `crate::a::b::C` → `a::b::C`.
fn paths_after<'c>(code: &'c str, prefix: &str) -> Vec<&'c str> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at + prefix.len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        // `$crate::` and `foo_crate::` are not this crate.
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            found.push(tail[..end].trim_end_matches(':'));
        }
        rest = tail;
    }
    found
}

/// The longest known module that `path` starts with.
fn resolve<'m>(modules: &'m BTreeSet<String>, path: &str) -> Option<&'m String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| modules.get(&parts[..n].join("::")))
}

/// Whether one module contains the other (or is it).
fn related(a: &str, b: &str) -> bool {
    a == b
        || a.is_empty()
        || b.is_empty()
        || a.starts_with(&format!("{b}::"))
        || b.starts_with(&format!("{a}::"))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let texts: Vec<(String, String)> = files
        .iter()
        .filter_map(|f| {
            let relative = f.strip_prefix(&root).ok()?;
            Some((module_of(relative), fs::read_to_string(f).ok()?))
        })
        .collect();
    let modules: BTreeSet<String> = texts.iter().map(|(m, _)| m.clone()).collect();
    let mut edges = BTreeMap::new();
    for (module, text) in &texts {
        let code = code(text);
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut deps = BTreeSet::new();
        let named = paths_after(&code, "crate::")
            .into_iter()
            .map(str::to_owned)
            .chain(paths_after(&code, "super::").into_iter().map(|p| {
                if parent.is_empty() {
                    p.to_owned()
                } else {
                    format!("{parent}::{p}")
                }
            }));
        for path in named {
            if let Some(target) = resolve(&modules, &path)
                && !related(module, target)
            {
                deps.insert(target.clone());
            }
        }
        edges.insert(module.clone(), deps);
    }
    edges
}

/// A cycle through `start`, if there is one (depth-first).
fn cycle_from(
    edges: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    let node = path.last()?.clone();
    for next in edges.get(&node).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(cycle) = cycle_from(edges, start, path, seen) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let edges = graph();
    assert!(
        edges.len() > 40 && edges.values().map(BTreeSet::len).sum::<usize>() > 100,
        "the graph is too small to be the crate's: {edges:?}"
    );
    let cycles: Vec<String> = edges
        .keys()
        .filter_map(|start| {
            cycle_from(
                &edges,
                start,
                &mut vec![start.clone()],
                &mut BTreeSet::new(),
            )
        })
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The checker finds a cycle when there is one (so its silence above
/// means something).
#[test]
fn the_checker_sees_a_cycle() {
    let mut edges = graph();
    edges
        .entry("error".into())
        .or_default()
        .insert("builder".into());
    let found = cycle_from(
        &edges,
        "error",
        &mut vec!["error".into()],
        &mut BTreeSet::new(),
    );
    assert!(found.is_some_and(|c| c.first() == c.last() && c.len() >= 3));
}
