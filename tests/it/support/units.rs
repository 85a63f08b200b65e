//! systemd unit files, as `cargo portguard generate` writes them, read back as settings.

/// The `(section, key, value)` settings of a unit file, in order; comments and blank lines
/// left out.
pub fn unit_settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            name.clone_into(&mut section);
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("a unit file line is a section or Key=value: {line:?}"));
        settings.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    settings
}

/// The one value of `key` in `section`; panics, showing the file, unless there is exactly one.
pub fn unit_value<'a>(
    settings: &'a [(String, String, String)],
    section: &str,
    key: &str,
    text: &str,
) -> &'a str {
    let values: Vec<&str> = settings
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, value)| value.as_str())
        .collect();
    match values.as_slice() {
        [value] => value,
        _ => panic!("expected one {key}= in [{section}], found {values:?} in:\n{text}"),
    }
}
