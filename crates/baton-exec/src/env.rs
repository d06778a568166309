//! The environment of a command the model runs: baton's own
//! environment filtered by `[shell_environment_policy]`, so that API keys and other secrets in
//! baton's environment never reach a command (whose output goes to the model and the transcript).

use std::ffi::{OsStr, OsString};

use baton_protocol::{EnvInherit, ShellEnvironmentPolicy};

/// Names a command keeps under `inherit = "core"`; `LC_*` is matched as a pattern.
const CORE_VARS: &[&str] = &[
    "HOME", "LOGNAME", "PATH", "SHELL", "USER", "USERNAME", "TMPDIR", "TEMP", "TMP", "LANG",
    "LANGUAGE", "LC_*", "TERM", "TZ",
];

/// Removed unless `ignore_default_excludes`: names that usually hold a credential, and the
/// ssh agent socket (which signs as the user).
const DEFAULT_EXCLUDES: &[&str] = &[
    "*KEY*",
    "*SECRET*",
    "*TOKEN*",
    "*PASSWORD*",
    "SSH_AUTH_SOCK",
];

/// The environment of a command: `vars` (baton's environment) filtered by `policy`, in this
/// order: `inherit`, the default excludes, `exclude`, `include_only`, the provider key
/// variables `secret_names` (always removed, whatever the patterns say), then `set` (what the
/// person sets explicitly always reaches the command).
pub fn command_env(
    policy: &ShellEnvironmentPolicy,
    secret_names: &[String],
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vars
        .into_iter()
        .filter(|(name, _)| match policy.inherit {
            EnvInherit::All => true,
            EnvInherit::Core => matches_any(name, CORE_VARS),
            EnvInherit::None => false,
        })
        .filter(|(name, _)| policy.ignore_default_excludes || !matches_any(name, DEFAULT_EXCLUDES))
        .filter(|(name, _)| !matches_any(name, &policy.exclude))
        .filter(|(name, _)| {
            policy.include_only.is_empty() || matches_any(name, &policy.include_only)
        })
        .filter(|(name, _)| !secret_names.iter().any(|secret| name == secret.as_str()))
        .collect();
    for (name, value) in &policy.set {
        env.retain(|(existing, _)| existing != name.as_str());
        env.push((name.into(), value.into()));
    }
    env
}

fn matches_any(name: &OsStr, patterns: &[impl AsRef<str>]) -> bool {
    let name = name.to_string_lossy();
    patterns
        .iter()
        .any(|pattern| glob_matches(pattern.as_ref(), &name))
}

/// `*` (any run of characters) and `?` (one character), ASCII case-insensitive.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().map(|c| c.to_ascii_uppercase()).collect();
    let name: Vec<char> = name.chars().map(|c| c.to_ascii_uppercase()).collect();
    // Iterative matching with one backtrack point for the last `*`: linear in practice.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)))
            .collect()
    }

    fn names(env: &[(OsString, OsString)]) -> Vec<String> {
        let mut names: Vec<String> = env
            .iter()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    const BATON_ENV: &[(&str, &str)] = &[
        ("PATH", "/usr/bin"),
        ("HOME", "/root"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C"),
        ("CORP_LLM", "sk-provider"),
        ("OPENAI_API_KEY", "sk-openai"),
        ("my_secret_x", "s"),
        ("GITHUB_TOKEN", "t"),
        ("PGPASSWORD", "p"),
        ("SSH_AUTH_SOCK", "/tmp/agent"),
        ("CARGO_HOME", "/cargo"),
        ("EDITOR", "vi"),
    ];

    #[test]
    fn by_default_secrets_and_provider_keys_are_removed() {
        let env = command_env(
            &ShellEnvironmentPolicy::default(),
            &["CORP_LLM".to_owned()],
            vars(BATON_ENV),
        );
        assert_eq!(
            names(&env),
            ["CARGO_HOME", "EDITOR", "HOME", "LANG", "LC_ALL", "PATH"]
        );
    }

    #[test]
    fn inherit_core_and_none() {
        let core = ShellEnvironmentPolicy {
            inherit: EnvInherit::Core,
            ..Default::default()
        };
        assert_eq!(
            names(&command_env(&core, &[], vars(BATON_ENV))),
            ["HOME", "LANG", "LC_ALL", "PATH"]
        );
        let none = ShellEnvironmentPolicy {
            inherit: EnvInherit::None,
            set: [("PATH".to_owned(), "/bin".to_owned())].into(),
            ..Default::default()
        };
        assert_eq!(
            command_env(&none, &[], vars(BATON_ENV)),
            vars(&[("PATH", "/bin")])
        );
    }

    #[test]
    fn exclude_include_only_and_set() {
        let policy = ShellEnvironmentPolicy {
            exclude: vec!["cargo_*".to_owned()],
            include_only: vec!["*A*".to_owned(), "p?th".to_owned()],
            set: [
                ("EDITOR".to_owned(), "nano".to_owned()),
                ("GITHUB_TOKEN".to_owned(), "set-on-purpose".to_owned()),
            ]
            .into(),
            ..Default::default()
        };
        let env = command_env(&policy, &[], vars(BATON_ENV));
        assert_eq!(
            names(&env),
            ["EDITOR", "GITHUB_TOKEN", "LANG", "LC_ALL", "PATH"]
        );
        assert!(env.contains(&(OsString::from("EDITOR"), OsString::from("nano"))));
    }

    #[test]
    fn ignoring_default_excludes_never_brings_back_a_provider_key() {
        let policy = ShellEnvironmentPolicy {
            ignore_default_excludes: true,
            ..Default::default()
        };
        let env = names(&command_env(
            &policy,
            &["OPENAI_API_KEY".to_owned()],
            vars(BATON_ENV),
        ));
        assert!(env.contains(&"GITHUB_TOKEN".to_owned()), "{env:?}");
        assert!(env.contains(&"SSH_AUTH_SOCK".to_owned()), "{env:?}");
        assert!(!env.contains(&"OPENAI_API_KEY".to_owned()), "{env:?}");
    }

    #[test]
    fn globs() {
        for (pattern, name, expected) in [
            ("*KEY*", "openai_api_key", true),
            ("*KEY*", "KEYBOARD", true),
            ("*KEY*", "KY", false),
            ("LC_*", "LC_CTYPE", true),
            ("LC_*", "XLC_CTYPE", false),
            ("p?th", "PATH", true),
            ("p?th", "PAATH", false),
            ("a*b*c", "aXXbYYbZc", true),
            ("a*b*c", "aXXbYYbZ", false),
            ("", "", true),
            ("*", "", true),
        ] {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }
}
