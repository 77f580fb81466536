//! The house keeps its shape: top-level modules of `src/` depend one way,
//! the outbox knows no capability, and the HTTP plumbing imports none.
//! Read from the source text, as a newcomer would: every `crate::` path
//! outside unit tests counts.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Top-level module → the top-level modules it names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            (p.is_dir() || p.extension().is_some_and(|e| e == "rs")).then_some(name)
        })
        .filter(|name| name != "lib" && name != "main")
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let mut uses = BTreeSet::new();
        for file in rust_files(&src, module) {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for name in crate_paths(code) {
                if modules.contains(&name) && &name != module {
                    uses.insert(name);
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

fn rust_files(src: &Path, module: &str) -> Vec<std::path::PathBuf> {
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut files = Vec::new();
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The first segment after every `crate::`, and every name at the top of a
/// `crate::{…}` group.
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut current = String::new();
            let mut expecting_name = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expecting_name = true,
                    c if depth == 0 && expecting_name && (c.is_alphanumeric() || c == '_') => {
                        current.push(c)
                    }
                    _ if !current.is_empty() => {
                        names.push(std::mem::take(&mut current));
                        expecting_name = false;
                    }
                    _ => {}
                }
            }
            if !current.is_empty() {
                names.push(current);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_depend_one_way() {
    let graph = module_graph();
    assert!(
        graph.contains_key("orders") && graph.contains_key("jobs"),
        "{graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn plumbing_and_the_outbox_know_no_capability() {
    let graph = module_graph();
    let capabilities = [
        "coupons",
        "keys",
        "intake",
        "orders",
        "notices",
        "mail",
        "scheduler",
        "control",
        "outage",
        "ops",
        "merchant",
        "payments",
        "stats",
        "dashboard",
    ];
    for plumbing in [
        "http", "db", "config", "clock", "text", "jobs", "batch", "openapi",
    ] {
        let knows: Vec<_> = graph[plumbing]
            .iter()
            .filter(|m| capabilities.contains(&m.as_str()))
            .collect();
        assert!(knows.is_empty(), "{plumbing} imports {knows:?}");
    }
    assert!(graph["db"].is_empty(), "db imports {:?}", graph["db"]);
}

/// Routes are added only through `utoipa_axum`'s `routes!`, which takes
/// each path and method from the handler's `#[utoipa::path]`: a route added
/// with axum's own `.route(…)` would be served without an entry in
/// `/openapi.json` (`openapi::every_documented_operation_is_served` checks
/// the other direction).
#[test]
fn every_route_is_added_with_its_documentation() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = rust_files(&src, ".");
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    assert!(files.len() > 50, "{files:?}");
    let mut offenders = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for needle in [
            ".route(",
            ".route_service(",
            ".nest(",
            ".nest_service(",
            "routing::",
        ] {
            if text.contains(needle) {
                offenders.push(format!("{}: {needle}", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routes without an OpenAPI entry: {offenders:#?}"
    );
}

#[test]
fn the_reader_finds_group_imports() {
    let names = crate_paths("use crate::{a::b, c::{d, e}, f};\nlet x = crate::g::h();");
    assert_eq!(names, ["a", "c", "f", "g"]);
}

/// Every PL/pgSQL function the PostgreSQL migrations leave in place has its
/// current text in a `.pg.sql` file under `src/`, beside the Rust that
/// calls it, and the newest migration that creates it holds exactly that
/// text: the SQL a reader finds next to the Rust is the SQL that runs.
#[test]
fn every_postgres_function_is_beside_its_rust_as_its_newest_migration_has_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut migrations: Vec<_> = std::fs::read_dir(root.join("migrations/postgres"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    migrations.sort();
    // Function → the newest migration that creates it, unless dropped after.
    let mut live: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
    for migration in &migrations {
        let text = std::fs::read_to_string(migration).unwrap().to_lowercase();
        for (name, created) in function_statements(&text) {
            if created {
                live.insert(name, migration.clone());
            } else {
                live.remove(&name);
            }
        }
    }
    assert!(live.contains_key("allot_place_orders"), "{live:?}");

    let mut beside: BTreeMap<String, (std::path::PathBuf, String)> = BTreeMap::new();
    for file in files_ending(&root.join("src"), ".pg.sql") {
        let text = std::fs::read_to_string(&file).unwrap();
        let created: Vec<String> = function_statements(&text.to_lowercase())
            .into_iter()
            .filter_map(|(name, created)| created.then_some(name))
            .collect();
        assert_eq!(created.len(), 1, "{}: one function a file", file.display());
        let previous = beside.insert(created[0].clone(), (file.clone(), text));
        assert!(previous.is_none(), "{} is in two files", created[0]);
    }
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        beside.keys().collect::<Vec<_>>(),
        "functions in the database, and functions with a file under src/"
    );
    for (name, (file, text)) in &beside {
        let migration = std::fs::read_to_string(&live[name]).unwrap();
        assert!(
            migration.contains(text.trim()),
            "{} is not {name} as {} creates it: change the file and the migration together",
            file.display(),
            live[name].display()
        );
    }
}

/// `(function, created)` for each `create [or replace] function` (true) and
/// `drop function` (false) in `sql`, in order; `sql` in lower case.
fn function_statements(sql: &str) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    let code: String = sql
        .lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let words: Vec<&str> = code.split_whitespace().collect();
    for (n, word) in words.iter().enumerate() {
        let statement = match *word {
            "create" if words.get(n + 1) == Some(&"function") => Some((n + 2, true)),
            "create" if words.get(n + 1..n + 4) == Some(&["or", "replace", "function"][..]) => {
                Some((n + 4, true))
            }
            "drop" if words.get(n + 1) == Some(&"function") => Some((n + 2, false)),
            _ => None,
        };
        if let Some((at, created)) = statement {
            let name: String = words[at]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push((name, created));
        }
    }
    found
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                files.push(path);
            }
        }
    }
    files
}

/// No two files of `src/` reach each other through their imports (a
/// circle between files of one module means a helper lives in the wrong
/// file). A module's `mod.rs` and its direct children are not counted
/// against each other: a parent re-exports its children, and a child uses
/// its parent's types.
#[test]
fn files_import_one_way() {
    let graph = file_graph();
    assert!(graph.len() > 100, "{} files", graph.len());
    if let Some(cycle) = find_cycle(&graph) {
        panic!("files importing each other: {}", cycle.join(" -> "));
    }
}

/// Each file of `src/`, as its module path (`orders::batch`), → the files
/// it names through `crate::`, `super::`, `self::` or a child module.
fn file_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let module_of = |path: &Path| -> Vec<String> {
        let relative = path.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        parts
    };
    let files: BTreeMap<Vec<String>, std::path::PathBuf> = files_ending(&src, ".rs")
        .into_iter()
        .map(|path| (module_of(&path), path))
        .collect();
    let resolve = |parts: &[String]| -> Option<Vec<String>> {
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].to_vec())
            .find(|prefix| files.contains_key(prefix))
    };
    let mut graph = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let code = without_comments(text.split("#[cfg(test)]").next().unwrap_or_default());
        let children: BTreeSet<String> = code
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                let rest = line
                    .strip_prefix("pub ")
                    .or(line.strip_prefix("pub(crate) "));
                let rest = rest.or(line.strip_prefix("pub(super) ")).unwrap_or(line);
                let name = rest.strip_prefix("mod ")?.strip_suffix(';')?;
                Some(name.trim().to_string())
            })
            .collect();
        let mut targets = BTreeSet::new();
        for raw in paths_named(&code) {
            let parts: Vec<String> = raw.split("::").map(str::to_string).collect();
            let target: Vec<String> = match parts[0].as_str() {
                "crate" => parts[1..].to_vec(),
                "self" => [module.clone(), parts[1..].to_vec()].concat(),
                "super" => {
                    let ups = parts.iter().take_while(|p| *p == "super").count();
                    let base = &module[..module.len().saturating_sub(ups)];
                    [base.to_vec(), parts[ups..].to_vec()].concat()
                }
                first if children.contains(first) => [module.clone(), parts].concat(),
                _ => continue,
            };
            let Some(found) = resolve(&target) else {
                continue;
            };
            let parent_or_child = found.len() + 1 == module.len() && module.starts_with(&found)
                || module.len() + 1 == found.len() && found.starts_with(module);
            if &found != module && !parent_or_child {
                targets.insert(found.join("::"));
            }
        }
        graph.insert(module.join("::"), targets);
    }
    graph
}

/// `code` without its `//` comments (doc links name paths but import
/// nothing), strings kept.
fn without_comments(code: &str) -> String {
    code.lines()
        .map(|line| {
            let mut quoted = false;
            let mut escaped = false;
            for (at, c) in line.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    '/' if !quoted && line[at..].starts_with("//") => return &line[..at],
                    _ => {}
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path `code` names from `crate`, `super` or `self`, `use` groups
/// expanded (`a::{b, c::d}` → `a::b`, `a::c::d`), and the first segment of
/// paths in `use` lines that start at a child module.
fn paths_named(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let tree: String = rest[..end].split_whitespace().collect();
        expand_use("", &tree, &mut paths);
    }
    let is_name = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    for start in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(start) {
            if code[..at].chars().last().is_some_and(is_name) {
                continue;
            }
            let path: String = code[at..].chars().take_while(|&c| is_name(c)).collect();
            paths.push(path.trim_end_matches(':').to_string());
        }
    }
    paths
}

fn expand_use(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        for part in tree.split(',').filter(|p| !p.is_empty()) {
            let part = part.split(" as ").next().unwrap_or(part);
            out.push(format!("{prefix}{part}"));
        }
        return;
    };
    let head = &tree[..open];
    let mut depth = 0;
    let mut close = tree.len();
    for (at, c) in tree.char_indices().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = at;
                    break;
                }
            }
            _ => {}
        }
    }
    let inner = &tree[open + 1..close.min(tree.len())];
    let mut item = String::new();
    let mut depth = 0;
    for c in inner.chars().chain(std::iter::once(',')) {
        match c {
            ',' if depth == 0 => {
                if !item.is_empty() {
                    expand_use(&format!("{prefix}{head}"), &std::mem::take(&mut item), out);
                }
            }
            '{' | '}' => {
                depth += if c == '{' { 1 } else { -1 };
                item.push(c);
            }
            c => item.push(c),
        }
    }
    if let Some(after) = tree.get(close + 1..).and_then(|r| r.strip_prefix(',')) {
        expand_use(prefix, after, out);
    }
}

/// States are enums (`stored_state!`: an order's, a key's, a job's, an
/// attempt's, a command reply's, a process's), read from their text once at
/// the row boundary. Outside those declarations no Rust compares a value
/// against a state's text (`== "dead"`, `"fulfilled" =>`): such a
/// comparison silently stays false when a state is renamed.
#[test]
fn states_are_compared_as_their_types() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = files_ending(&src, ".rs");
    let mut declarations = Vec::new();
    let mut states = BTreeSet::new();
    let mut codes = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let code = without_comments(text.split("#[cfg(test)]").next().unwrap_or_default());
        let mut outside = String::new();
        let mut rest = code.as_str();
        while let Some(at) = rest.find("stored_state! {") {
            outside.push_str(&rest[..at]);
            let block = &rest[at..];
            let end = block.find("\n}").map_or(block.len(), |n| n + 2);
            for (n, _) in block[..end].match_indices(" = \"") {
                let value = &block[n + 4..];
                states.insert(value[..value.find('"').unwrap()].to_string());
            }
            declarations.push(file.display().to_string());
            rest = &block[end..];
        }
        outside.push_str(rest);
        codes.push((file, outside));
    }
    for expected in [
        "fulfilled",
        "needs_attention",
        "revoked",
        "dead",
        "lease_expired",
    ] {
        assert!(states.contains(expected), "{expected} in {states:?}");
    }
    assert!(declarations.len() >= 6, "{declarations:?}");
    let mut offenders = Vec::new();
    for (file, code) in codes {
        for state in &states {
            let literal = format!("\"{state}\"");
            for needle in [
                format!("== {literal}"),
                format!("!= {literal}"),
                format!("{literal} =="),
                format!("{literal} !="),
                format!("{literal} =>"),
                format!("{literal} |"),
            ] {
                if code.contains(&needle) {
                    offenders.push(format!("{}: {needle}", file.display()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "states compared as text: {offenders:#?}"
    );
}

/// SQL for three dialects is written in three idioms (`src/db/sql.rs`):
/// one text for every backend (`on_tx!`, `on_db!` and the helpers beside
/// them), one `match` per statement that differs with an arm for each
/// backend that runs it (`Tx`, `Db`, `db::Step`, `Backend`), and the
/// PL/pgSQL files. Outside `src/db` nothing picks a backend any other way:
/// no `if let` or `let … else` on one, no comparison of `Backend`s, no
/// catch-all arm in a match on backends (a statement would fall into it
/// unseen on a backend it was not written for), and no shared-text macro
/// inside an arm of one.
#[test]
fn sql_is_written_in_three_idioms() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    let mut matches = 0;
    for file in files_ending(&src, ".rs") {
        if file.starts_with(src.join("db")) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let found = backend_picks(&text);
        matches += found.matches;
        offenders.extend(
            found
                .offenders
                .into_iter()
                .map(|o| format!("{}: {o}", file.display())),
        );
    }
    assert!(matches >= 10, "only {matches} matches on a backend found");
    assert!(
        offenders.is_empty(),
        "backends picked outside the three idioms: {offenders:#?}"
    );
    // The check sees each way it forbids.
    let wrong = backend_picks(
        "fn f() {
            if let Tx::Sqlite(c) = tx {}
            let Db::Postgres(pool) = db else { return };
            if let (true, Db::Postgres(pool)) = (a, db) {}
            let mysql = tx.backend() == Backend::MySql;
            match tx { Tx::Sqlite(c) => 1, _ => 2 };
            match db { Db::Postgres(p) => 1, other => 2 };
            match db { Db::Postgres(p) => 1, Db::Sqlite { .. } | Db::MySql(_) => on_db!(db, read, |p, sql| 2) };
        }",
    );
    assert_eq!(wrong.offenders.len(), 7, "{:#?}", wrong.offenders);
}

#[derive(Default)]
struct BackendPicks {
    matches: usize,
    offenders: Vec<String>,
}

impl<'a> syn::visit::Visit<'a> for BackendPicks {
    fn visit_expr_let(&mut self, node: &'a syn::ExprLet) {
        if names_backend(&node.pat) {
            self.offenders.push("`if let` on a backend".into());
        }
        syn::visit::visit_expr_let(self, node);
    }
    fn visit_local(&mut self, node: &'a syn::Local) {
        if node.init.as_ref().is_some_and(|i| i.diverge.is_some()) && names_backend(&node.pat) {
            self.offenders.push("`let … else` on a backend".into());
        }
        syn::visit::visit_local(self, node);
    }
    fn visit_expr_binary(&mut self, node: &'a syn::ExprBinary) {
        let is_backend = |e: &syn::Expr| match e {
            syn::Expr::Path(p) => p.path.segments.iter().any(|s| s.ident == "Backend"),
            _ => false,
        };
        if matches!(node.op, syn::BinOp::Eq(_) | syn::BinOp::Ne(_))
            && (is_backend(&node.left) || is_backend(&node.right))
        {
            self.offenders.push("`Backend`s compared".into());
        }
        syn::visit::visit_expr_binary(self, node);
    }
    fn visit_expr_match(&mut self, node: &'a syn::ExprMatch) {
        if node.arms.iter().any(|arm| names_backend(&arm.pat)) {
            self.matches += 1;
            for arm in &node.arms {
                if catches_all(&arm.pat) {
                    self.offenders
                        .push("a catch-all arm in a match on backends".into());
                }
                if let syn::Expr::Macro(m) = &*arm.body {
                    let name = m.mac.path.segments.last().unwrap().ident.to_string();
                    if name == "on_tx" || name == "on_db" {
                        self.offenders
                            .push(format!("`{name}!` inside an arm of a match on backends"));
                    }
                }
            }
        }
        syn::visit::visit_expr_match(self, node);
    }
}

fn backend_picks(code: &str) -> BackendPicks {
    use syn::visit::Visit;
    let file = syn::parse_file(code).unwrap();
    let mut found = BackendPicks::default();
    found.visit_file(&file);
    found
}

/// `pat` names a backend: `Tx::…`, `Db::…`, `Step::…`, `Backend::…`,
/// anywhere inside it.
fn names_backend(pat: &syn::Pat) -> bool {
    let is_backend = |path: &syn::Path| {
        let n = path.segments.len();
        n >= 2
            && ["Tx", "Db", "Step", "Backend"]
                .iter()
                .any(|name| path.segments[n - 2].ident == name)
    };
    match pat {
        syn::Pat::TupleStruct(p) => is_backend(&p.path),
        syn::Pat::Struct(p) => is_backend(&p.path),
        syn::Pat::Path(p) => is_backend(&p.path),
        syn::Pat::Tuple(p) => p.elems.iter().any(names_backend),
        syn::Pat::Or(p) => p.cases.iter().any(names_backend),
        syn::Pat::Reference(p) => names_backend(&p.pat),
        syn::Pat::Paren(p) => names_backend(&p.pat),
        _ => false,
    }
}

/// `pat` matches whatever is left: `_`, or a bare name.
fn catches_all(pat: &syn::Pat) -> bool {
    match pat {
        syn::Pat::Wild(_) => true,
        syn::Pat::Ident(p) => p.subpat.is_none(),
        syn::Pat::Or(p) => p.cases.iter().any(catches_all),
        _ => false,
    }
}
