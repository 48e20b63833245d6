//! The import graph of `src/`: no cycles among files, and the back-edges
//! that once tangled the core stay gone. Reads the sources (every
//! `crate::path` outside `#[cfg(test)]` code), so the rule is checked on
//! every test run, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`repository::s3`) → its source.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            if parts.is_empty() {
                return None; // lib.rs and main.rs: the roots
            }
            let text = std::fs::read_to_string(&f).unwrap();
            // Test code may reach anywhere.
            let text = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            Some((parts.join("::"), text))
        })
        .collect()
}

/// File-level edges: which modules each module names through `crate::`.
fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in mods {
        let set = out.entry(m.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let path: String = text[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            // The longest prefix that is a module.
            let target = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|c| mods.contains_key(c));
            if let Some(t) = target.filter(|t| t != m) {
                set.insert(t);
            }
        }
    }
    out
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn no_import_cycles_among_source_files() {
    let g = edges(&modules());
    assert!(g.len() > 40, "read {} modules", g.len());
    let found = cycles(&g);
    assert!(found.is_empty(), "import cycles: {found:#?}");
}

/// The layers of `src/`, bottom first (ARCHITECTURE.md, "Layers"): each is
/// a folder, and a module may use its own layer (without cycles) and the
/// ones below. The CLI (`src/cli/`, in the binary) sits with the daemon.
const LAYERS: [(&str, &[&str]); 5] = [
    ("values and rules", &["base"]),
    ("configuration", &["config"]),
    ("storage and services", &["services"]),
    ("engine", &["engine"]),
    ("entry points", &["daemon", "cli"]),
];

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS.iter().position(|(_, mods)| mods.contains(&top))
}

#[test]
fn the_folders_are_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut top: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["base", "cli", "config", "daemon", "engine", "lib.rs", "main.rs", "services"],
        "src/ holds one folder per layer and the two roots"
    );
}

#[test]
fn every_module_sits_in_a_layer_and_imports_only_its_own_or_lower_ones() {
    let g = edges(&modules());
    let mut wrong = Vec::new();
    for (m, targets) in &g {
        let Some(from) = layer_of(m) else {
            wrong.push(format!(
                "{m} is in no layer (add it to LAYERS and ARCHITECTURE.md)"
            ));
            continue;
        };
        for t in targets {
            match layer_of(t) {
                Some(to) if to <= from => {}
                Some(to) => wrong.push(format!(
                    "{m} ({}) imports {t} ({})",
                    LAYERS[from].0, LAYERS[to].0
                )),
                None => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_core_has_none_of_its_old_back_edges() {
    let g = edges(&modules());
    // (module, what it must not import): storage, state and locks sit below
    // the backup engine; alerts know neither the runner nor job kinds; the
    // RPO engine reads times through the state layer's codec.
    let forbidden = [
        ("services::repository", "engine::backup"),
        ("services::state", "engine::backup"),
        ("services::lock", "engine::backup"),
        ("services::alerts", "engine::runner"),
        ("services::alerts", "services::checks"),
        ("engine::rpo", "services::alerts::store"),
        ("base::host", "config"),
        ("base::ids", "config"),
    ];
    let mut bad = Vec::new();
    for (from, to) in forbidden {
        for (m, targets) in &g {
            if m == from || m.starts_with(&format!("{from}::")) {
                for t in targets {
                    if t == to || t.starts_with(&format!("{to}::")) {
                        bad.push(format!("{m} -> {t}"));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "back-edges: {bad:?}");
}
