//! A second local account, for the tests that play another user of a shared machine: it plants
//! files, holds locks and runs processes that portguard must never trust or touch.
//!
//! Tests run as root in CI. The account is `portguard-test`, created once with `useradd` when it
//! is missing; where no account can be had (not root, no `useradd`), [`other_account`] says why
//! and the test skips itself.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The name of the account the cross-user tests act as.
pub const OTHER_ACCOUNT: &str = "portguard-test";

/// Another account's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

impl Account {
    /// `program args…` run as this account, with no supplementary groups.
    pub fn command(self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(program);
        command
    }

    /// Gives `path` (not following a link) to this account.
    pub fn own(self, path: &Path) {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|error| panic!("chown {}: {error}", path.display()));
    }

    /// Writes `contents` to `path` as a file of this account's, mode `mode`.
    pub fn plant(self, path: &Path, contents: &[u8], mode: u32) {
        std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        self.own(path);
    }

    /// Creates `path` as a folder of this account's, mode `mode`.
    pub fn plant_dir(self, path: &Path, mode: u32) {
        std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        self.own(path);
    }
}

/// The second account, or why there is none (the caller prints it and skips).
pub fn other_account() -> Result<Account, String> {
    static ACCOUNT: OnceLock<Result<Account, String>> = OnceLock::new();
    ACCOUNT.get_or_init(find_or_create).clone()
}

/// The test's own uid.
pub fn my_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Skips the calling test, with the reason, when no second account can be had.
#[macro_export]
macro_rules! other_account_or_skip {
    () => {
        match $crate::support::users::other_account() {
            Ok(account) => account,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

fn find_or_create() -> Result<Account, String> {
    if my_uid() != 0 {
        return Err("cross-user tests need root to create and act as a second account".into());
    }
    if lookup().is_none() {
        // Another test binary may create it at the same moment; the lookup below decides.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(OTHER_ACCOUNT)
            .output();
    }
    lookup().ok_or_else(|| format!("no account `{OTHER_ACCOUNT}` and `useradd` could not make one"))
}

fn lookup() -> Option<Account> {
    let output = Command::new("getent")
        .args(["passwd", OTHER_ACCOUNT])
        .output()
        .ok()?;
    let line = String::from_utf8(output.stdout).ok()?;
    let mut fields = line.trim().split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some(Account { uid, gid })
}

/// The owner of `path` (not following a link).
pub fn owner_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .uid()
}
