//! The layering of `src/`, checked from the code's own `crate::` paths: binaries → `app` →
//! commands → domain modules → `os` and `output`. No import cycles between modules, no command
//! importing another, nothing below the commands reaching up to them, to `app` or to the
//! command-line types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's name as this check sees it: `src/instance/lock.rs` is `instance`, a command is
/// `commands::NAME`.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Modules no domain module may import: they sit above the domain.
const ABOVE_THE_DOMAIN: [&str; 3] = ["app", "cli", "commands"];

/// The bottom layer: platform calls and plumbing that import no domain module.
const BOTTOM: [&str; 4] = ["os", "output", "exit_codes", "signals"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?.with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [first, ..] if first == "lib" || first == "bin" => None,
        [first, command, ..] if first == "commands" => Some(format!("commands::{command}")),
        [first, ..] => Some(first.clone()),
        [] => None,
    }
}

/// The code of a file without its comments and without its `#[cfg(test)] mod tests`, where a
/// test may reach anywhere.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a` or `crate::commands::b` a piece of code names.
fn imports_of(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name == "commands" {
            let after = &rest["commands".len()..];
            if let Some(command) = after.strip_prefix("::") {
                let command: String = command
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.insert(format!("commands::{command}"));
                continue;
            }
        }
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

fn graph_of_src() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let imports = graph.entry(module.clone()).or_default();
        for import in imports_of(&code_of(&text)) {
            if import != module && import != "commands" {
                imports.insert(import);
            }
        }
    }
    graph
}

/// The first cycle found, as the path that closes it.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|seen| seen == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

/// Every import that breaks a layer rule, described.
fn broken_rules(graph: &Graph) -> Vec<String> {
    let mut broken = Vec::new();
    for (module, imports) in graph {
        for import in imports {
            let is_command = |name: &str| name.starts_with("commands::");
            if is_command(module) && is_command(import) {
                broken.push(format!(
                    "the command `{module}` imports the command `{import}`"
                ));
            }
            // `commands` itself holds what the commands share: it is of their layer.
            let module_is_domain =
                !is_command(module) && !matches!(module.as_str(), "app" | "cli" | "commands");
            let import_is_above = is_command(import) || ABOVE_THE_DOMAIN.contains(&import.as_str());
            if module_is_domain && import_is_above {
                broken.push(format!("`{module}` reaches up to `{import}`"));
            }
            if BOTTOM.contains(&module.as_str()) && !BOTTOM.contains(&import.as_str()) {
                broken.push(format!(
                    "`{module}` is at the bottom but imports `{import}`"
                ));
            }
        }
    }
    broken
}

#[test]
fn src_has_no_import_cycle() {
    let graph = graph_of_src();
    assert!(
        graph.contains_key("instance") && graph.contains_key("commands::serve"),
        "the walk found no modules: {graph:?}"
    );
    if let Some(found) = cycle(&graph) {
        panic!("an import cycle: {}", found.join(" → "));
    }
}

#[test]
fn src_keeps_its_layers() {
    let broken = broken_rules(&graph_of_src());
    assert!(
        broken.is_empty(),
        "layer rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_sees_cycles_and_broken_layers() {
    let graph: Graph = [
        ("commands::stop", vec!["commands::status", "instance"]),
        ("instance", vec!["supervise"]),
        ("supervise", vec!["instance", "cli"]),
        ("os", vec!["port"]),
    ]
    .into_iter()
    .map(|(module, imports)| {
        (
            module.to_owned(),
            imports.into_iter().map(str::to_owned).collect(),
        )
    })
    .collect();
    let found = cycle(&graph).expect("a cycle");
    assert!(found.contains(&"instance".to_owned()) && found.contains(&"supervise".to_owned()));
    let broken = broken_rules(&graph);
    assert!(
        broken
            .iter()
            .any(|rule| rule.contains("imports the command"))
    );
    assert!(
        broken
            .iter()
            .any(|rule| rule.contains("reaches up to `cli`"))
    );
    assert!(broken.iter().any(|rule| rule.contains("at the bottom")));
    assert_eq!(
        imports_of("use crate::instance::{self, Scope};\nlet x = crate::commands::serve::f;"),
        ["commands::serve", "instance"].map(str::to_owned).into()
    );
    assert_eq!(code_of("use a; // crate::app\n"), "use a; ");
}
