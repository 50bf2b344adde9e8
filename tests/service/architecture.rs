//! The shape of `src/`, checked from its source: the core (`domain`) is a leaf that imports
//! nothing from outside itself, no module imports its way into a cycle (neither between files
//! nor between the top-level modules), and a file past 600 lines says why in its header.
//!
//! A module here is a file. Each file's paths into the crate (`use` trees and paths in the
//! code, `crate::`, `super::`, `self::` and child modules) are resolved to the file of the
//! longest module they name; a `mod` declaration is not an import.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// Crates the core must not use: the async runtime, the transports, the stores, logging and
/// `anyhow` belong outside it.
const OUTER_CRATES: [&str; 9] = [
    "anyhow", "axum", "mongodb", "rdkafka", "rusqlite", "tokio", "tonic", "tower", "tracing",
];

/// Lines past which a file must say in its header why it is one file.
const LONG_FILE: usize = 600;

type ModulePath = Vec<String>;

/// The library's files by module path (`crate::jobs::ports` is `["jobs", "ports"]`).
fn modules() -> BTreeMap<ModulePath, PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path == src.join("main.rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap().with_extension("");
            let mut module: ModulePath = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                module.pop();
            }
            found.insert(module, path);
        }
    }
    found
}

/// What one file refers to.
struct Uses<'a> {
    /// The module the file is.
    file: ModulePath,
    /// Inline modules (`mod tests { .. }`) the visitor is inside.
    inline: Vec<String>,
    /// Modules the file declares with `mod name;`.
    children: BTreeSet<String>,
    known: &'a BTreeMap<ModulePath, PathBuf>,
    /// The files it imports from.
    edges: BTreeSet<ModulePath>,
    /// The external crates it names first in a path.
    crates: BTreeSet<String>,
}

impl Uses<'_> {
    /// The module a path's first segments are relative to, and the rest of the path; `None`
    /// for a path that leaves the crate (another crate, a local name, a type parameter).
    fn resolve(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let mut here: ModulePath = self.file.iter().chain(&self.inline).cloned().collect();
        let rest = match first.as_str() {
            "crate" => {
                here.clear();
                &segments[1..]
            }
            "self" => &segments[1..],
            "super" => {
                let supers = segments.iter().take_while(|s| *s == "super").count();
                for _ in 0..supers {
                    here.pop();
                }
                &segments[supers..]
            }
            name if self.inline.is_empty() && self.children.contains(name) => segments,
            name => {
                self.crates.insert(name.to_owned());
                return;
            }
        };
        let mut target = here;
        target.extend(rest.iter().cloned());
        while !self.known.contains_key(&target) {
            if target.pop().is_none() {
                return;
            }
        }
        if target != self.file {
            self.edges.insert(target);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                prefix.push(name.ident.to_string());
                self.resolve(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(rename) => {
                prefix.push(rename.ident.to_string());
                self.resolve(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.resolve(&prefix.clone()),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        match &item.content {
            None => {
                self.children.insert(item.ident.to_string());
            }
            Some(_) => {
                self.inline.push(item.ident.to_string());
                syn::visit::visit_item_mod(self, item);
                self.inline.pop();
            }
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.resolve(&segments);
        }
        syn::visit::visit_path(self, path);
    }
}

/// Every file's imports, and the external crates it uses.
fn graph() -> BTreeMap<ModulePath, (BTreeSet<ModulePath>, BTreeSet<String>)> {
    let known = modules();
    known
        .iter()
        .map(|(module, path)| {
            let text = std::fs::read_to_string(path).unwrap();
            let file = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            let mut uses = Uses {
                file: module.clone(),
                inline: Vec::new(),
                children: BTreeSet::new(),
                known: &known,
                edges: BTreeSet::new(),
                crates: BTreeSet::new(),
            };
            // Children first: a path may name a child declared further down the file.
            for item in &file.items {
                if let syn::Item::Mod(item) = item
                    && item.content.is_none()
                {
                    uses.children.insert(item.ident.to_string());
                }
            }
            uses.visit_file(&file);
            (module.clone(), (uses.edges, uses.crates))
        })
        .collect()
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        format!("crate::{}", module.join("::"))
    }
}

/// The first cycle found in `edges`, as the modules along it.
fn find_cycle(edges: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Option<Vec<ModulePath>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &ModulePath,
        edges: &BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        marks: &mut BTreeMap<ModulePath, Mark>,
        stack: &mut Vec<ModulePath>,
    ) -> Option<Vec<ModulePath>> {
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let start = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if !marks.contains_key(node)
            && let Some(cycle) = visit(node, edges, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

fn describe(cycle: &[ModulePath]) -> String {
    cycle
        .iter()
        .map(|m| name(m))
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[test]
fn the_core_imports_nothing_from_outside_it() {
    let mut outward = Vec::new();
    for (module, (edges, crates)) in graph() {
        if module.first().is_none_or(|top| top != "domain") {
            continue;
        }
        for target in edges {
            if target.first().is_none_or(|top| top != "domain") {
                outward.push(format!("{} imports {}", name(&module), name(&target)));
            }
        }
        for krate in crates.intersection(&OUTER_CRATES.map(String::from).into()) {
            outward.push(format!("{} uses the crate {krate}", name(&module)));
        }
    }
    assert!(
        outward.is_empty(),
        "the core must be a leaf:\n  {}",
        outward.join("\n  ")
    );
}

#[test]
fn no_file_imports_its_way_into_a_cycle() {
    let edges: BTreeMap<_, _> = graph()
        .into_iter()
        .map(|(module, (edges, _))| (module, edges))
        .collect();
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 50,
        "the graph is implausibly small: {edges:?}"
    );
    if let Some(cycle) = find_cycle(&edges) {
        panic!("a cycle among files: {}", describe(&cycle));
    }
}

#[test]
fn no_top_level_module_imports_its_way_into_a_cycle() {
    let mut edges: BTreeMap<ModulePath, BTreeSet<ModulePath>> = BTreeMap::new();
    for (module, (targets, _)) in graph() {
        let Some(from) = module.first() else {
            continue; // lib.rs only declares the modules
        };
        for target in targets {
            if let Some(to) = target.first()
                && to != from
            {
                edges
                    .entry(vec![from.clone()])
                    .or_default()
                    .insert(vec![to.clone()]);
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        panic!("a cycle among top-level modules: {}", describe(&cycle));
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let module = |name: &str| vec![name.to_owned()];
    let edges = BTreeMap::from([
        (module("a"), BTreeSet::from([module("b")])),
        (module("b"), BTreeSet::from([module("c")])),
        (module("c"), BTreeSet::from([module("a")])),
    ]);
    let cycle = find_cycle(&edges).expect("a cycle");
    assert_eq!(
        describe(&cycle),
        "crate::a -> crate::b -> crate::c -> crate::a"
    );
    let acyclic = BTreeMap::from([(module("a"), BTreeSet::from([module("b")]))]);
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn a_file_longer_than_600_lines_says_why_in_its_header() {
    let mut unexplained = Vec::new();
    for path in modules().values() {
        let text = std::fs::read_to_string(path).unwrap();
        let lines = text.lines().count();
        let header: String = text
            .lines()
            .take_while(|line| line.starts_with("//!"))
            .collect();
        if lines > LONG_FILE && !header.contains("Longer than 600 lines because") {
            unexplained.push(format!("{} ({lines} lines)", path.display()));
        }
    }
    assert!(
        unexplained.is_empty(),
        "split these by concern, or say in the header \"Longer than 600 lines because ...\":\n  {}",
        unexplained.join("\n  ")
    );
}
