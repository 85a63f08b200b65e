//! The rules of a `.gitignore` (and `.ignore`, and `watch-ignore`) as git reads them: blank
//! lines and `#` comments skipped, `!` re-includes, a trailing `/` matches folders only, a
//! pattern with a `/` before its end is anchored to the file's folder, one without matches a
//! name at any depth; `*`, `?`, `[…]` and `**` as globs. The last rule that matches decides.
//!
//! Written on `glob` rather than a regex engine: the regex tables would more than double what
//! every start of portguard maps, for rules a watch reads a handful of.

use std::io::Read as _;
use std::path::Path;

use glob::{MatchOptions, Pattern};

use crate::os;

/// A `.gitignore` larger than this is read no further: real ones are a few kilobytes.
const FILE_LIMIT: u64 = 1024 * 1024;

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// What the rules say of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ignored,
    /// A `!` rule took it back.
    Kept,
    /// No rule speaks of it.
    Unspoken,
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: Pattern,
    negated: bool,
    dir_only: bool,
    /// Matched against the whole path relative to the rules' folder; otherwise against its
    /// last component.
    anchored: bool,
}

/// The rules of one file (or of `watch-ignore`), in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules(Vec<Rule>);

impl Rules {
    /// Reads the rules of the file at `path`: a regular file, not followed if it is a link,
    /// read without waiting and no further than [`FILE_LIMIT`]. A line that is no glob is
    /// skipped, as git skips it; a file that cannot be read holds no rules.
    pub(crate) fn from_file(path: &Path) -> Self {
        let Ok(file) = os::open_no_follow_read(path) else {
            return Rules::default();
        };
        if !file.metadata().is_ok_and(|metadata| metadata.is_file()) {
            return Rules::default();
        }
        let mut text = String::new();
        if file.take(FILE_LIMIT).read_to_string(&mut text).is_err() {
            return Rules::default();
        }
        let rules = text
            .lines()
            .filter_map(|line| parse(line).ok().flatten())
            .collect();
        Rules(rules)
    }

    /// The rules of `lines` (`watch-ignore`), each of which must be a glob.
    ///
    /// # Errors
    /// The first line that is not, and why.
    pub(crate) fn from_lines(lines: &[String]) -> Result<Self, (String, String)> {
        let mut rules = Vec::new();
        for line in lines {
            match parse(line) {
                Ok(Some(rule)) => rules.push(rule),
                Ok(None) => {}
                Err(why) => return Err((line.clone(), why)),
            }
        }
        Ok(Rules(rules))
    }

    /// Whether `line` is a rule (or a blank line or comment): `Err` says why it is not.
    ///
    /// # Errors
    /// What is wrong with the glob.
    pub(crate) fn check(line: &str) -> Result<(), String> {
        parse(line).map(|_| ())
    }

    /// What the rules say of `relative` (a path below their folder), a folder when `is_dir`.
    pub(crate) fn verdict(&self, relative: &Path, is_dir: bool) -> Verdict {
        let name = relative.file_name().map(Path::new);
        for rule in self.0.iter().rev() {
            if rule.dir_only && !is_dir {
                continue;
            }
            let subject = if rule.anchored { Some(relative) } else { name };
            if subject.is_some_and(|subject| rule.pattern.matches_path_with(subject, OPTIONS)) {
                return if rule.negated {
                    Verdict::Kept
                } else {
                    Verdict::Ignored
                };
            }
        }
        Verdict::Unspoken
    }
}

/// One line: `None` for a blank line or a comment.
fn parse(line: &str) -> Result<Option<Rule>, String> {
    let mut text = line.trim_end_matches(['\r', '\n']);
    // Trailing spaces end a line unless escaped.
    while text.ends_with(' ') && !text.ends_with("\\ ") {
        text = &text[..text.len() - 1];
    }
    if text.is_empty() || text.starts_with('#') {
        return Ok(None);
    }
    let (negated, text) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (
            false,
            text.strip_prefix('\\')
                .filter(|rest| rest.starts_with(['#', '!']))
                .unwrap_or(text),
        ),
    };
    let (dir_only, text) = match text.strip_suffix('/') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let anchored = text.contains('/');
    let text = text.strip_prefix('/').unwrap_or(text);
    if text.is_empty() {
        return Ok(None);
    }
    let pattern = Pattern::new(text).map_err(|error| error.msg.to_owned())?;
    Ok(Some(Rule {
        pattern,
        negated,
        dir_only,
        anchored,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(lines: &[&str]) -> Rules {
        Rules::from_lines(
            &lines
                .iter()
                .map(|line| (*line).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("valid rules")
    }

    fn ignored(rules: &Rules, path: &str, is_dir: bool) -> bool {
        rules.verdict(Path::new(path), is_dir) == Verdict::Ignored
    }

    #[test]
    fn a_name_matches_at_any_depth_and_an_anchored_pattern_only_from_the_folder() {
        let rules = rules(&["*.log", "/build", "docs/*.tmp"]);
        assert!(ignored(&rules, "a.log", false));
        assert!(ignored(&rules, "deep/down/a.log", false));
        assert!(ignored(&rules, "build", true));
        assert!(!ignored(&rules, "src/build", true));
        assert!(ignored(&rules, "docs/x.tmp", false));
        assert!(!ignored(&rules, "other/docs/x.tmp", false));
        assert!(
            !ignored(&rules, "docs/sub/x.tmp", false),
            "`*` stops at a `/`"
        );
    }

    #[test]
    fn a_trailing_slash_matches_folders_only() {
        let rules = rules(&["scratch/"]);
        assert!(ignored(&rules, "scratch", true));
        assert!(ignored(&rules, "src/scratch", true));
        assert!(!ignored(&rules, "scratch", false));
    }

    #[test]
    fn the_last_matching_rule_decides_and_bang_takes_back() {
        let rules = rules(&["*.rs", "!keep.rs", "# a comment", "", "   "]);
        assert!(ignored(&rules, "src/a.rs", false));
        assert_eq!(
            rules.verdict(Path::new("src/keep.rs"), false),
            Verdict::Kept
        );
        assert_eq!(
            rules.verdict(Path::new("Cargo.toml"), false),
            Verdict::Unspoken
        );
    }

    #[test]
    fn double_stars_cross_folders() {
        let rules = rules(&["gen/**/out.rs", "**/fixtures"]);
        assert!(ignored(&rules, "gen/out.rs", false));
        assert!(ignored(&rules, "gen/a/b/out.rs", false));
        assert!(ignored(&rules, "tests/fixtures", true));
        assert!(ignored(&rules, "fixtures", true));
    }

    #[test]
    fn escapes_and_character_classes() {
        let rules = rules(&["\\#notes", "\\!bang", "file[0-9].txt"]);
        assert!(ignored(&rules, "#notes", false));
        assert!(ignored(&rules, "!bang", false));
        assert!(ignored(&rules, "file7.txt", false));
        assert!(!ignored(&rules, "filex.txt", false));
    }

    #[test]
    fn a_line_that_is_no_glob_is_named() {
        let error = Rules::from_lines(&["ok/*".to_owned(), "bad[".to_owned()])
            .expect_err("`bad[` is no glob");
        assert_eq!(error.0, "bad[");
        assert!(!error.1.is_empty());
    }

    #[test]
    fn a_file_skips_bad_lines_and_odd_files_hold_no_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".gitignore");
        std::fs::write(&path, "bad[\n*.log\n").unwrap();
        assert!(ignored(&Rules::from_file(&path), "x.log", false));

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            !ignored(&Rules::from_file(&link), "x.log", false),
            "a link is not followed"
        );

        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo failed");
        let started = std::time::Instant::now();
        assert!(!ignored(&Rules::from_file(&fifo), "x.log", false));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "a FIFO does not hang"
        );
    }
}
