//! The shape of `src/`: no import cycles, between files or between
//! modules at any depth (issue 26).
//!
//! Each file of `src/` is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`).
//! A file depends on another when its code (tests left out) names an item
//! the other defines: through `use`, or a path written inline (`crate::…`,
//! `super::…`, `self::…` or a child module's name). A re-export (`pub use
//! child::Item`) is followed to the file that defines the item; it is not a
//! dependency of its own. The dependencies must form no cycle, neither
//! between files nor between the modules they make up at each depth (`a`,
//! `a::b`, …).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path: its segments below the crate root.
type ModPath = Vec<String>;

/// One file of `src/`: its module path and its code, tests and comments
/// taken out.
struct SourceFile {
    module: ModPath,
    file: PathBuf,
    code: String,
}

#[test]
fn src_has_no_import_cycles_between_files_or_modules() {
    let (modules, edges) = dependencies();
    let depth = modules.iter().map(Vec::len).max().unwrap_or(0);
    let mut problems = Vec::new();
    for level in (1..=depth).rev() {
        let collapsed = collapse(&edges, level);
        for cycle in cycles(&collapsed) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            let why: Vec<String> = cycle
                .iter()
                .flat_map(|from| {
                    collapsed[from]
                        .iter()
                        .filter(|(to, _)| cycle.contains(to))
                        .map(move |(to, at)| {
                            format!("    {} -> {}: {at}", from.join("::"), to.join("::"))
                        })
                })
                .collect();
            problems.push(format!(
                "modules of depth {level} in a cycle: {}\n{}",
                names.join(", "),
                why.join("\n")
            ));
        }
    }
    problems.dedup();
    assert!(
        problems.is_empty(),
        "import cycles in src/:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_engine_depends_on_none_of_the_tooling() {
    let (_, edges) = dependencies();
    let tools = |m: &ModPath| m.first().is_some_and(|s| s == "tools");
    let wrong: Vec<String> = edges
        .iter()
        .filter(|(from, _)| !tools(from))
        .flat_map(|(_, to)| {
            to.iter()
                .filter(|(t, _)| tools(t))
                .map(|(_, at)| at.clone())
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "engine modules naming src/tools/:\n{}",
        wrong.join("\n")
    );
}

/// The modules of `src/` and the files each depends on, each dependency
/// with where it is named.
#[allow(clippy::type_complexity)]
fn dependencies() -> (
    BTreeSet<ModPath>,
    BTreeMap<ModPath, BTreeMap<ModPath, String>>,
) {
    let files = read_src(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path());
    let modules: BTreeSet<ModPath> = files.iter().map(|f| f.module.clone()).collect();
    let reexports: BTreeMap<ModPath, BTreeMap<String, ModPath>> = files
        .iter()
        .map(|f| (f.module.clone(), reexports_of(f, &modules)))
        .collect();
    let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, String>> = BTreeMap::new();
    for file in &files {
        for path in paths_named(&file.code) {
            let Some(target) = resolve(&file.module, &path, &modules, &reexports) else {
                continue;
            };
            if target != file.module {
                edges
                    .entry(file.module.clone())
                    .or_default()
                    .entry(target)
                    .or_insert_with(|| format!("{}: {}", file.file.display(), path.join("::")));
            }
        }
    }
    assert!(
        edges.values().map(BTreeMap::len).sum::<usize>() > 100,
        "the dependency reader found too few dependencies to be trusted"
    );
    (modules, edges)
}

/// Every `.rs` file below `dir` but `main.rs`, as modules.
fn read_src(dir: &Path) -> Vec<SourceFile> {
    // A visibility (`pub(in crate::engine)`) names a module without
    // depending on it.
    let visibility = regex::Regex::new(r"pub\(in [^)]*\)").expect("a valid pattern");
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).expect("list src/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(dir).expect("below src/");
            let mut module: ModPath = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            if module == ["main"] {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            let code = without_tests(&without_comments(&text));
            found.push(SourceFile {
                module,
                file: relative.to_path_buf(),
                code: visibility.replace_all(&code, "pub").into_owned(),
            });
        }
    }
    found
}

/// `text` without comments and string literals (so that paths quoted in
/// docs and messages do not count).
fn without_comments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'/', Some(b'/')) => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            (b'r', Some(b'#' | b'"')) if i == 0 || !is_ident(bytes[i - 1]) => {
                let hashes = bytes[i + 1..].iter().take_while(|&&b| b == b'#').count();
                if bytes.get(i + 1 + hashes) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                i += 2 + hashes;
                while i < bytes.len() && !bytes[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            (b'"', _) => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            (b'\'', _) => {
                // A char literal ('x', '\n', '\''), else a lifetime.
                let end = if bytes.get(i + 1) == Some(&b'\\') {
                    bytes[i + 2..]
                        .iter()
                        .position(|&b| b == b'\'')
                        .map(|p| i + 3 + p)
                } else if bytes.get(i + 2) == Some(&b'\'') {
                    Some(i + 3)
                } else {
                    std::str::from_utf8(&bytes[i + 1..])
                        .ok()
                        .and_then(|rest| rest.chars().next())
                        .filter(|c| !c.is_ascii())
                        .map(|c| i + 1 + c.len_utf8() + 1)
                };
                match end {
                    Some(end) => {
                        out.push_str("' '");
                        i = end;
                    }
                    None => {
                        out.push('\'');
                        i += 1;
                    }
                }
            }
            _ => {
                let c = text[i..].chars().next().expect("a char");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `code` without the items marked `#[cfg(test)]`.
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let brace = item.find('{');
        let semicolon = item.find(';');
        let end = match (brace, semicolon) {
            (Some(b), Some(s)) if s < b => s + 1,
            (Some(b), _) => {
                let mut depth = 0;
                let mut end = item.len();
                for (i, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(s)) => s + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The `use` declarations of `code`: (whether public, the use tree), and
/// `code` with them taken out.
fn use_declarations(code: &str) -> (Vec<(bool, String)>, String) {
    let declaration = regex::Regex::new(r"(?m)^\s*(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);")
        .expect("a valid pattern");
    let found = declaration
        .captures_iter(code)
        .map(|c| (c.get(1).is_some(), c[2].to_owned()))
        .collect();
    (found, declaration.replace_all(code, ";").into_owned())
}

/// Every path `code` names with at least two segments: those of its `use`
/// declarations (trees expanded) and those written inline.
fn paths_named(code: &str) -> Vec<Vec<String>> {
    let (declarations, inline) = use_declarations(code);
    let mut paths = Vec::new();
    // A re-export is followed to what it names, not a dependency itself.
    for (_, tree) in declarations.iter().filter(|(public, _)| !public) {
        expand_use(tree, &mut Vec::new(), &mut paths);
    }
    let inline_path = regex::Regex::new(
        r"(?:^|[^A-Za-z0-9_:])([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+)",
    )
    .expect("a valid pattern");
    for found in inline_path.captures_iter(&inline) {
        paths.push(found[1].split("::").map(str::to_owned).collect());
    }
    paths
}

/// The paths of use tree `tree` (`a::{b, c::d}` → `a::b`, `a::c::d`) below
/// `prefix`.
fn expand_use(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        for part in split_top(inner) {
            expand_use(part, &mut prefix.clone(), out);
        }
        return;
    }
    match tree.split_once("::") {
        Some((head, rest)) if !head.contains('{') => {
            prefix.push(head.trim().to_owned());
            expand_use(rest, prefix, out);
        }
        _ => {
            let name = tree.split_whitespace().next().unwrap_or_default();
            if name != "*" && name != "self" && !name.is_empty() {
                prefix.push(name.to_owned());
            }
            if !prefix.is_empty() {
                out.push(prefix.clone());
            }
        }
    }
}

/// `text` split at its top-level commas.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The items module `file` re-exports (`pub use …`), by name, with the
/// module path they were re-exported from.
fn reexports_of(file: &SourceFile, modules: &BTreeSet<ModPath>) -> BTreeMap<String, ModPath> {
    let mut found = BTreeMap::new();
    for (public, tree) in use_declarations(&file.code).0 {
        if !public {
            continue;
        }
        let mut paths = Vec::new();
        expand_use(&tree, &mut Vec::new(), &mut paths);
        for path in paths {
            let (Some(name), Some((base, used))) =
                (path.last(), base_of(&file.module, &path, modules))
            else {
                continue;
            };
            found.insert(
                name.clone(),
                [base, path[used..path.len() - 1].to_vec()].concat(),
            );
        }
    }
    found
}

/// Where a path written in module `from` starts: the module its first
/// segments name, and how many segments that took; `None` for paths into
/// other crates and local items.
fn base_of(
    from: &ModPath,
    path: &[String],
    modules: &BTreeSet<ModPath>,
) -> Option<(ModPath, usize)> {
    let mut at = from.clone();
    let mut used = 0;
    match path.first()?.as_str() {
        "crate" => {
            at.clear();
            used = 1;
        }
        "self" => used = 1,
        "super" => {
            while path.get(used).is_some_and(|s| s == "super") {
                at.pop()?;
                used += 1;
            }
        }
        first => {
            let child = [from.clone(), vec![first.to_owned()]].concat();
            if !modules.contains(&child) {
                return None;
            }
        }
    }
    Some((at, used))
}

/// The file that defines what `path` (written in module `from`) names.
fn resolve(
    from: &ModPath,
    path: &[String],
    modules: &BTreeSet<ModPath>,
    reexports: &BTreeMap<ModPath, BTreeMap<String, ModPath>>,
) -> Option<ModPath> {
    let (mut at, used) = base_of(from, path, modules)?;
    let mut segments = path[used..].iter();
    let mut hops = 0;
    while let Some(segment) = segments.next() {
        let child = [at.clone(), vec![segment.clone()]].concat();
        if modules.contains(&child) {
            at = child;
            continue;
        }
        match reexports.get(&at).and_then(|r| r.get(segment)) {
            Some(origin) if hops < 8 && *origin != at => {
                hops += 1;
                at = origin.clone();
                let rest: Vec<String> = std::iter::once(segment.clone())
                    .chain(segments.cloned())
                    .collect();
                return resolve_rest(at, &rest, modules, reexports, hops);
            }
            _ => break,
        }
    }
    Some(at)
}

/// Follows `rest` (an item, then what is inside it) from module `at`.
fn resolve_rest(
    at: ModPath,
    rest: &[String],
    modules: &BTreeSet<ModPath>,
    reexports: &BTreeMap<ModPath, BTreeMap<String, ModPath>>,
    hops: usize,
) -> Option<ModPath> {
    let Some(first) = rest.first() else {
        return Some(at);
    };
    let child = [at.clone(), vec![first.clone()]].concat();
    if modules.contains(&child) {
        return resolve_rest(child, &rest[1..], modules, reexports, hops);
    }
    match reexports.get(&at).and_then(|r| r.get(first)) {
        Some(origin) if hops < 8 && *origin != at => {
            resolve_rest(origin.clone(), rest, modules, reexports, hops + 1)
        }
        _ => Some(at),
    }
}

/// The dependencies between modules of depth at most `level` (a deeper
/// module counts as its ancestor of that depth).
fn collapse(
    edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>,
    level: usize,
) -> BTreeMap<ModPath, BTreeMap<ModPath, String>> {
    let cut = |m: &ModPath| m[..m.len().min(level)].to_vec();
    let mut collapsed: BTreeMap<ModPath, BTreeMap<ModPath, String>> = BTreeMap::new();
    for (from, targets) in edges {
        for (to, at) in targets {
            let (a, b) = (cut(from), cut(to));
            if a != b {
                collapsed
                    .entry(a)
                    .or_default()
                    .entry(b)
                    .or_insert_with(|| at.clone());
            }
        }
    }
    collapsed
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>) -> Vec<Vec<ModPath>> {
    struct Search<'a> {
        edges: &'a BTreeMap<ModPath, BTreeMap<ModPath, String>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        found: Vec<Vec<ModPath>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, v: &'a ModPath) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.edges.get(v).into_iter().flat_map(BTreeMap::keys) {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !search.index.contains_key(v) {
            search.visit(v);
        }
    }
    search.found
}
