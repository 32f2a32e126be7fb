//! Which files a `[[files]]` section reads: the regular files matching any `include`
//! pattern and no `exclude` pattern (shell globs: `*`, `?`, `[...]`, `**` for any depth
//! of directories), and which directories to watch for wake-ups.
//!
//! A pattern must be an absolute path. A `*` does not match a `/`, and does not match
//! a leading `.` (hidden files need a pattern of their own).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};

const OPTIONS: MatchOptions = MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: true };

/// A section's compiled patterns.
#[derive(Debug, Clone)]
pub struct Globs {
    include: Vec<String>,
    exclude: Vec<Pattern>,
}

/// A pattern that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{kind} pattern {pattern:?} {reason}")]
pub struct BadPattern {
    pub kind: &'static str,
    pub pattern: String,
    pub reason: String,
}

fn check(kind: &'static str, pattern: &str) -> Result<Pattern, BadPattern> {
    let bad = |reason: String| BadPattern { kind, pattern: pattern.to_owned(), reason };
    if !Path::new(pattern).is_absolute() {
        return Err(bad("is not an absolute path (start it with /)".into()));
    }
    Pattern::new(pattern).map_err(|e| bad(format!("is not a valid glob: {} at character {}", e.msg, e.pos)))
}

impl Globs {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Globs, BadPattern> {
        if include.is_empty() {
            return Err(BadPattern { kind: "include", pattern: String::new(), reason: "list is empty; name at least one pattern".into() });
        }
        for pattern in include {
            check("include", pattern)?;
        }
        let exclude = exclude.iter().map(|p| check("exclude", p)).collect::<Result<_, _>>()?;
        Ok(Globs { include: include.to_vec(), exclude })
    }

    /// The regular files matched now, sorted. Unreadable directories are skipped (a
    /// debug log); files are never opened here.
    pub fn find(&self) -> Vec<PathBuf> {
        let mut found = BTreeSet::new();
        for pattern in &self.include {
            let Ok(paths) = glob::glob_with(pattern, OPTIONS) else { continue };
            for path in paths {
                match path {
                    Ok(path) if !self.exclude.iter().any(|p| p.matches_path_with(&path, OPTIONS)) => {
                        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                            found.insert(path);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, "file input cannot look into a directory"),
                }
            }
        }
        found.into_iter().collect()
    }

    /// Directories to watch and whether recursively: for each pattern, the directory
    /// above its first component with a wildcard; recursive when wildcards follow it.
    pub fn watch_dirs(&self) -> Vec<(PathBuf, bool)> {
        let mut dirs = BTreeSet::new();
        for pattern in &self.include {
            let mut base = PathBuf::new();
            let mut components = Path::new(pattern).components().peekable();
            let mut recursive = false;
            while let Some(component) = components.next() {
                let text = component.as_os_str().to_string_lossy();
                if matches!(component, Component::Normal(_)) && text.contains(['*', '?', '[']) {
                    recursive = components.peek().is_some();
                    break;
                }
                if components.peek().is_none() {
                    // A literal file name: watch its directory.
                    break;
                }
                base.push(component);
            }
            dirs.insert((base, recursive));
        }
        dirs.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_minus_excludes_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in ["a.log", "a.log.1", "a.log.2.gz", "b.txt", ".hidden.log", "sub/c.log", "sub/deeper/d.log"] {
            std::fs::create_dir_all(root.join(name).parent().unwrap()).unwrap();
            std::fs::write(root.join(name), b"x").unwrap();
        }
        std::fs::create_dir(root.join("dir.log")).unwrap();
        let r = root.display();
        let globs = Globs::new(&[format!("{r}/*.log*"), format!("{r}/**/d.log")], &[format!("{r}/*.gz")]).unwrap();
        let names: Vec<String> = globs.find().iter().map(|p| p.strip_prefix(root).unwrap().display().to_string()).collect();
        assert_eq!(names, ["a.log", "a.log.1", "sub/deeper/d.log"]);
        assert_eq!(globs.watch_dirs(), [(root.to_owned(), false), (root.to_owned(), true)]);
        let literal = Globs::new(&["/var/log/app.log".into()], &[]).unwrap();
        assert_eq!(literal.watch_dirs(), [(PathBuf::from("/var/log"), false)]);
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        let error = Globs::new(&["logs/*.log".into()], &[]).unwrap_err().to_string();
        assert!(error.contains("include pattern \"logs/*.log\" is not an absolute path"), "{error}");
        let error = Globs::new(&["/var/log/*.log".into()], &["/var/log/[a.log".into()]).unwrap_err().to_string();
        assert!(error.contains("exclude pattern \"/var/log/[a.log\" is not a valid glob"), "{error}");
        let error = Globs::new(&[], &[]).unwrap_err().to_string();
        assert!(error.contains("list is empty"), "{error}");
    }
}
