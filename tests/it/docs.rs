//! Every console example in README.md and docs/*.md, run as it is written, so that the
//! documentation cannot drift from what portguard prints.
//!
//! A `console` code block is a list of `$ COMMAND` lines, each followed by the output it must
//! print (stdout and stderr together, as a terminal shows them). In the expected output `[..]`
//! stands for any text within a line, `...` on a line of its own for any number of lines, and
//! `[ROOT]` for the folder the block runs in. A block runs in one `sh` session, so `cd` and
//! variables carry over from one command to the next, with `cargo` on PATH finding the
//! `cargo-serve-safe` and `cargo-portguard` under test:
//!
//! - in a fresh copy of `examples/hello-server`, or, when its first command is `cargo new`, in
//!   an empty folder;
//! - each command must exit 0, unless the next command is `echo $?`, which shows its code;
//! - a block that starts a server (`serve-safe`, `portguard run`) gets `PORT` set to a port the
//!   OS just handed out, and that port reads as the example's preferred port, 5000, in the
//!   output; whatever such a block leaves running is stopped when it ends, pass or fail.
//!
//! Code blocks of other kinds (`sh`, `text`, `toml`, ...) are not run.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use snapbox::{Assert, Redactions, report::Palette};

use crate::support::*;

/// The pages whose console examples run; every page in docs/ must be here (checked below).
const PAGES: &[&str] = &[
    "README.md",
    "docs/commands.md",
    "docs/configuration.md",
    "docs/ports.md",
    "docs/production.md",
    "docs/security.md",
    "docs/state.md",
];

/// The port the examples show for a server they start: the example's `preferred-port`.
const DOCUMENTED_PORT: &str = "5000";

/// Separates the commands' outputs in the session's one output stream.
const MARK: &str = "@@portguard-docs-example-status:";

/// Bound on one block, which may build the example from nothing; a command that never ends
/// (a server started without `--detach`) fails the block at this bound.
const BLOCK_TIMEOUT: Duration = Duration::from_mins(3);

/// One `$ COMMAND` of a block and what it must print.
#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    expected: String,
}

/// One `console` code block.
#[derive(Debug)]
struct Block {
    line: usize,
    steps: Vec<Step>,
}

impl Block {
    fn starts_a_server(&self) -> bool {
        self.steps.iter().any(|step| {
            step.command.contains("serve-safe") || step.command.contains("portguard run")
        })
    }

    fn in_empty_folder(&self) -> bool {
        self.steps
            .first()
            .is_some_and(|step| step.command.starts_with("cargo new "))
    }
}

/// The console blocks of a Markdown page. A fence may be indented (in a list); its lines lose
/// that indentation. A command line ending in ` \` goes on in the next line.
fn console_blocks(page: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut lines = page.lines().enumerate().map(|(at, text)| (at + 1, text));
    while let Some((line, text)) = lines.next() {
        let indent = text.len() - text.trim_start().len();
        let fence = text.trim_start();
        if !fence.starts_with("```") {
            continue;
        }
        let is_console = fence.trim_start_matches('`').trim() == "console";
        let mut block = Block {
            line,
            steps: Vec::new(),
        };
        let mut closed = false;
        while let Some((at, raw)) = lines.next() {
            let text = raw.get(indent..).unwrap_or(raw.trim_start());
            if text.trim_end() == "```" {
                closed = true;
                break;
            }
            if !is_console {
                continue;
            }
            if let Some(command) = text.strip_prefix("$ ") {
                let mut command = command.to_owned();
                while command.ends_with('\\') {
                    let Some((_, next)) = lines.next() else { break };
                    command.push('\n');
                    command.push_str(next.trim_start());
                }
                block.steps.push(Step {
                    line: at,
                    command,
                    expected: String::new(),
                });
            } else if let Some(step) = block.steps.last_mut() {
                step.expected.push_str(text);
                step.expected.push('\n');
            } else if !text.trim().is_empty() {
                return Err(format!(
                    "line {at}: a console block starts with `$ COMMAND`, found {text:?}"
                ));
            }
        }
        if !closed {
            return Err(format!("line {line}: the code block is never closed"));
        }
        if is_console {
            // Blank lines after an output only set the next command apart.
            for step in &mut block.steps {
                while step.expected.ends_with("\n\n") || step.expected == "\n" {
                    step.expected.pop();
                }
            }
            if block.steps.is_empty() {
                return Err(format!("line {line}: a console block without a command"));
            }
            blocks.push(block);
        }
    }
    Ok(blocks)
}

/// The session that runs a block's commands in order, marking where each one's output ends
/// and with what status. `$?` is set again after the mark, for an `echo $?` that follows.
fn session_script(block: &Block) -> String {
    let mut script = String::from("exec 2>&1 </dev/null\n");
    for step in &block.steps {
        let _ = write!(
            script,
            "{}\nportguard_docs_status=$?\nprintf '\\n{MARK}%s\\n' \"$portguard_docs_status\"\n\
             (exit \"$portguard_docs_status\")\n",
            step.command
        );
    }
    script
}

/// Each command's output and exit status, split at the marks.
fn split_session(output: &str) -> Vec<(String, i32)> {
    let mut results = Vec::new();
    let mut rest = output;
    while let Some(at) = rest.find(&format!("\n{MARK}")) {
        let text = &rest[..at];
        let after = &rest[at + 1 + MARK.len()..];
        let (status, tail) = after.split_once('\n').unwrap_or((after, ""));
        results.push((text.to_owned(), status.trim().parse().unwrap_or(-1)));
        rest = tail;
    }
    results
}

/// `text` with every occurrence of the number `port` (not part of a longer number) shown as
/// the documented port.
fn as_documented_port(text: &str, port: u16) -> String {
    let port = port.to_string();
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&port) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + port.len()..].chars().next();
        let whole = !before.is_some_and(|c| c.is_ascii_digit())
            && !after.is_some_and(|c| c.is_ascii_digit());
        shown.push_str(&rest[..at]);
        shown.push_str(if whole { DOCUMENTED_PORT } else { &port });
        rest = &rest[at + port.len()..];
    }
    shown.push_str(rest);
    shown
}

/// Stops what a block started, whether it passed or not; the project's own cleanup then ends
/// anything that is still left.
struct StopOnDrop<'a> {
    project: &'a TestProject,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let mut stop = self.project.portguard(&["portguard", "stop", "--all"]);
        let _ = stop.output();
    }
}

/// A fresh folder for a block: a copy of the example, or an empty folder.
fn project_for(block: &Block) -> TestProject {
    let target_dir = kept_target_dir("docs-examples");
    if block.in_empty_folder() {
        let dir = tempfile::Builder::new()
            .prefix("portguard-docs-")
            .tempdir()
            .expect("create temp dir");
        TestProject {
            root: dir.path().to_path_buf(),
            dir,
            target_dir,
        }
    } else {
        TestProject::example("hello-server", target_dir)
    }
}

/// Runs one block; a description of each step that did not print what the page says.
fn run_block(page: &str, block: &Block) -> Vec<String> {
    let project = project_for(block);
    let mut session = project.command("sh", &["-c", &session_script(block)]);
    let mut path = vec![test_bin_dir()];
    path.extend(std::env::var_os("PATH").map_or_else(Vec::new, |path| {
        std::env::split_paths(&path).collect::<Vec<_>>()
    }));
    // A terminal shows no progress of a detached start once it is over (the line is rewritten
    // in place, then cleared), and these examples show what a terminal shows.
    session.env("CARGO_TERM_PROGRESS_WHEN", "never");
    session.env_remove("CARGO").env(
        "PATH",
        std::env::join_paths(path).expect("PATH entries hold no separator"),
    );
    let port = block.starts_a_server().then(free_port);
    if let Some(port) = port {
        session.env("PORT", port.to_string());
    }
    let finished = {
        let _stop = port.map(|_| StopOnDrop { project: &project });
        run_within(session, BLOCK_TIMEOUT)
    };

    let mut redactions = Redactions::new();
    redactions
        .insert("[ROOT]", project.root.clone())
        .expect("a valid placeholder");
    // Where the temp dir is reached through a link (macOS's /var), tools print either form.
    if let Ok(canonical) = project.root.canonicalize()
        && canonical != project.root
    {
        redactions
            .insert("[ROOT]", canonical)
            .expect("a valid placeholder");
    }
    let assert = Assert::new()
        .palette(Palette::plain())
        .redact_with(redactions);

    let outputs = split_session(&finished.stdout);
    let mut failures = Vec::new();
    for (index, step) in block.steps.iter().enumerate() {
        let place = format!("{page}:{}: `{}`", step.line, step.command);
        let Some((actual, status)) = outputs.get(index) else {
            failures.push(format!(
                "{place}: the session ended before this command ran\n{}",
                finished.describe()
            ));
            break;
        };
        let actual = match port {
            Some(port) => as_documented_port(actual, port),
            None => actual.clone(),
        };
        let actual = if actual.is_empty() || actual.ends_with('\n') {
            actual
        } else {
            actual + "\n"
        };
        let shown_next = block
            .steps
            .get(index + 1)
            .is_some_and(|next| next.command.trim() == "echo $?");
        if *status != 0 && !shown_next {
            failures.push(format!(
                "{place}: exited with {status} (follow it with `$ echo $?` if that is meant)\n\
                 --- output ---\n{actual}"
            ));
        }
        let name = format!("output of `{}`", step.command);
        if let Err(diff) = assert.try_eq(Some(&name), actual.into(), step.expected.clone().into()) {
            failures.push(format!("{place}: the output differs from the page\n{diff}"));
        }
    }
    failures
}

/// Runs every console block of `text` (the page at `page`); Err(a report naming the page,
/// line, command and difference of each failure).
fn check_examples(page: &str, text: &str) -> Result<usize, String> {
    let blocks = console_blocks(text).map_err(|err| format!("{page}: {err}"))?;
    let failures: Vec<String> = blocks
        .iter()
        .flat_map(|block| run_block(page, block))
        .collect();
    if failures.is_empty() {
        Ok(blocks.len())
    } else {
        Err(format!(
            "{} example(s) in {page} do not match what portguard prints:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        ))
    }
}

fn check_page(page: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(page);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {page}: {err}"));
    if let Err(report) = check_examples(page, &text) {
        panic!("{report}");
    }
}

#[test]
fn readme_examples_print_what_they_say() {
    check_page("README.md");
}

#[test]
fn commands_page_examples_print_what_they_say() {
    check_page("docs/commands.md");
}

#[test]
fn configuration_page_examples_print_what_they_say() {
    check_page("docs/configuration.md");
}

#[test]
fn ports_page_examples_print_what_they_say() {
    check_page("docs/ports.md");
}

#[test]
fn production_page_examples_print_what_they_say() {
    check_page("docs/production.md");
}

#[test]
fn security_page_examples_print_what_they_say() {
    check_page("docs/security.md");
}

#[test]
fn state_page_examples_print_what_they_say() {
    check_page("docs/state.md");
}

#[test]
fn every_page_in_docs_is_checked() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut pages: Vec<String> = std::fs::read_dir(&docs)
        .expect("read docs/")
        .map(|entry| entry.expect("a docs/ entry").file_name())
        .map(|name| format!("docs/{}", name.to_string_lossy()))
        .filter(|name| Path::new(name).extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    let checked: Vec<String> = PAGES
        .iter()
        .filter(|page| page.starts_with("docs/"))
        .map(|page| (*page).to_owned())
        .collect();
    assert_eq!(
        pages, checked,
        "add each page of docs/ to PAGES in tests/it/docs.rs"
    );
}

#[test]
fn a_wrong_example_is_reported_with_its_page_line_command_and_diff() {
    let page = "# A page\n\n```console\n$ echo hello\ngoodbye\n```\n";
    let report = check_examples("wrong.md", page).expect_err("the example is wrong");
    assert!(report.contains("wrong.md:4: `echo hello`"), "{report}");
    assert!(report.contains("- goodbye"), "{report}");
    assert!(report.contains("+ hello"), "{report}");
}

#[test]
fn a_failing_command_is_reported_unless_its_code_is_shown() {
    let hidden = "```console\n$ sh -c 'echo oops; exit 3'\noops\n```\n";
    let report = check_examples("hidden.md", hidden).expect_err("exit 3 is not shown");
    assert!(report.contains("hidden.md:2:"), "{report}");
    assert!(report.contains("exited with 3"), "{report}");

    let shown = "```console\n$ sh -c 'echo oops; exit 3'\noops\n$ echo $?\n3\n```\n";
    assert_eq!(check_examples("shown.md", shown), Ok(1));
}

#[test]
fn wildcards_and_the_folder_placeholder_match_what_varies() {
    let page = "```console\n$ pwd; echo one; echo two; echo three\n[ROOT]\n...\nthree\n\n\
                $ mkdir sub && cd sub\n$ pwd\n[ROOT]/sub\n$ echo \"pid $$\"\npid [..]\n```\n\n\
                ```sh\nexit 1\n```\n";
    assert_eq!(check_examples("wildcards.md", page), Ok(1));
}

#[test]
fn a_started_server_is_stopped_even_when_its_example_fails() {
    let page = "```console\n$ cargo serve-safe --detach\n5000\n[..]Detached supervisor pid [..]\n\
                $ cargo portguard status\nnot this\n```\n";
    let blocks = console_blocks(page).expect("a valid page");
    let block = &blocks[0];
    assert!(block.starts_a_server());
    let failures = run_block("failing.md", block);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].contains("failing.md:5: `cargo portguard status`"),
        "{failures:#?}"
    );
}

#[test]
fn the_port_a_block_was_given_reads_as_the_documented_one() {
    assert_eq!(
        as_documented_port("port 41234, pid 141234, :41234/", 41234),
        "port 5000, pid 141234, :5000/"
    );
}

#[test]
fn pages_list_their_blocks_with_lines() {
    let page = "text\n\n- a list\n\n  ```console\n  $ cargo portguard \\\n      status\n  \
                no instance is running here\n  ```\n";
    let blocks = console_blocks(page).expect("a valid page");
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].line, 5);
    assert_eq!(blocks[0].steps[0].line, 6);
    assert_eq!(blocks[0].steps[0].command, "cargo portguard \\\nstatus");
    assert_eq!(blocks[0].steps[0].expected, "no instance is running here\n");
    assert!(console_blocks("```console\nno command\n```\n").is_err());
    assert!(console_blocks("```console\n$ true\n").is_err());
}
