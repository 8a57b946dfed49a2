//! The crate's module import graph has no cycle.
//!
//! Every file under `src/` is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`); an edge
//! goes from a module to every module its paths name: `use` trees, and paths written
//! inline (`crate::cache::Manifest`, `super::artifacts::read_json`). Declaring a child
//! (`mod x;`) is not an edge; using an item of the child is. Inline modules (`mod tests
//! { .. }`) belong to their file. Run with `--nocapture` to print the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`""` for the crate root) of every source file of the library.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match parts.last().map(String::as_str) {
                Some("main") if parts.len() == 1 => continue,
                Some("lib") if parts.len() == 1 => parts.clear(),
                Some("mod") => {
                    parts.pop();
                }
                _ => {}
            }
            out.insert(parts.join("::"), std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

/// The text with comments, string and char literals blanked out (lengths kept).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
            }
        } else if b[i] == b'r' && matches!(b.get(i + 1), Some(b'"' | b'#')) && is_raw(b, i) {
            // r"..." or r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            j = (j + close.len()).min(b.len());
            out.extend(std::iter::repeat_n(b' ', j - i));
            i = j;
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                let step = if b[i] == b'\\' { 2 } else { 1 };
                out.extend(std::iter::repeat_n(b' ', step.min(b.len() - i)));
                i += step;
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' && is_char_literal(b, i) {
            let end = b[i + 1..]
                .iter()
                .enumerate()
                .position(|(k, &c)| c == b'\'' && (k == 0 || b[i + k] != b'\\' || k >= 2))
                .map(|p| i + 1 + p)
                .unwrap_or(i);
            out.extend(std::iter::repeat_n(b' ', end + 1 - i));
            i = end + 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn is_raw(b: &[u8], i: usize) -> bool {
    let before_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
    let mut j = i + 1;
    while j < b.len() && b[j] == b'#' {
        j += 1;
    }
    before_ok && b.get(j) == Some(&b'"')
}

/// `'x'` or `'\n'`, not a lifetime `'a`.
fn is_char_literal(b: &[u8], i: usize) -> bool {
    match (b.get(i + 1), b.get(i + 2), b.get(i + 3)) {
        (Some(b'\\'), _, _) => true,
        (Some(_), Some(b'\''), _) => true,
        // A multi-byte UTF-8 character.
        (Some(c), _, _) if *c >= 0x80 => true,
        _ => false,
    }
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Byte ranges of inline modules (`mod name { .. }`) with their names.
fn inline_modules(code: &str) -> Vec<(usize, usize, String)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("mod ") {
        let at = from + pos;
        from = at + 4;
        if at > 0 && ident_char(b[at - 1]) {
            continue;
        }
        let rest = &code[at + 4..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after = rest[name.len()..].trim_start();
        if name.is_empty() || !after.starts_with('{') {
            continue;
        }
        let open = at + 4 + rest.len() - after.len();
        let mut depth = 0;
        let mut close = open;
        for (k, &c) in b[open..].iter().enumerate() {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + k;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push((open, close, name));
    }
    out
}

/// Every path a `use` tree names, each as its segments.
fn use_paths(tree: &str) -> Vec<Vec<String>> {
    fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if let Some(open) = tree.find('{') {
            let head: Vec<String> = tree[..open]
                .split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let mut base = prefix.to_vec();
            base.extend(head);
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            for (k, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&base, &inner[start..k], out);
                        start = k + 1;
                    }
                    _ => {}
                }
            }
            expand(&base, &inner[start..], out);
        } else {
            let tree = tree.split(" as ").next().unwrap_or("").trim();
            if tree.is_empty() {
                return;
            }
            let mut path = prefix.to_vec();
            path.extend(tree.split("::").map(|s| s.trim().to_string()));
            // `a::{self, X}` names `a` itself.
            if path.len() > 1 && path.last().is_some_and(|s| s == "self") {
                path.pop();
            }
            out.push(path);
        }
    }
    let mut out = Vec::new();
    expand(&[], tree, &mut out);
    out
}

/// Paths written inline that start with `crate::` or `super::`.
fn inline_paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    for start_word in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(start_word) {
            let at = from + pos;
            from = at + start_word.len();
            if at > 0 && (ident_char(b[at - 1]) || b[at - 1] == b':') {
                continue;
            }
            let mut end = at;
            while end < b.len() && (ident_char(b[end]) || b[end] == b':') {
                end += 1;
            }
            let path: Vec<String> = code[at..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            // `crate::{..}` opens a use tree, read with the `use` statement.
            if path.len() > 1 {
                out.push((at, path));
            }
        }
    }
    out
}

/// The module a path names, resolved from module `base`: the longest prefix that is
/// a module file.
fn resolve(base: &[String], path: &[String], known: &BTreeSet<String>) -> Option<String> {
    let mut segments: Vec<String> = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("super" | "self") => {
            segments = base.to_vec();
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        segments.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        Some(first) => {
            // A child module of the current one (`use sample::X`); anything else is an
            // outside crate or the standard library.
            let mut child = base.to_vec();
            child.push(first.to_string());
            if !known.contains(&child.join("::")) {
                return None;
            }
            segments = base.to_vec();
        }
        None => return None,
    }
    let mut best = segments.join("::");
    for seg in rest {
        segments.push(seg.clone());
        let candidate = segments.join("::");
        if known.contains(&candidate) {
            best = candidate;
        } else {
            break;
        }
    }
    Some(best)
}

/// Module -> the modules it imports.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = modules(src);
    let known: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, text) in &files {
        let code = code_only(text);
        let inline = inline_modules(&code);
        let base_at = |offset: usize| -> Vec<String> {
            let mut base: Vec<String> = if module.is_empty() {
                vec![]
            } else {
                module.split("::").map(String::from).collect()
            };
            for (open, close, name) in &inline {
                if *open < offset && offset < *close {
                    base.push(name.clone());
                }
            }
            base
        };
        let file_depth = if module.is_empty() {
            0
        } else {
            module.split("::").count()
        };
        let mut edges = BTreeSet::new();
        let mut add = |base: &[String], path: &[String]| {
            if let Some(target) = resolve(base, path, &known)
                && target != *module
                // A path into the file's own inline modules.
                && !(base.len() > file_depth && target.is_empty() && module.is_empty())
            {
                edges.insert(target);
            }
        };
        let mut from = 0;
        while let Some(pos) = code[from..].find("use ") {
            let at = from + pos;
            from = at + 4;
            if at > 0 && ident_char(code.as_bytes()[at - 1]) {
                continue;
            }
            let Some(end) = code[at..].find(';') else {
                break;
            };
            let base = base_at(at);
            for path in use_paths(&code[at + 4..at + end]) {
                add(&base, &path);
            }
            from = at + end;
        }
        for (at, path) in inline_paths(&code) {
            add(&base_at(at), &path);
        }
        // Inline paths through a child module, which `mod child;` brings into scope
        // (`images::write_grid(..)`).
        let prefix = if module.is_empty() {
            String::new()
        } else {
            format!("{module}::")
        };
        for child in known
            .iter()
            .filter_map(|m| m.strip_prefix(&prefix))
            .filter(|c| !c.contains("::") && !c.is_empty())
        {
            let needle = format!("{child}::");
            let mut from = 0;
            while let Some(pos) = code[from..].find(&needle) {
                let at = from + pos;
                from = at + needle.len();
                let b = code.as_bytes();
                if at > 0 && (ident_char(b[at - 1]) || b[at - 1] == b':') {
                    continue;
                }
                edges.insert(format!("{prefix}{child}"));
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

/// Every cycle's modules, one strongly connected component each (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn name(module: &str) -> &str {
    if module.is_empty() { "crate" } else { module }
}

#[test]
fn module_imports_have_no_cycle() {
    let graph = import_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (module, edges) in &graph {
        let edges: Vec<&str> = edges.iter().map(|e| name(e)).collect();
        println!("{} -> {}", name(module), edges.join(", "));
    }
    let found = cycles(&graph);
    let text: Vec<String> = found
        .iter()
        .map(|c| c.iter().map(|m| name(m)).collect::<Vec<_>>().join(" <-> "))
        .collect();
    assert!(found.is_empty(), "import cycles:\n  {}", text.join("\n  "));
}

/// The test's own reader on a small tree: it must see `use` trees, inline paths and
/// `super`, ignore comments, strings and inline test modules, and find the cycle.
#[test]
fn reader_finds_a_cycle_through_use_trees_and_inline_paths() {
    let dir = std::env::temp_dir().join(format!("architecture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    let write = |p: &str, t: &str| std::fs::write(dir.join(p), t).unwrap();
    write("lib.rs", "pub mod a; pub mod b; pub mod c;\n");
    write(
        "a/mod.rs",
        "pub mod x;\nuse crate::{b::{self, Thing}, c as see};\n",
    );
    write(
        "a/x.rs",
        "// use crate::c;\nfn f() { let s = \"crate::c\"; super::super::c::g(); }\n",
    );
    write(
        "b.rs",
        "fn f() {}\n#[cfg(test)]\nmod tests { use super::*; use crate::c; }\n",
    );
    write("c.rs", "use std::fmt;\nfn g() { crate::a::x::f() }\n");
    write("a/y.rs", "fn h() {}\n");
    std::fs::write(
        dir.join("a/mod.rs"),
        "pub mod x; pub mod y;\nuse crate::{b::{self, Thing}, c as see};\nfn f() { y::h(); }\n",
    )
    .unwrap();
    let graph = import_graph(&dir);
    let edges = |m: &str| graph[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(edges("a"), vec!["a::y", "b", "c"]);
    assert_eq!(edges("a::x"), vec!["c"]);
    assert_eq!(edges("b"), vec!["c"]);
    assert_eq!(edges("c"), vec!["a::x"]);
    assert_eq!(
        cycles(&graph),
        vec![vec!["a::x".to_string(), "c".to_string()]]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The first path segment of a module (`stages::train` is in `stages`).
fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

fn within(module: &str, prefix: &str) -> bool {
    module == prefix || module.starts_with(&format!("{prefix}::"))
}

/// The layers import downward only: the top-level modules, each taken whole, form no
/// cycle; the CPU kernels import nothing else of the crate; the pipeline layer sees the
/// stage kinds only through their table (`stages`); stages never reach back up into
/// the pipeline, executors, report or command line; plotting is a leaf.
#[test]
fn layers_import_downward_only() {
    let graph = import_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut layers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, edges) in &graph {
        let entry = layers.entry(top(module).to_string()).or_default();
        entry.extend(
            edges
                .iter()
                .filter(|e| top(e) != top(module) && !e.is_empty())
                .map(|e| top(e).to_string()),
        );
    }
    let found = cycles(&layers);
    assert!(found.is_empty(), "top-level modules in a cycle: {found:?}");

    let mut broken = Vec::new();
    for (module, edges) in &graph {
        for edge in edges {
            let rule = if within(module, "nn::kernels") && !within(edge, "nn::kernels") {
                Some("the CPU kernels import nothing else of the crate")
            } else if within(module, "pipeline") && within(edge, "stages") && edge != "stages" {
                Some("the pipeline layer sees stage kinds only through their table")
            } else if ["stages", "plot", "diffusion", "nn", "data", "metrics"]
                .iter()
                .any(|low| within(module, low))
                && ["pipeline", "exec", "report", "cli", "catalog"]
                    .iter()
                    .any(|high| within(edge, high))
            {
                Some("stages and the code below them never import the layers above")
            } else if within(module, "plot")
                && ["stages", "diffusion", "nn"]
                    .iter()
                    .any(|m| within(edge, m))
            {
                Some("plotting is a leaf")
            } else {
                None
            };
            if let Some(rule) = rule {
                broken.push(format!("{module} -> {edge}: {rule}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layering broken:\n  {}",
        broken.join("\n  ")
    );
}
