//! The import picture of src/ (docs/architecture.md, Layers): no module
//! imports from a layer above its own, and no modules import each other in
//! a circle (a module naming its parent's items, or a parent its
//! children's, is how Rust modules nest and is left out).
//!
//! Read from the source text: every `crate::`, `super::` and `self::` path,
//! `use` groups (`use super::{a, b}`), and paths through a child module
//! (`listen::accept_loop`); comments and `#[cfg(test)] mod tests` are not
//! read (a test may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Top-level modules by layer, lowest 0 (docs/architecture.md).
const LAYERS: &[(&str, u32)] = &[
    ("chain", 0),
    ("pow", 0),
    ("sig", 0),
    ("topo", 0),
    ("date", 0),
    ("gpu", 1),
    ("health", 2),
    ("metrics", 3),
    ("profile", 3),
    ("sched", 4),
    ("node", 5),
    ("runtime", 6),
    ("cli", 7),
    ("plot", 7),
];

fn modules(dir: &Path, prefix: &Module, out: &mut BTreeMap<Module, String>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        let name = p.file_stem().and_then(|s| s.to_str()).expect("file name").to_string();
        if p.is_dir() {
            let mut m = prefix.clone();
            m.push(name);
            modules(&p, &m, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            if prefix.is_empty() && name == "main" {
                continue; // the binary, not the library
            }
            let mut m = prefix.clone();
            if !matches!(name.as_str(), "mod" | "lib") {
                m.push(name);
            }
            out.insert(m, std::fs::read_to_string(&p).expect("read source"));
        }
    }
}

/// The source without comments and without its test module.
fn code(src: &str) -> String {
    let src = match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    };
    src.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The deepest module `segs` names from `cur`; `None` for a path that does
/// not start at crate, super or self.
fn resolve(cur: &Module, segs: &[&str], mods: &BTreeMap<Module, String>) -> Option<Module> {
    let (mut m, rest): (Module, &[&str]) = match *segs.first()? {
        "crate" => (Vec::new(), &segs[1..]),
        "self" => (cur.clone(), &segs[1..]),
        "super" => {
            let mut m = cur.clone();
            let mut i = 0;
            while segs.get(i) == Some(&"super") {
                m.pop();
                i += 1;
            }
            (m, &segs[i..])
        }
        _ => return None,
    };
    for s in rest {
        let mut next = m.clone();
        next.push(s.to_string());
        if !mods.contains_key(&next) {
            break;
        }
        m = next;
    }
    Some(m)
}

/// Every module `cur`'s code names.
fn imports(cur: &Module, code: &str, mods: &BTreeMap<Module, String>) -> BTreeSet<Module> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_ident(chars[i]) || (i > 0 && (is_ident(chars[i - 1]) || chars[i - 1] == ':')) {
            i += 1;
            continue;
        }
        // A path: identifiers joined by `::`, maybe ending in `::{ … }`.
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let s = j;
            while j < chars.len() && is_ident(chars[j]) {
                j += 1;
            }
            segs.push(chars[s..j].iter().collect::<String>());
            if chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':') {
                j += 2;
                if chars.get(j).is_some_and(|c| is_ident(*c)) {
                    continue;
                }
            }
            break;
        }
        let mut paths: Vec<Vec<String>> = Vec::new();
        if chars.get(j) == Some(&'{') {
            let end = (j..chars.len()).find(|&k| chars[k] == '}').unwrap_or(chars.len());
            let group: String = chars[j + 1..end].iter().collect();
            for item in group.split(',') {
                let first = item.trim().split("::").next().unwrap_or("").trim().to_string();
                if !first.is_empty() && first != "self" && first.chars().all(is_ident) {
                    let mut p = segs.clone();
                    p.push(first);
                    paths.push(p);
                }
            }
            j = end;
        }
        paths.push(segs);
        for p in paths {
            let refs: Vec<&str> = p.iter().map(String::as_str).collect();
            let m = resolve(cur, &refs, mods).or_else(|| {
                // A child module named without `self::`.
                let mut child = cur.clone();
                child.push(refs[0].to_string());
                (refs.len() > 1 && mods.contains_key(&child))
                    .then(|| resolve(cur, &[&["self"][..], &refs[..]].concat(), mods))?
            });
            if let Some(m) = m.filter(|m| m != cur) {
                out.insert(m);
            }
        }
        i = j.max(i + 1);
    }
    out
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn graph() -> (BTreeMap<Module, String>, BTreeMap<Module, BTreeSet<Module>>) {
    let mut mods = BTreeMap::new();
    modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &Vec::new(), &mut mods);
    let edges = mods.iter().map(|(m, src)| (m.clone(), imports(m, &code(src), &mods))).collect();
    (mods, edges)
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let (mods, edges) = graph();
    let layer = |m: &Module| m.first().and_then(|t| LAYERS.iter().find(|(n, _)| n == t)).map(|(_, l)| *l);
    for m in mods.keys().filter(|m| !m.is_empty()) {
        assert!(layer(m).is_some(), "{} has no layer here nor in docs/architecture.md", name(m));
    }
    let up: Vec<String> = edges
        .iter()
        .flat_map(|(a, bs)| bs.iter().map(move |b| (a, b)))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty() && layer(a) < layer(b))
        .map(|(a, b)| format!("{} -> {}", name(a), name(b)))
        .collect();
    assert!(up.is_empty(), "imports running back up: {up:#?}");
    // The reader sees what it must: a real import of today's code.
    let seen = &edges[&vec!["sched".to_string(), "gpu".to_string()]];
    assert!(seen.contains(&vec!["gpu".to_string()]), "{seen:?}");
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let (mods, edges) = graph();
    // Leave out a module naming its ancestor (nesting, not a dependency).
    let edges: BTreeMap<&Module, Vec<&Module>> =
        edges.iter().map(|(a, bs)| (a, bs.iter().filter(|b| !a.starts_with(b)).collect())).collect();
    // Tarjan's strongly connected components.
    struct S<'a> {
        edges: &'a BTreeMap<&'a Module, Vec<&'a Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        circles: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut S<'a>, v: &'a Module) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for &w in s.edges.get(v).map(Vec::as_slice).unwrap_or(&[]) {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut c = Vec::new();
            while let Some(w) = s.stack.pop() {
                c.push(name(w));
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                s.circles.push(c);
            }
        }
    }
    let mut s =
        S { edges: &edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), circles: Vec::new() };
    for m in mods.keys() {
        if !s.index.contains_key(m) {
            visit(&mut s, m);
        }
    }
    assert!(s.circles.is_empty(), "modules that import each other: {:#?}", s.circles);
}

/// The reader finds the kinds of import the two checks rest on.
#[test]
fn imports_are_read_in_every_form() {
    let mut mods = BTreeMap::new();
    for m in ["a", "a::b", "a::c", "a::c::d", "e"] {
        mods.insert(m.split("::").map(String::from).collect::<Module>(), String::new());
    }
    let cur: Module = vec!["a".into(), "c".into()];
    let src = "use super::{b, c::d};\nuse crate::e::X;\nfn f() { d::g(); } // crate::a::b in a comment\n";
    let got: Vec<String> = imports(&cur, &code(src), &mods).iter().map(name).collect();
    assert_eq!(got, ["a", "a::b", "a::c::d", "e"]);
}
