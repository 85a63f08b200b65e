//! `cargo portguard init`: adds portguard to a server package in one command: the metadata
//! table, `.env` keys, cargo aliases (`cargo dev-safe`, `cargo stop`, ...), `.portguard/` in
//! `.gitignore`, and the startup glue that takes the handed-over socket. Everything is computed
//! first and written as one transaction; a second run changes nothing. Nothing is written
//! through a symbolic link that leads out of the project unless `--force`.

mod dotfiles;
pub(crate) mod files;
mod manifest;
mod templates;
mod wire;

use std::path::{Path, PathBuf};

use anyhow::Result;
use cargo_metadata::TargetKind;
use toml_edit::Value;

use crate::config::{self, Config, Handoff};
use crate::exit_codes;
use crate::output;
use crate::project::Project;

use files::Change;
use manifest::{LocalManifest, Setting};

/// The cargo aliases that make the seed's npm scripts `cargo` commands.
const ALIASES: [(&str, &str); 4] = [
    ("dev-safe", "serve-safe"),
    ("force-start", "serve-safe --force"),
    ("stop", "portguard stop"),
    ("status", "portguard status"),
];

// Each flag is independent of the others: bools are what clap gives flags.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct InitArgs {
    /// Framework the startup glue is written for [default: detected from the dependencies]
    #[arg(long, value_enum)]
    pub(crate) framework: Option<Framework>,
    /// Where the glue goes, relative to the package root
    #[arg(long, value_name = "PATH", default_value = "src/portguard.rs")]
    pub(crate) glue_path: PathBuf,
    /// Also add a build script that bakes the configured host and port into the binary
    #[arg(long)]
    pub(crate) build_rs: bool,
    /// Also edit `main` to take the glue's listener, where it binds its port in one place
    #[arg(long)]
    pub(crate) wire: bool,
    /// Print every change as a unified diff and write nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Regenerate the glue (and the build-script module) even where they exist, and write
    /// through symbolic links that lead out of the project
    #[arg(long)]
    pub(crate) force: bool,
}

/// The server frameworks `init` writes glue for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Framework {
    /// `std::net::TcpListener`
    Std,
    /// `tokio::net::TcpListener`
    Tokio,
    /// axum on tokio, with graceful shutdown
    Axum,
    /// actix-web's `HttpServer::listen`
    #[value(name = "actix-web")]
    ActixWeb,
}

/// `cargo portguard init`.
///
/// # Errors
/// Bad input (a package that cannot be told, bad values already in Cargo.toml: exit 2), and
/// files that cannot be read or written (nothing is written then).
pub(crate) fn init(project: &Project, args: &InitArgs) -> Result<i32> {
    let config = config::from_manifests(project, None, None)?;
    let framework = args.framework.unwrap_or_else(|| detect_framework(project));
    let mut notes = Vec::new();
    let mut changes = vec![
        manifest_change(project, &config, args.build_rs, &mut notes)?,
        env_change(project, ".env.example", &config, dotfiles::env_example)?,
        env_change(project, ".env", &config, dotfiles::env_file)?,
        aliases_change(project)?,
        text_change(project.workspace_root.join(".gitignore"), |existing| {
            (dotfiles::gitignore(existing), "`.portguard/`".to_owned())
        })?,
    ];
    changes.extend(glue_change(project, &config, framework, args, &mut notes)?);
    if args.build_rs {
        changes.extend(build_changes(project, args.force, &mut notes)?);
    }
    let wiring = main_wiring(project, framework, args)?;
    if args.wire
        && let Some(Wiring {
            path,
            before,
            plan: wire::Plan::Edit { after, bind },
            ..
        }) = &wiring
    {
        changes.push(Change {
            path: path.clone(),
            before: Some(before.clone()),
            after: after.clone(),
            summary: format!("`{}` replaced by the glue's listener", bind.call),
        });
    }
    changes.retain(Change::changes_anything);
    let edit_left = !args.wire
        && wiring
            .as_ref()
            .is_some_and(|wiring| matches!(wiring.plan, wire::Plan::Edit { .. }));

    let name = project.package.name.as_str();
    if changes.is_empty() && (!edit_left || args.dry_run) {
        output::status(
            "Finished",
            format!("nothing to do: portguard is already set up in `{name}`"),
        );
        print_notes(&notes);
        return Ok(exit_codes::OK);
    }
    let root = &project.workspace_root;
    check_links(root, &changes, args.force)?;
    if args.dry_run {
        let diff: String = changes.iter().map(|change| change.diff(root)).collect();
        output::answer(&diff)?;
        output::status(
            "Finished",
            format!(
                "dry run: {} files would change; nothing was written",
                changes.len()
            ),
        );
        return Ok(exit_codes::OK);
    }
    files::apply(&changes)?;
    // What was written, then what is left to do, then what to run.
    for change in &changes {
        let verb = if change.before.is_some() {
            "Updating"
        } else {
            "Creating"
        };
        let shown = change
            .path
            .strip_prefix(root)
            .unwrap_or(&change.path)
            .display();
        output::status(verb, format!("{shown}: {}", change.summary));
    }
    print_notes(&notes);
    let wired = print_left_to_do(project, &config, framework, args, wiring.as_ref())?;
    let run = if wired {
        "run `cargo dev-safe`"
    } else {
        "once `main` uses it, run `cargo dev-safe`"
    };
    output::status(
        "Finished",
        format!(
            "portguard is set up in `{name}` ({} glue); {run}",
            framework_name(framework)
        ),
    );
    Ok(exit_codes::OK)
}

/// The package's `main` (its binary's source) and what `--wire` does with it.
#[derive(Debug)]
struct Wiring {
    path: PathBuf,
    before: String,
    plan: wire::Plan,
}

/// The binary `cargo serve-safe` runs: the only one, else the one named after the package.
fn main_wiring(project: &Project, framework: Framework, args: &InitArgs) -> Result<Option<Wiring>> {
    let bins: Vec<&cargo_metadata::Target> = project
        .package
        .targets
        .iter()
        .filter(|target| target.is_kind(TargetKind::Bin))
        .collect();
    let target = match bins.as_slice() {
        [only] => Some(*only),
        _ => bins
            .iter()
            .find(|target| target.name == project.package.name.as_str())
            .copied(),
    };
    let Some(target) = target else {
        return Ok(None);
    };
    let path = target.src_path.clone().into_std_path_buf();
    let Some(before) = files::read_optional(&path)? else {
        return Ok(None);
    };
    let module = glue_module(&path, &project.package_root().join(&args.glue_path));
    let plan = wire::plan(&before, framework, &module);
    Ok(Some(Wiring { path, before, plan }))
}

/// How main.rs names the glue: by its file name when it lies beside main.rs, else through
/// `#[path]`.
fn glue_module(main: &Path, glue: &Path) -> wire::Module {
    let dir = main.parent().unwrap_or(Path::new(""));
    let stem = glue
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("");
    let is_ident = stem
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if glue.parent() == Some(dir)
        && glue.extension().is_some_and(|ext| ext == "rs")
        && is_ident
        && stem != "main"
    {
        return wire::Module {
            name: stem.to_owned(),
            path_attr: None,
        };
    }
    let path = glue.strip_prefix(dir).map_or_else(
        |_| std::path::absolute(glue).unwrap_or_else(|_| glue.to_owned()),
        Path::to_owned,
    );
    wire::Module {
        name: "portguard".to_owned(),
        path_attr: Some(path.display().to_string()),
    }
}

/// What is left for the user in `main`: the diff `--wire` would apply, or the lines to paste,
/// and the host the server now listens on when `main` bound every interface. Whether `main`
/// takes the glue's listener now.
fn print_left_to_do(
    project: &Project,
    config: &Config,
    framework: Framework,
    args: &InitArgs,
    wiring: Option<&Wiring>,
) -> Result<bool> {
    let Some(wiring) = wiring else {
        let module = glue_module(
            &project.package_root().join("src/main.rs"),
            &project.package_root().join(&args.glue_path),
        );
        output::note(format!(
            "add to the server's `main`:\n{}",
            indent(&wire::snippet(framework, &module, None))
        ));
        return Ok(false);
    };
    let shown = wiring
        .path
        .strip_prefix(&project.workspace_root)
        .unwrap_or(&wiring.path)
        .display();
    let (wired, wildcard) = match &wiring.plan {
        wire::Plan::Wired => (true, None),
        wire::Plan::Edit { bind, .. } if args.wire => (true, bind.wildcard.clone()),
        wire::Plan::Edit { after, bind } => {
            output::note(format!(
                "one step is left: `{shown}` binds its own port; `cargo portguard init --wire` makes this change:"
            ));
            let change = Change {
                path: wiring.path.clone(),
                before: Some(wiring.before.clone()),
                after: after.clone(),
                summary: String::new(),
            };
            output::answer(&change.diff(&project.workspace_root))?;
            (false, bind.wildcard.clone())
        }
        wire::Plan::Snippet {
            why,
            lines,
            wildcard,
        } => {
            output::note(format!(
                "`{shown}` was left alone: {why}; to take the glue's listener, add to it:\n{}",
                indent(lines)
            ));
            (false, wildcard.clone())
        }
    };
    let host = config.host.value;
    if let Some(address) = wildcard
        && !host.is_unspecified()
    {
        let when = if wired { "now" } else { "then" };
        output::note(format!(
            "`{shown}` bound {address}, every interface; the server {when} listens on portguard's `host`, {host} (set `host = \"0.0.0.0\"` in [package.metadata.portguard] to listen on every interface)"
        ));
    }
    Ok(wired)
}

/// Refuses to write through a symbolic link that leads out of the project (a `.gitignore`
/// linked to a file in the home folder would get `.portguard/` appended), unless `force`.
fn check_links(root: &Path, changes: &[Change], force: bool) -> Result<()> {
    let links = files::links_out_of(root, changes.iter().map(|change| change.path.as_path()))?;
    let describe = |link: &files::OutsideLink| {
        format!(
            "`{}` is a symbolic link to `{}`, outside the project `{}`",
            link.link.strip_prefix(root).unwrap_or(&link.link).display(),
            link.target.display(),
            root.display()
        )
    };
    if force {
        for link in &links {
            output::warning(format!("{}; writing through it (--force)", describe(link)));
        }
        return Ok(());
    }
    let refusals: Vec<String> = links
        .iter()
        .map(|link| {
            format!(
                "{}; refusing to write through it (use --force to write anyway)",
                describe(link)
            )
        })
        .collect();
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(exit_codes::BadInput(refusals.join("\n")).into())
    }
}

/// The framework the package already depends on; std when none is known.
fn detect_framework(project: &Project) -> Framework {
    let depends_on = |name: &str| {
        project
            .package
            .dependencies
            .iter()
            // A dev-dependency (tokio for tests, say) is not what the server runs on.
            .any(|dep| dep.name == name && dep.kind == cargo_metadata::DependencyKind::Normal)
    };
    if depends_on("actix-web") {
        Framework::ActixWeb
    } else if depends_on("axum") {
        Framework::Axum
    } else if depends_on("tokio") {
        Framework::Tokio
    } else {
        Framework::Std
    }
}

fn framework_name(framework: Framework) -> &'static str {
    match framework {
        Framework::Std => "std",
        Framework::Tokio => "tokio",
        Framework::Axum => "axum",
        Framework::ActixWeb => "actix-web",
    }
}

fn manifest_change(
    project: &Project,
    config: &Config,
    build_rs: bool,
    notes: &mut Vec<String>,
) -> Result<Change> {
    let mut manifest = LocalManifest::read(project.manifest_path())?;
    let settings = [
        Setting {
            key: "preferred-port",
            value: i64::from(first_port(config)).into(),
            comment: "first port tried; PORT overrides it",
        },
        Setting {
            key: "fallback-ports",
            value: manifest::port_array(&config.fallback_ports.value),
            comment: "tried in order when it is busy",
        },
        Setting {
            key: "max-attempts",
            value: i64::from(config.max_attempts.value).into(),
            comment: "candidates tried at most, then a port from the OS",
        },
        Setting {
            key: "check-timeout-ms",
            value: millis(config.check_timeout.value),
            comment: "bound on each port check and probe",
        },
        Setting {
            key: "handoff",
            value: "socket".into(),
            comment: "portguard binds the port and hands the socket to the glue",
        },
        Setting {
            key: "shutdown-timeout-ms",
            value: millis(config.shutdown_timeout.value),
            comment: "wait after SIGTERM before SIGKILL",
        },
    ];
    let mut workspace_keys: Vec<String> = project
        .workspace_metadata
        .get("portguard")
        .and_then(serde_json::Value::as_object)
        .map(|table| table.keys().cloned().collect())
        .unwrap_or_default();
    // The candidate keys are one group per table: one written here would replace all of the
    // workspace's.
    let candidate_keys = ["preferred-port", "fallback-ports", "port-range"];
    if workspace_keys
        .iter()
        .any(|key| candidate_keys.contains(&key.as_str()))
    {
        workspace_keys.extend(candidate_keys.map(str::to_owned));
    }
    let added = manifest.add_portguard_settings(&settings, &workspace_keys);
    if config.handoff.value == Handoff::Env && !added.contains(&"handoff") {
        notes.push(format!(
            "`handoff` stays as configured ({}): the glue also takes a socket, with `handoff = \"socket\"`",
            config.handoff.source
        ));
    }
    let mut summary = if added.is_empty() {
        String::new()
    } else {
        format!("[package.metadata.portguard] {}", added.join(", "))
    };
    if build_rs {
        let (name, version) = templates::BUILD_DEPENDENCY;
        if manifest.add_build_dependency(name, version) {
            summary = join(
                &summary,
                &format!("[build-dependencies] {name} = \"{version}\""),
            );
        }
    }
    Ok(Change {
        after: manifest.render(),
        before: manifest.original.clone(),
        path: manifest.path,
        summary,
    })
}

/// The port the files name: the first candidate, or the default when there is none.
fn first_port(config: &Config) -> u16 {
    config.first_port().unwrap_or(crate::config::DEFAULT_PORT)
}

fn millis(duration: std::time::Duration) -> Value {
    i64::try_from(duration.as_millis())
        .unwrap_or(i64::MAX)
        .into()
}

fn join(first: &str, second: &str) -> String {
    if first.is_empty() {
        second.to_owned()
    } else {
        format!("{first}; {second}")
    }
}

fn env_change(
    project: &Project,
    file: &str,
    config: &Config,
    update: fn(Option<&str>, &dotfiles::EnvDefaults) -> String,
) -> Result<Change> {
    let defaults = dotfiles::EnvDefaults {
        port: first_port(config),
        fallback_ports: config.fallback_ports.value.clone(),
        max_attempts: config.max_attempts.value,
        check_timeout_ms: config.check_timeout.value.as_millis(),
    };
    text_change(project.package_root().join(file), |existing| {
        let summary = dotfiles::missing_keys(existing).join(", ");
        (update(existing, &defaults), summary)
    })
}

/// A plain text file changed by `update`, which gets its current text and returns the new
/// text and what changed, for people.
fn text_change(
    path: PathBuf,
    update: impl FnOnce(Option<&str>) -> (String, String),
) -> Result<Change> {
    let before = files::read_optional(&path)?;
    let (after, summary) = update(before.as_deref());
    let after = manifest::same_line_endings(before.as_deref(), after);
    Ok(Change {
        path,
        before,
        after,
        summary,
    })
}

fn aliases_change(project: &Project) -> Result<Change> {
    let dir = project.workspace_root.join(".cargo");
    // Cargo still reads the old name when the new one is absent.
    let legacy = dir.join("config");
    let path = if legacy.is_file() && !dir.join("config.toml").exists() {
        legacy
    } else {
        dir.join("config.toml")
    };
    let mut config = LocalManifest::read(&path)?;
    let (added, conflicts) = config.add_aliases(&ALIASES);
    for (name, meaning) in conflicts {
        output::warning(format!(
            "alias `{name}` in `{}` already means {meaning}; left alone (use `cargo portguard {}` instead)",
            path.display(),
            ALIASES
                .iter()
                .find(|(alias, _)| *alias == name)
                .map_or("", |(_, command)| command.trim_start_matches("portguard "))
        ));
    }
    let summary = format!("aliases {}", added.join(", "));
    Ok(Change {
        after: config.render(),
        before: config.original.clone(),
        path: config.path,
        summary,
    })
}

fn glue_change(
    project: &Project,
    config: &Config,
    framework: Framework,
    args: &InitArgs,
    notes: &mut Vec<String>,
) -> Result<Option<Change>> {
    let path = project.package_root().join(&args.glue_path);
    let before = files::read_optional(&path)?;
    let after = templates::glue(
        framework,
        &config.host.value.to_string(),
        first_port(config),
    );
    if before.as_ref().is_some_and(|text| *text != after) && !args.force {
        notes.push(format!(
            "`{}` exists and was left alone; `--force` regenerates it",
            path.display()
        ));
        return Ok(None);
    }
    let summary = format!("{} startup glue", framework_name(framework));
    Ok(Some(Change {
        path,
        before,
        after,
        summary,
    }))
}

fn build_changes(project: &Project, force: bool, notes: &mut Vec<String>) -> Result<Vec<Change>> {
    let existing_script = project
        .package
        .targets
        .iter()
        .find(|target| target.is_kind(TargetKind::CustomBuild))
        .map(|target| target.src_path.clone().into_std_path_buf());
    let dir = existing_script
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(project.package_root())
        .to_owned();
    let module_path = dir.join(templates::BUILD_MODULE_FILE);
    let mut changes = Vec::new();
    let before = files::read_optional(&module_path)?;
    if before
        .as_ref()
        .is_some_and(|text| text != templates::BUILD_MODULE)
        && !force
    {
        notes.push(format!(
            "`{}` exists and was left alone; `--force` regenerates it",
            module_path.display()
        ));
    } else {
        changes.push(Change {
            path: module_path,
            before,
            after: templates::BUILD_MODULE.to_owned(),
            summary: "bakes the configured host and port into the binary at build time".to_owned(),
        });
    }
    match existing_script {
        // Never overwritten: the user adds the one line.
        Some(script) => {
            let text = files::read_optional(&script)?.unwrap_or_default();
            if !text.contains(templates::BUILD_MODULE_FILE) {
                notes.push(format!(
                    "`{}` exists and was left alone: add this line at the start of its `fn main()`:\n    include!(\"{}\");\n(its `rerun-if-changed` lines make cargo rerun the script only when Cargo.toml or .env change, not on any change in the package)",
                    script.display(),
                    templates::BUILD_MODULE_FILE
                ));
            }
        }
        None => changes.push(Change {
            path: project.package_root().join("build.rs"),
            before: None,
            after: templates::BUILD_SCRIPT.to_owned(),
            summary: "runs portguard_build.rs".to_owned(),
        }),
    }
    Ok(changes)
}

fn print_notes(notes: &[String]) {
    for note in notes {
        output::note(note);
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
