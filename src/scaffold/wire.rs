//! `init --wire`: the one place where `main` binds its own port, found by parsing main.rs, and
//! the edit that makes it take the glue's listener instead. Only the spans that change are
//! replaced; every other byte of the file stays as it was.
//!
//! Only the call is swapped (`TcpListener::bind(ADDR)` becomes `portguard::listener()`, of the
//! same type), so the user's own `.await`, `?` or `.unwrap()` after it stay and `main` keeps
//! its signature. actix-web's `.bind(ADDR)` becomes `.listen(portguard::listener()?)`, with
//! `.expect` instead of `?` where `main` returns `()`.

use std::collections::HashMap;
use std::ops::Range;

use syn::spanned::Spanned as _;
use syn::visit::{self, Visit};
use syn::{Expr, Item, ReturnType, Stmt, Type, UseTree};

use super::Framework;

/// How the glue is named from main.rs: `mod NAME;`, with `#[path]` when it is not beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    pub(crate) name: String,
    pub(crate) path_attr: Option<String>,
}

impl Module {
    fn declaration(&self) -> String {
        match &self.path_attr {
            Some(path) => format!("#[path = {path:?}]\nmod {};", self.name),
            None => format!("mod {};", self.name),
        }
    }
}

/// What `init` can do with main.rs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// `main` already takes the glue's listener: nothing is left to do.
    Wired,
    /// Exactly one bind: main.rs as `--wire` leaves it.
    Edit { after: String, bind: Bind },
    /// Not one bind (or no `main`, or a file that does not parse): the lines to paste, and why
    /// they are not pasted for the user.
    Snippet {
        why: String,
        lines: String,
        wildcard: Option<String>,
    },
}

/// A recognised bind in `main`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bind {
    /// The call as written, such as `tokio::net::TcpListener::bind("0.0.0.0:3000")`.
    pub(crate) call: String,
    /// The address it bound when that was a wildcard (`"0.0.0.0:3000"`), for the host note.
    pub(crate) wildcard: Option<String>,
}

/// What `--wire` would do with `text`, the source of the package's `main`.
#[must_use]
pub(crate) fn plan(text: &str, framework: Framework, module: &Module) -> Plan {
    let offset = skipped_prefix(text);
    let file = match syn::parse_str::<syn::File>(&text[offset..]) {
        Ok(file) => file,
        Err(error) => {
            let at = error.span().start();
            return Plan::Snippet {
                why: format!(
                    "it could not be parsed (line {}: {error}), so it was left alone",
                    at.line
                ),
                lines: snippet(framework, module, None),
                wildcard: None,
            };
        }
    };
    let Some(main) = file.items.iter().find_map(|item| match item {
        Item::Fn(function) if function.sig.ident == "main" => Some(function),
        _ => None,
    }) else {
        return Plan::Snippet {
            why: "it has no `fn main`".to_owned(),
            lines: snippet(framework, module, None),
            wildcard: None,
        };
    };
    let returns_unit = match &main.sig.output {
        ReturnType::Default => true,
        ReturnType::Type(_, ty) => matches!(&**ty, Type::Tuple(tuple) if tuple.elems.is_empty()),
    };

    let mut imports = HashMap::new();
    let local_uses = main.block.stmts.iter().filter_map(|stmt| match stmt {
        Stmt::Item(item) => Some(item),
        _ => None,
    });
    for item in file.items.iter().chain(local_uses) {
        if let Item::Use(item) = item {
            collect_imports(&item.tree, &mut Vec::new(), &mut imports);
        }
    }
    let mut finder = Finder {
        imports: &imports,
        framework,
        module: &module.name,
        returns_unit,
        text: &text[offset..],
        found: Vec::new(),
        uses_glue: false,
    };
    let mut stmts = Vec::new();
    for (index, stmt) in main.block.stmts.iter().enumerate() {
        let before = finder.found.len();
        finder.visit_stmt(stmt);
        stmts.extend(std::iter::repeat_n(index, finder.found.len() - before));
    }
    if finder.uses_glue {
        return Plan::Wired;
    }
    let found = finder.found;
    let wildcard = found.iter().find_map(|bind| bind.bind.wildcard.clone());
    let [bind] = found.as_slice() else {
        let what = bind_name(framework);
        let why = if found.is_empty() {
            format!("its `main` has no `{what}` that init recognises")
        } else {
            format!(
                "its `main` has {} `{what}` calls, and init does not choose",
                found.len()
            )
        };
        return Plan::Snippet {
            why,
            lines: snippet(framework, module, Some(returns_unit)),
            wildcard,
        };
    };

    Plan::Edit {
        after: edit(text, offset, &file.items, main, stmts[0], bind, module),
        bind: bind.bind.clone(),
    }
}

/// `text` with `bind` (in statement `index` of `main`) swapped for the glue's listener,
/// `notify_ready()` once it is there, and the glue's module declared.
fn edit(
    text: &str,
    offset: usize,
    items: &[Item],
    main: &syn::ItemFn,
    index: usize,
    bind: &Found,
    module: &Module,
) -> String {
    let stmt = &main.block.stmts[index];
    let stmt_range = shifted(stmt.span().byte_range(), offset);
    let is_tail = matches!(stmt, Stmt::Expr(_, None)) && index + 1 == main.block.stmts.len();
    let indent = indent_at(text, stmt_range.start);
    let notify = format!("{}::notify_ready();", module.name);
    let mut edits = vec![(
        shifted(bind.range.clone(), offset),
        bind.replacement.clone(),
    )];
    if is_tail {
        // The server runs in the tail expression: ready once the listener is there, before it.
        edits.push((
            stmt_range.start..stmt_range.start,
            format!("{notify}\n{indent}"),
        ));
    } else {
        edits.push((
            stmt_range.end..stmt_range.end,
            format!("\n{indent}{notify}"),
        ));
    }
    if !declares(items, &module.name)
        && let Some(first) = items.first()
    {
        let at = shifted(first.span().byte_range(), offset).start;
        let gap = if matches!(first, Item::Mod(_)) {
            "\n"
        } else {
            "\n\n"
        };
        edits.push((at..at, format!("{}{gap}", module.declaration())));
    }
    apply(text, edits)
}

/// The lines a user pastes into `main` to use the glue: they compile in that `main` as it
/// is, with `?` only where `main` returns something (`returns_unit`: `None` when unknown).
#[must_use]
pub(crate) fn snippet(framework: Framework, module: &Module, returns_unit: Option<bool>) -> String {
    let name = &module.name;
    let fallible = if returns_unit == Some(true) {
        ".expect(\"cannot listen\")"
    } else {
        "?"
    };
    let declaration = module.declaration();
    match framework {
        Framework::Std => format!(
            "{declaration}\n\
             // in main(), instead of `let listener = TcpListener::bind(...)...;`:\n\
             let listener = {name}::listener(){fallible};\n\
             {name}::notify_ready();"
        ),
        Framework::Tokio => format!(
            "{declaration}\n\
             // in main(), instead of `let listener = TcpListener::bind(...).await...;`:\n\
             let listener = {name}::listener().await{fallible};\n\
             {name}::notify_ready();\n\
             // and stop accepting when {name}::shutdown_signal().await completes"
        ),
        Framework::Axum => format!(
            "{declaration}\n\
             // in main(), instead of `let listener = tokio::net::TcpListener::bind(...).await...;`:\n\
             let listener = {name}::listener().await{fallible};\n\
             {name}::notify_ready();\n\
             // and, to stop gracefully: axum::serve(listener, app).with_graceful_shutdown({name}::shutdown_signal())"
        ),
        Framework::ActixWeb => format!(
            "{declaration}\n\
             // in main(), instead of `.bind(...)` on the `HttpServer`:\n\
             .listen({name}::listener(){fallible})\n\
             // and before the server runs:\n\
             {name}::notify_ready();"
        ),
    }
}

fn bind_name(framework: Framework) -> &'static str {
    match framework {
        Framework::Std | Framework::Tokio | Framework::Axum => "TcpListener::bind(...)",
        Framework::ActixWeb => "HttpServer::new(...).bind(...)",
    }
}

/// A BOM and a `#!` line, which rustc skips and the parser does not take.
fn skipped_prefix(text: &str) -> usize {
    let bom = if text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    let rest = &text[bom..];
    if rest.starts_with("#!") && !rest[2..].trim_start().starts_with('[') {
        bom + rest.find('\n').unwrap_or(rest.len())
    } else {
        bom
    }
}

fn shifted(range: Range<usize>, offset: usize) -> Range<usize> {
    range.start + offset..range.end + offset
}

/// The blanks that start the line `at` is on, when only blanks come before it there.
fn indent_at(text: &str, at: usize) -> &str {
    let line_start = text[..at].rfind('\n').map_or(0, |newline| newline + 1);
    let before = &text[line_start..at];
    if before.chars().all(|c| c == ' ' || c == '\t') {
        before
    } else {
        "    "
    }
}

/// `text` with each range replaced; the ranges do not overlap.
fn apply(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(range, _)| std::cmp::Reverse((range.start, range.end)));
    let mut out = text.to_owned();
    for (range, replacement) in edits {
        out.replace_range(range, &replacement);
    }
    out
}

fn declares(items: &[Item], name: &str) -> bool {
    items
        .iter()
        .any(|item| matches!(item, Item::Mod(module) if module.ident == name))
}

/// The names `use` brings in, each with the path it stands for.
fn collect_imports(
    tree: &UseTree,
    prefix: &mut Vec<String>,
    imports: &mut HashMap<String, Vec<String>>,
) {
    let full = |prefix: &[String], ident: &syn::Ident| {
        let mut path = prefix.to_vec();
        if ident != "self" {
            path.push(ident.to_string());
        }
        path
    };
    match tree {
        UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            collect_imports(&path.tree, prefix, imports);
            prefix.pop();
        }
        UseTree::Name(name) => {
            let path = full(prefix, &name.ident);
            if let Some(last) = path.last() {
                imports.insert(last.clone(), path);
            }
        }
        UseTree::Rename(rename) => {
            imports.insert(rename.rename.to_string(), full(prefix, &rename.ident));
        }
        UseTree::Group(group) => {
            for tree in &group.items {
                collect_imports(tree, prefix, imports);
            }
        }
        UseTree::Glob(_) => {}
    }
}

struct Found {
    range: Range<usize>,
    replacement: String,
    bind: Bind,
}

struct Finder<'a> {
    imports: &'a HashMap<String, Vec<String>>,
    framework: Framework,
    module: &'a str,
    returns_unit: bool,
    text: &'a str,
    found: Vec<Found>,
    uses_glue: bool,
}

/// Which `TcpListener` a bind belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    Std,
    Tokio,
}

impl Finder<'_> {
    /// The path as written, its first segment expanded through the file's `use` items.
    fn resolve(&self, path: &syn::Path) -> Vec<String> {
        let mut segments: Vec<String> = path
            .segments
            .iter()
            .map(|segment| segment.ident.to_string())
            .collect();
        if path.leading_colon.is_none()
            && let Some(first) = segments.first()
            && let Some(full) = self.imports.get(first)
        {
            let mut expanded = full.clone();
            expanded.extend(segments.drain(1..));
            segments = expanded;
        }
        segments
    }

    fn listener_of(&self, path: &[String]) -> Option<Listener> {
        let [prefix @ .., listener, bind] = path else {
            return None;
        };
        if listener != "TcpListener" || bind != "bind" {
            return None;
        }
        match prefix.first().map(String::as_str) {
            Some("std" | "core") => Some(Listener::Std),
            Some("tokio") => Some(Listener::Tokio),
            // A glob import: taken to be the framework's own.
            None => match self.framework {
                Framework::Std => Some(Listener::Std),
                Framework::Tokio | Framework::Axum => Some(Listener::Tokio),
                Framework::ActixWeb => None,
            },
            Some(_) => None,
        }
    }

    fn wanted(&self) -> Option<Listener> {
        match self.framework {
            Framework::Std => Some(Listener::Std),
            Framework::Tokio | Framework::Axum => Some(Listener::Tokio),
            Framework::ActixWeb => None,
        }
    }

    /// Whether `expr` is, through method calls, `?` and `.await`, `HttpServer::new(...)`.
    fn is_http_server(&self, mut expr: &Expr) -> bool {
        loop {
            expr = match expr {
                Expr::MethodCall(call) => &call.receiver,
                Expr::Try(try_expr) => &try_expr.expr,
                Expr::Await(await_expr) => &await_expr.base,
                Expr::Paren(paren) => &paren.expr,
                Expr::Call(call) => {
                    let Expr::Path(func) = &*call.func else {
                        return false;
                    };
                    let path = self.resolve(&func.path);
                    return matches!(
                        path.as_slice(),
                        [prefix @ .., server, new]
                            if server == "HttpServer"
                                && new == "new"
                                && prefix.first().is_none_or(|crate_name| crate_name == "actix_web")
                    );
                }
                _ => return false,
            };
        }
    }

    fn wildcard(&self, args: Range<usize>) -> Option<String> {
        let written = self.text.get(args)?;
        let compact: String = written.chars().filter(|c| !c.is_whitespace()).collect();
        let wildcard = ["0.0.0.0", "UNSPECIFIED", "\"::\"", "[::]", "[0,0,0,0]"]
            .iter()
            .any(|marker| compact.contains(marker));
        wildcard.then(|| {
            written
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim()
                .to_owned()
        })
    }
}

impl<'ast> Visit<'ast> for Finder<'_> {
    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let Expr::Path(func) = &*call.func {
            let path = self.resolve(&func.path);
            if path.len() == 2 && path[0] == self.module && path[1] == "listener" {
                self.uses_glue = true;
            }
            if self.listener_of(&path).is_some() && self.listener_of(&path) == self.wanted() {
                let range = call.span().byte_range();
                self.found.push(Found {
                    bind: Bind {
                        call: self.text[range.clone()].to_owned(),
                        wildcard: self.wildcard(call.paren_token.span.join().byte_range()),
                    },
                    range,
                    replacement: format!("{}::listener()", self.module),
                });
            }
        }
        visit::visit_expr_call(self, call);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        if self.framework == Framework::ActixWeb
            && call.method == "bind"
            && self.is_http_server(&call.receiver)
        {
            let range = call.dot_token.span.byte_range().start
                ..call.paren_token.span.close().byte_range().end;
            let fallible = if self.returns_unit {
                ".expect(\"cannot listen\")"
            } else {
                "?"
            };
            self.found.push(Found {
                bind: Bind {
                    call: self.text[range.clone()].to_owned(),
                    wildcard: self.wildcard(call.paren_token.span.join().byte_range()),
                },
                range,
                replacement: format!(".listen({}::listener(){fallible})", self.module),
            });
        }
        visit::visit_expr_method_call(self, call);
    }

    // A function or module declared inside `main` is not `main`.
    fn visit_item(&mut self, _: &'ast Item) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> Module {
        Module {
            name: "portguard".to_owned(),
            path_attr: None,
        }
    }

    fn edit(text: &str, framework: Framework) -> (String, Bind) {
        match plan(text, framework, &module()) {
            Plan::Edit { after, bind } => (after, bind),
            other => panic!("no edit: {other:?}"),
        }
    }

    #[test]
    fn the_axum_bind_is_swapped_and_the_rest_kept() {
        let text = "use axum::{routing::get, Router};\n\n#[tokio::main]\nasync fn main() {\n    \
                    let app = Router::new().route(\"/\", get(|| async { \"Hello, World!\" }));\n\n    \
                    // listening globally on port 3000\n    \
                    let listener = tokio::net::TcpListener::bind(\"0.0.0.0:3000\").await.unwrap();\n    \
                    axum::serve(listener, app).await.unwrap();\n}\n";
        let (after, bind) = edit(text, Framework::Axum);
        assert_eq!(
            after,
            text.replace("use axum", "mod portguard;\n\nuse axum")
                .replace(
                    "tokio::net::TcpListener::bind(\"0.0.0.0:3000\").await.unwrap();",
                    "portguard::listener().await.unwrap();\n    portguard::notify_ready();"
                )
        );
        assert_eq!(bind.wildcard.as_deref(), Some("\"0.0.0.0:3000\""));
    }

    #[test]
    fn an_imported_listener_is_told_by_its_use() {
        let text = "use tokio::net::TcpListener;\n\n#[tokio::main]\nasync fn main() -> Result<(), Box<dyn std::error::Error>> {\n    let listener = TcpListener::bind(\"127.0.0.1:8080\").await?;\n    loop {}\n}\n";
        let (after, bind) = edit(text, Framework::Tokio);
        assert!(
            after.contains("let listener = portguard::listener().await?;\n    portguard::notify_ready();\n    loop {}"),
            "{after}"
        );
        assert_eq!(bind.wildcard, None);
        // The same file seen as a std server has no bind of std's.
        assert!(matches!(
            plan(text, Framework::Std, &module()),
            Plan::Snippet { .. }
        ));
    }

    #[test]
    fn actix_web_binds_in_a_tail_expression() {
        let text = "use actix_web::{App, HttpServer};\n\n#[actix_web::main]\nasync fn main() -> std::io::Result<()> {\n    HttpServer::new(|| App::new())\n        .bind((\"127.0.0.1\", 8080))?\n        .run()\n        .await\n}\n";
        let (after, _) = edit(text, Framework::ActixWeb);
        assert!(
            after.contains(
                "    portguard::notify_ready();\n    HttpServer::new(|| App::new())\n        .listen(portguard::listener()?)?\n"
            ),
            "{after}"
        );
        let unit = text.replace(" -> std::io::Result<()>", "");
        let (after, _) = edit(&unit, Framework::ActixWeb);
        assert!(
            after.contains(".listen(portguard::listener().expect(\"cannot listen\"))?"),
            "{after}"
        );
    }

    #[test]
    fn several_binds_or_none_give_a_snippet_that_fits_main() {
        let two = "fn main() {\n    let a = std::net::TcpListener::bind(\"0.0.0.0:80\").unwrap();\n    let b = std::net::TcpListener::bind(\"127.0.0.1:81\").unwrap();\n}\n";
        let Plan::Snippet {
            why,
            lines,
            wildcard,
        } = plan(two, Framework::Std, &module())
        else {
            panic!("two binds are not wired");
        };
        assert!(why.contains("has 2"), "{why}");
        assert!(lines.contains("portguard::listener().expect("), "{lines}");
        assert_eq!(wildcard.as_deref(), Some("\"0.0.0.0:80\""));
        let none = "fn main() -> std::io::Result<()> {\n    Ok(())\n}\n";
        let Plan::Snippet { lines, .. } = plan(none, Framework::Std, &module()) else {
            panic!("nothing to wire");
        };
        assert!(lines.contains("portguard::listener()?;"), "{lines}");
    }

    #[test]
    fn a_wired_main_and_a_bom_and_shebang() {
        let wired = "mod portguard;\nfn main() {\n    let l = portguard::listener().unwrap();\n}\n";
        assert_eq!(plan(wired, Framework::Std, &module()), Plan::Wired);
        let text = "\u{feff}#!/usr/bin/env run-cargo-script\nuse std::net::TcpListener;\nfn main() {\n    let l = TcpListener::bind(\"[::]:80\").unwrap();\n}\n";
        let (after, bind) = edit(text, Framework::Std);
        assert!(
            after.starts_with("\u{feff}#!/usr/bin/env run-cargo-script\nmod portguard;\n\nuse std"),
            "{after}"
        );
        assert!(
            after.contains(
                "let l = portguard::listener().unwrap();\n    portguard::notify_ready();\n}"
            ),
            "{after}"
        );
        assert!(bind.wildcard.is_some());
    }

    #[test]
    fn a_file_that_does_not_parse_is_left_alone() {
        let Plan::Snippet { why, .. } = plan("fn main( {", Framework::Std, &module()) else {
            panic!("a broken file is not edited");
        };
        assert!(why.contains("could not be parsed"), "{why}");
    }
}
