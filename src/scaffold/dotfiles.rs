//! `.env`, `.env.example` and `.gitignore`: plain text, appended to and never rewritten.

use std::fmt::Write as _;

/// The seed's `.env` keys with the values of the configuration they override.
pub(crate) struct EnvDefaults {
    pub(crate) port: u16,
    pub(crate) fallback_ports: Vec<u16>,
    pub(crate) max_attempts: u32,
    pub(crate) check_timeout_ms: u128,
}

impl EnvDefaults {
    fn lines(&self) -> [(&'static str, String, &'static str); 4] {
        let fallbacks: Vec<String> = self.fallback_ports.iter().map(u16::to_string).collect();
        [
            ("PORT", self.port.to_string(), "first port tried"),
            (
                "FALLBACK_PORTS",
                fallbacks.join(","),
                "tried in order when it is busy",
            ),
            (
                "MAX_PORT_ATTEMPTS",
                self.max_attempts.to_string(),
                "candidates tried at most",
            ),
            (
                "PORT_CHECK_TIMEOUT",
                self.check_timeout_ms.to_string(),
                "milliseconds for each check or probe",
            ),
        ]
    }
}

/// `.env.example`: every key, set, for people to copy from.
#[must_use]
pub(crate) fn env_example(existing: Option<&str>, defaults: &EnvDefaults) -> String {
    let header =
        "# portguard reads these from `.env` (they override [package.metadata.portguard]).\n";
    append_missing(existing, header, defaults, false)
}

/// `.env`: missing keys are added commented out, so that Cargo.toml stays the one place the
/// port is configured until someone decides otherwise; existing lines are never touched.
#[must_use]
pub(crate) fn env_file(existing: Option<&str>, defaults: &EnvDefaults) -> String {
    let header =
        "# portguard: uncomment to override [package.metadata.portguard] on this machine.\n";
    append_missing(existing, header, defaults, true)
}

/// The seed's keys that `existing` does not mention yet.
#[must_use]
pub(crate) fn missing_keys(existing: Option<&str>) -> Vec<&'static str> {
    let text = existing.unwrap_or_default();
    [
        "PORT",
        "FALLBACK_PORTS",
        "MAX_PORT_ATTEMPTS",
        "PORT_CHECK_TIMEOUT",
    ]
    .into_iter()
    .filter(|key| !mentions(text, key))
    .collect()
}

fn append_missing(
    existing: Option<&str>,
    header: &str,
    defaults: &EnvDefaults,
    commented: bool,
) -> String {
    let mut text = existing.unwrap_or_default().to_owned();
    let missing: Vec<_> = defaults
        .lines()
        .into_iter()
        .filter(|(key, ..)| !mentions(&text, key))
        .collect();
    if missing.is_empty() {
        return text;
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(header);
    for (key, value, comment) in missing {
        let hash = if commented { "# " } else { "" };
        let _ = writeln!(text, "{hash}{key}={value}  # {comment}");
    }
    text
}

/// Whether a line sets `key`, or sets it commented out (`# KEY=`, `export KEY=`).
fn mentions(text: &str, key: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start().trim_start_matches('#').trim_start();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        line.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

/// `.gitignore` with `.portguard/` in it.
#[must_use]
pub(crate) fn gitignore(existing: Option<&str>) -> String {
    let mut text = existing.unwrap_or_default().to_owned();
    let ignored = text.lines().map(str::trim).any(|line| {
        matches!(
            line,
            ".portguard" | ".portguard/" | "/.portguard" | "/.portguard/"
        )
    });
    if ignored {
        return text;
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# portguard's locks, pid files and logs\n.portguard/\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> EnvDefaults {
        EnvDefaults {
            port: 5000,
            fallback_ports: vec![5001, 3000],
            max_attempts: 10,
            check_timeout_ms: 1000,
        }
    }

    #[test]
    fn env_values_are_kept_and_missing_keys_added_commented() {
        let existing = "DATABASE_URL=postgres://x\nexport PORT=8080";
        let text = env_file(Some(existing), &defaults());
        assert!(
            text.starts_with("DATABASE_URL=postgres://x\nexport PORT=8080\n"),
            "{text}"
        );
        assert!(!text.contains("# PORT="), "{text}");
        assert!(
            text.contains("# FALLBACK_PORTS=5001,3000  # tried in order"),
            "{text}"
        );
        assert_eq!(
            env_file(Some(&text), &defaults()),
            text,
            "a second run adds nothing"
        );
    }

    #[test]
    fn env_example_sets_every_key() {
        let text = env_example(None, &defaults());
        for key in [
            "PORT=5000",
            "FALLBACK_PORTS=5001,3000",
            "MAX_PORT_ATTEMPTS=10",
            "PORT_CHECK_TIMEOUT=1000",
        ] {
            assert!(
                text.lines().any(|line| line.starts_with(key)),
                "{key} in {text}"
            );
        }
    }

    #[test]
    fn gitignore_gets_the_state_folder_once() {
        assert_eq!(
            gitignore(Some("/target")),
            "/target\n# portguard's locks, pid files and logs\n.portguard/\n"
        );
        assert_eq!(
            gitignore(Some("/target\n/.portguard\n")),
            "/target\n/.portguard\n"
        );
    }
}
