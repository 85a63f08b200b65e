//! The project portguard works on: cargo, the workspace, the server package and its target.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use cargo_metadata::{Metadata, MetadataCommand, Package, TargetKind};

use crate::exit_codes::BadInput;
use crate::runtime::RuntimeDir;

mod metadata_cache;

/// Finds cargo the way the contract says: `CARGO` (set by cargo for its subcommands), then PATH.
///
/// # Errors
/// When neither gives a cargo.
pub(crate) fn find_cargo(vars: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Result<PathBuf> {
    if let Some(cargo) = vars("CARGO").filter(|value| !value.is_empty()) {
        return Ok(PathBuf::from(cargo));
    }
    which::which("cargo")
        .context("could not find cargo: `CARGO` is not set and `cargo` is not on PATH")
}

/// Cargo and the project named by the common options (`--manifest-path`, `-p`), seen from the
/// folder `cwd` the command runs in; with `cache`, cargo's answer is kept in that runtime folder
/// and reused while the manifests are unchanged.
///
/// # Errors
/// As [`find_cargo`] and [`Project::locate`].
pub(crate) fn from_options(
    cwd: &Path,
    manifest_path: Option<&Path>,
    package: Option<&str>,
    vars: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    cache: Option<&RuntimeDir>,
) -> Result<(PathBuf, Project)> {
    let cargo = find_cargo(vars)?;
    let project = Project::locate(&cargo, cwd, manifest_path, package, cache)?;
    Ok((cargo, project))
}

/// A binary or example target that `cargo run` can start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Bin(String),
    Example(String),
}

impl Target {
    #[must_use]
    pub(crate) fn name(&self) -> &str {
        match self {
            Target::Bin(name) | Target::Example(name) => name,
        }
    }

    /// The `cargo run` arguments that select it.
    #[must_use]
    pub(crate) fn cargo_args(&self) -> [&str; 2] {
        match self {
            Target::Bin(name) => ["--bin", name],
            Target::Example(name) => ["--example", name],
        }
    }
}

/// The server package and its workspace, as `cargo metadata --no-deps` describes them.
#[derive(Debug)]
pub(crate) struct Project {
    pub(crate) workspace_root: PathBuf,
    /// The workspace's root manifest (where `[workspace.metadata]` lives).
    pub(crate) workspace_manifest: PathBuf,
    pub(crate) workspace_metadata: serde_json::Value,
    pub(crate) package: Package,
    /// Where cargo builds (`CARGO_TARGET_DIR`, `build.target-dir`, else `target/` at the root).
    pub(crate) target_directory: PathBuf,
}

/// The features a build is asked for, which decide the optional dependencies it has.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Features<'a> {
    /// `--features`, as given (space or comma separated, `dep/feature` too).
    pub(crate) names: &'a [String],
    pub(crate) all: bool,
    pub(crate) no_default: bool,
}

impl Project {
    /// Reads the workspace with `cargo metadata --no-deps` and picks the server package:
    /// `-p NAME`, else the package whose manifest is the one asked for (or found from the
    /// current directory), else the only member with a binary. With `cache`, a stored answer
    /// from cargo is used while the files it depends on are unchanged.
    ///
    /// # Errors
    /// When cargo cannot read the workspace, or the package cannot be told.
    pub(crate) fn locate(
        cargo: &Path,
        cwd: &Path,
        manifest_path: Option<&Path>,
        package: Option<&str>,
        cache: Option<&RuntimeDir>,
    ) -> Result<Self> {
        let wanted = match manifest_path {
            Some(path) => Some(cwd.join(path)),
            None => nearest_manifest(cwd),
        };
        let question = cache.zip(wanted.clone()).map(|(dir, manifest)| {
            let question = metadata_cache::Question {
                cargo: cargo.to_owned(),
                manifest,
            };
            (dir, question)
        });
        let stored = question
            .as_ref()
            .and_then(|(dir, question)| metadata_cache::load(dir, question));
        let metadata = if let Some(metadata) = stored {
            metadata
        } else {
            let metadata = ask_cargo(cargo, cwd, wanted.as_deref())?;
            if let Some((dir, question)) = question {
                metadata_cache::store(dir, question, &metadata);
            }
            metadata
        };
        let package = pick_package(&metadata, package, wanted.as_deref())?;
        let workspace_root = metadata.workspace_root.clone().into_std_path_buf();
        Ok(Project {
            workspace_manifest: workspace_root.join("Cargo.toml"),
            workspace_root,
            workspace_metadata: metadata.workspace_metadata.clone(),
            target_directory: metadata.target_directory.clone().into_std_path_buf(),
            package,
        })
    }

    #[must_use]
    pub(crate) fn manifest_path(&self) -> &Path {
        self.package.manifest_path.as_std_path()
    }

    #[must_use]
    pub(crate) fn package_root(&self) -> &Path {
        self.manifest_path()
            .parent()
            .unwrap_or(&self.workspace_root)
    }

    /// What `--watch` watches: the package's folder, then the folders of the local path
    /// dependencies its build has with `features` (packages without a source in cargo's
    /// resolve, transitively, dev-dependencies aside), each once. Asks cargo with `--offline`:
    /// the dependencies are there once the first build has run, and a save must not wait on the
    /// network. When cargo cannot answer, warns and watches the package's folder alone.
    #[must_use]
    pub(crate) fn watch_roots(&self, cargo: &Path, features: Features<'_>) -> Vec<PathBuf> {
        let own = self.package_root().to_owned();
        match self.path_dependencies(cargo, features) {
            Ok(folders) => std::iter::once(own.clone())
                .chain(folders.into_iter().filter(|folder| *folder != own))
                .collect(),
            Err(error) => {
                crate::output::warning(format_args!(
                    "{error:#}; --watch watches `{}` alone",
                    own.display()
                ));
                vec![own]
            }
        }
    }

    /// The folders of the package's local path dependencies, sorted.
    fn path_dependencies(&self, cargo: &Path, features: Features<'_>) -> Result<Vec<PathBuf>> {
        use cargo_metadata::{CargoOpt, DependencyKind};
        use std::collections::{BTreeSet, HashMap, HashSet};

        let mut command = MetadataCommand::new();
        command
            .cargo_path(cargo)
            .current_dir(self.package_root())
            .manifest_path(self.manifest_path())
            .other_options(vec!["--offline".to_owned()]);
        if features.all {
            command.features(CargoOpt::AllFeatures);
        }
        if features.no_default {
            command.features(CargoOpt::NoDefaultFeatures);
        }
        if !features.names.is_empty() {
            command.features(CargoOpt::SomeFeatures(features.names.to_vec()));
        }
        let metadata = command.exec().map_err(|error| {
            let detail = match &error {
                cargo_metadata::Error::CargoMetadata { stderr } => stderr.trim().to_owned(),
                other => other.to_string(),
            };
            anyhow::anyhow!("could not find the local path dependencies: {detail}")
        })?;
        let resolve = metadata
            .resolve
            .as_ref()
            .context("could not find the local path dependencies: cargo gave no resolve")?;
        let nodes: HashMap<_, _> = resolve.nodes.iter().map(|node| (&node.id, node)).collect();
        let packages: HashMap<_, _> = metadata.packages.iter().map(|p| (&p.id, p)).collect();
        let mut seen = HashSet::from([&self.package.id]);
        let mut pending = vec![&self.package.id];
        let mut folders = BTreeSet::new();
        while let Some(id) = pending.pop() {
            let Some(node) = nodes.get(id) else { continue };
            for dep in &node.deps {
                let built = dep
                    .dep_kinds
                    .iter()
                    .any(|info| info.kind != DependencyKind::Development);
                if built && seen.insert(&dep.pkg) {
                    pending.push(&dep.pkg);
                    if let Some(package) = packages.get(&dep.pkg)
                        && package.source.is_none()
                        && let Some(folder) = package.manifest_path.parent()
                    {
                        folders.insert(folder.as_std_path().to_owned());
                    }
                }
            }
        }
        Ok(folders.into_iter().collect())
    }

    /// The target to run: `--example`, `--bin`, the configured `bin`, the only binary, or
    /// `default-run`.
    ///
    /// # Errors
    /// When the package has no binary, or several and nothing says which.
    pub(crate) fn target(
        &self,
        example: Option<&str>,
        bin: Option<&str>,
    ) -> Result<Target, BadInput> {
        let names = |kind: TargetKind| -> Vec<&str> {
            self.package
                .targets
                .iter()
                .filter(|target| target.is_kind(kind.clone()))
                .map(|target| target.name.as_str())
                .collect()
        };
        let name = &self.package.name;
        if let Some(example) = example {
            let examples = names(TargetKind::Example);
            return if examples.contains(&example) {
                Ok(Target::Example(example.to_owned()))
            } else {
                Err(BadInput(format!(
                    "no example `{example}` in package `{name}`; examples: {}",
                    list(&examples)
                )))
            };
        }
        let bins = names(TargetKind::Bin);
        if let Some(bin) = bin {
            return if bins.contains(&bin) {
                Ok(Target::Bin(bin.to_owned()))
            } else {
                Err(BadInput(format!(
                    "no binary `{bin}` in package `{name}`; binaries: {}",
                    list(&bins)
                )))
            };
        }
        match bins.as_slice() {
            [only] => Ok(Target::Bin((*only).to_owned())),
            [] => Err(BadInput(format!("package `{name}` has no binary to run"))),
            several => self.package.default_run.clone().map(Target::Bin).ok_or_else(|| {
                BadInput(format!(
                    "package `{name}` has several binaries ({}): pass `--bin NAME` or set `bin` in [package.metadata.portguard]",
                    several.join(", ")
                ))
            }),
        }
    }
}

fn ask_cargo(cargo: &Path, cwd: &Path, manifest_path: Option<&Path>) -> Result<Metadata, BadInput> {
    let mut command = MetadataCommand::new();
    command.cargo_path(cargo).current_dir(cwd).no_deps();
    if let Some(path) = manifest_path {
        command.manifest_path(path);
    }
    command.exec().map_err(|error| {
        let detail = match &error {
            cargo_metadata::Error::CargoMetadata { stderr } => stderr.trim().to_owned(),
            other => other.to_string(),
        };
        BadInput(format!(
            "could not read the cargo project: `cargo metadata` failed: {detail}"
        ))
    })
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn nearest_manifest(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|dir| dir.join("Cargo.toml"))
        .find(|path| path.is_file())
}

fn pick_package(
    metadata: &Metadata,
    name: Option<&str>,
    manifest: Option<&Path>,
) -> Result<Package, BadInput> {
    let members = metadata.workspace_packages();
    if let Some(name) = name {
        return members
            .iter()
            .find(|package| package.name.as_str() == name)
            .map(|p| (*p).clone())
            .ok_or_else(|| {
                let names: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
                BadInput(format!(
                    "package `{name}` is not a member of the workspace; members: {}",
                    list(&names)
                ))
            });
    }
    if let Some(package) = manifest.and_then(|manifest| {
        members
            .iter()
            .find(|package| package.manifest_path.as_std_path() == manifest)
    }) {
        return Ok((*package).clone());
    }
    let servers: Vec<&&Package> = members
        .iter()
        .filter(|package| {
            package
                .targets
                .iter()
                .any(|target| target.is_kind(TargetKind::Bin))
        })
        .collect();
    match servers.as_slice() {
        [only] => Ok((**only).clone()),
        [] => Err(BadInput(
            "no package in this workspace has a binary to run".to_owned(),
        )),
        several => {
            let names: Vec<&str> = several.iter().map(|p| p.name.as_str()).collect();
            Err(BadInput(format!(
                "several packages in this workspace have binaries ({}): choose one with `-p NAME`",
                names.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("folder");
        std::fs::write(path, text).expect("write");
    }

    /// A library package `name` at `root/name` with these `[dependencies]` lines.
    fn library(root: &Path, name: &str, dependencies: &str) {
        write(
            &root.join(name).join("Cargo.toml"),
            &format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                 [dependencies]\n{dependencies}\n"
            ),
        );
        write(&root.join(name).join("src/lib.rs"), "");
    }

    /// `app` (a binary) depends on `../shared`, which depends on `../deeper`; `../testkit` is
    /// only a dev-dependency and `../extra` an optional dependency behind the feature `extra`.
    fn projects() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temporary folder");
        let root = std::fs::canonicalize(dir.path()).expect("canonical folder");
        write(
            &root.join("app/Cargo.toml"),
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nshared = { path = \"../shared\" }\n\
             extra = { path = \"../extra\", optional = true }\n\n\
             [dev-dependencies]\ntestkit = { path = \"../testkit\" }\n",
        );
        write(&root.join("app/src/main.rs"), "fn main() {}\n");
        library(&root, "shared", "deeper = { path = \"../deeper\" }");
        library(&root, "deeper", "");
        library(&root, "testkit", "");
        library(&root, "extra", "");
        (dir, root)
    }

    #[test]
    fn watch_roots_are_the_package_and_its_local_path_dependencies() {
        let (_dir, root) = projects();
        let cargo = find_cargo(&|name| std::env::var_os(name)).expect("cargo");
        let app = root.join("app");
        let project = Project::locate(&cargo, &app, None, None, None).expect("the project");
        assert_eq!(
            project.watch_roots(&cargo, Features::default()),
            [app.clone(), root.join("deeper"), root.join("shared")]
        );
        let features = ["extra".to_owned()];
        let with_extra = Features {
            names: &features,
            ..Features::default()
        };
        assert_eq!(
            project.watch_roots(&cargo, with_extra),
            [
                app,
                root.join("deeper"),
                root.join("extra"),
                root.join("shared")
            ]
        );
    }

    #[test]
    fn watch_roots_fall_back_to_the_package_when_cargo_cannot_answer() {
        let (_dir, root) = projects();
        let cargo = find_cargo(&|name| std::env::var_os(name)).expect("cargo");
        let app = root.join("app");
        let project = Project::locate(&cargo, &app, None, None, None).expect("the project");
        // The dependency is gone after the package was read: cargo's resolve fails.
        std::fs::remove_dir_all(root.join("deeper")).expect("remove");
        let (roots, _, stderr) =
            crate::output::capture(|| project.watch_roots(&cargo, Features::default()));
        assert_eq!(roots, std::slice::from_ref(&app));
        let stderr = String::from_utf8_lossy(&stderr);
        assert!(
            stderr.contains("--watch watches") && stderr.contains(&app.display().to_string()),
            "{stderr}"
        );
    }
}
