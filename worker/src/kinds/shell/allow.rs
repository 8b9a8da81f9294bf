//! What a `shell` task may name, decided when the worker starts: the
//! commands (resolved to absolute paths) and the environment variables.

use super::super::ConfigError;
use std::{
    collections::BTreeMap,
    ffi::OsStr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// Variables no task may set, whatever the env allow-list says: they
/// change which program runs, what it loads or what it executes besides.
/// Compared case-insensitively.
pub const FORBIDDEN_ENV: &[&str] = &[
    // Where programs and their files are found.
    "PATH",
    "HOME",
    "SHELL",
    "TMPDIR",
    "CDPATH",
    // Shells: startup files, word splitting, executed hooks.
    "ENV",
    "BASH_ENV",
    "IFS",
    "SHELLOPTS",
    "BASHOPTS",
    "GLOBIGNORE",
    "PS4",
    "PROMPT_COMMAND",
    // The C library's loadable data and tunables.
    "GLIBC_TUNABLES",
    "GCONV_PATH",
    "GETCONF_DIR",
    "LOCPATH",
    "NLSPATH",
    "TZDIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    "RESOLV_HOST_CONF",
    "TERMINFO",
    "TERMINFO_DIRS",
    "LIBPATH",
    "SHLIB_PATH",
    // Interpreters' module paths and startup options.
    "CLASSPATH",
    "JDK_JAVA_OPTIONS",
    "_JAVA_OPTIONS",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "TCLLIBPATH",
    "GEM_HOME",
    "GEM_PATH",
    "BUNDLE_GEMFILE",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    // Commands other programs run.
    "EDITOR",
    "VISUAL",
    "PAGER",
    "BROWSER",
    "LESSOPEN",
    "LESSCLOSE",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
];

/// Prefixes of variables no task may set (case-insensitive): the dynamic
/// loaders, exported shell functions, interpreters' settings, allocator
/// hooks, Git's, and the configuration directories of many programs.
pub const FORBIDDEN_ENV_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "BASH_FUNC_",
    "PYTHON",
    "PERL",
    "RUBY",
    "NODE_",
    "LUA_",
    "JAVA_",
    "MALLOC_",
    "GIT_",
    "XDG_",
];

/// Whether no task may set `name`.
pub(super) fn forbidden(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    FORBIDDEN_ENV.contains(&up.as_str()) || FORBIDDEN_ENV_PREFIXES.iter().any(|p| up.starts_with(p))
}

/// The env allow-list: exact names, and prefixes (written `PREFIX*`).
#[derive(Debug, Default, Clone)]
pub(super) struct EnvAllow {
    names: Vec<String>,
    prefixes: Vec<String>,
}

impl EnvAllow {
    /// Checks each entry: a variable name, optionally ending in `*`, that
    /// neither names nor covers a forbidden variable.
    pub(super) fn new(entries: &[String]) -> Result<EnvAllow, ConfigError> {
        let mut allow = EnvAllow::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (stem, prefix) = match entry.strip_suffix('*') {
                Some(stem) => (stem, true),
                None => (entry, false),
            };
            let valid = stem
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if !valid || (!prefix && stem.is_empty()) {
                return Err(ConfigError(format!(
                    "shell env allow-list: `{entry}` is not a variable name (letters, digits and `_`, optionally ending in `*`)"
                )));
            }
            let up = stem.to_ascii_uppercase();
            let covers = if prefix {
                // `P*` covers a forbidden name starting with `P`, and a
                // forbidden prefix that starts with `P` or that `P` extends.
                FORBIDDEN_ENV.iter().any(|f| f.starts_with(&up))
                    || FORBIDDEN_ENV_PREFIXES
                        .iter()
                        .any(|f| f.starts_with(&up) || up.starts_with(f))
            } else {
                forbidden(stem)
            };
            if covers {
                return Err(ConfigError(format!(
                    "shell env allow-list: `{entry}` would let a task set a variable that changes which program runs or what it loads (PATH, HOME, LD_*, PYTHON*, ...); those are never allowed"
                )));
            }
            if prefix {
                allow.prefixes.push(stem.to_owned());
            } else {
                allow.names.push(stem.to_owned());
            }
        }
        Ok(allow)
    }

    pub(super) fn permits(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }

    /// The list as configured, for messages.
    pub(super) fn describe(&self) -> String {
        let all: Vec<String> = (self.names.iter().cloned())
            .chain(self.prefixes.iter().map(|p| format!("{p}*")))
            .collect();
        if all.is_empty() {
            "empty".to_owned()
        } else {
            all.join(", ")
        }
    }
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Resolves each command of the allow-list to the absolute path that will
/// run it: a name through `search_path` (the worker's `PATH`; directories
/// that are not absolute are skipped), an entry with a `/` as the absolute
/// path it must be. Symbolic links are kept as found.
pub(super) fn resolve(
    commands: &[String],
    search_path: Option<&OsStr>,
) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let mut resolved = BTreeMap::new();
    for entry in commands.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        let path = if entry.contains('/') {
            let path = PathBuf::from(entry);
            if !path.is_absolute() {
                return Err(ConfigError(format!(
                    "shell allow-list: `{entry}` must be a command name or an absolute path"
                )));
            }
            if !executable(&path) {
                return Err(ConfigError(format!(
                    "shell allow-list: `{entry}` is not an executable file"
                )));
            }
            path
        } else {
            search_path
                .into_iter()
                .flat_map(std::env::split_paths)
                .filter(|dir| dir.is_absolute())
                .map(|dir| dir.join(entry))
                .find(|candidate| executable(candidate))
                .ok_or_else(|| {
                    ConfigError(format!(
                        "shell allow-list: `{entry}` is not an executable file in any absolute directory of the worker's PATH ({})",
                        search_path.unwrap_or_default().to_string_lossy()
                    ))
                })?
        };
        resolved.insert(entry.to_owned(), path);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A directory of this test's own, removed at the end.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("warren-allow-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn script(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn commands_resolve_once_through_absolute_path_directories() {
        let (a, b) = (TempDir::new("a"), TempDir::new("b"));
        script(a.path(), "tool", 0o644); // not executable: skipped
        let in_b = script(b.path(), "tool", 0o755);
        let other = script(a.path(), "other", 0o755);
        let path = std::env::join_paths(["relative/dir".as_ref(), a.path(), b.path()]).unwrap();
        let got = resolve(&strings(&["tool", other.to_str().unwrap()]), Some(&path)).unwrap();
        assert_eq!(got["tool"], in_b);
        assert_eq!(got[other.to_str().unwrap()], other);

        // What cannot be resolved stops the worker at start.
        let err = resolve(&strings(&["missing"]), Some(&path)).unwrap_err();
        assert!(
            err.0.contains("`missing` is not an executable file"),
            "{err}"
        );
        let err = resolve(&strings(&["./tool"]), Some(&path)).unwrap_err();
        assert!(
            err.0.contains("must be a command name or an absolute path"),
            "{err}"
        );
        let not_exec = a.path().join("tool");
        let err = resolve(&strings(&[not_exec.to_str().unwrap()]), Some(&path)).unwrap_err();
        assert!(err.0.contains("is not an executable file"), "{err}");
        // A name is never looked up in a relative directory (the worker's
        // working directory), nor without a PATH.
        let cwd_only = std::env::join_paths([".", ""]).unwrap();
        assert!(resolve(&strings(&["sh"]), Some(&cwd_only)).is_err());
        assert!(resolve(&strings(&["sh"]), None).is_err());
    }

    #[test]
    fn loader_and_interpreter_variables_are_forbidden_in_any_case() {
        for name in [
            "PATH",
            "path",
            "HOME",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "ld_audit",
            "DYLD_INSERT_LIBRARIES",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PERL5LIB",
            "PERL5OPT",
            "RUBYOPT",
            "NODE_OPTIONS",
            "BASH_ENV",
            "ENV",
            "IFS",
            "BASH_FUNC_echo%%",
            "GLIBC_TUNABLES",
            "GIT_SSH_COMMAND",
        ] {
            assert!(forbidden(name), "{name}");
        }
        for name in ["LANG", "TZ", "APP_MODE", "ENVIRONMENT", "PATHS_FILE"] {
            assert!(!forbidden(name), "{name}");
        }
    }

    #[test]
    fn the_env_allow_list_takes_names_and_prefixes_but_nothing_forbidden() {
        let allow = EnvAllow::new(&strings(&["APP_*", "TZ", " "])).unwrap();
        assert!(allow.permits("APP_MODE") && allow.permits("TZ"));
        assert!(!allow.permits("tz") && !allow.permits("TZDATA") && !allow.permits("APPX"));
        assert_eq!(allow.describe(), "TZ, APP_*");
        assert_eq!(EnvAllow::new(&[]).unwrap().describe(), "empty");

        for entry in [
            "PATH",
            "ld_preload",
            "LD_*",
            "L*",
            "*",
            "P*",
            "PY*",
            "PYTHONX*",
            "H*",
        ] {
            let err = EnvAllow::new(&strings(&[entry])).unwrap_err();
            assert!(err.0.contains("never allowed"), "{entry}: {err}");
        }
        for entry in ["A B", "1ABC", "A*B", "A=B"] {
            let err = EnvAllow::new(&strings(&[entry])).unwrap_err();
            assert!(err.0.contains("is not a variable name"), "{entry}: {err}");
        }
    }
}
