//! Which commands only list or read, so that `untrusted` need not ask before running them
//! (the approval rules use it: such commands run without asking).
//!
//! The classification is deliberately narrow: anything not recognised needs approval.

/// Whether `argv` only lists or reads files. `bash -lc "<script>"` (also `-c`, `sh`, `zsh`)
/// qualifies when the script is a plain command, or a chain of them joined by `&&`, `||`,
/// `;` or `|`, each safe, with no redirection, substitution, expansion or subshell.
pub fn is_known_safe_command(argv: &[String]) -> bool {
    if let [shell, flag, script] = argv
        && matches!(shell.as_str(), "bash" | "sh" | "zsh")
        && matches!(flag.as_str(), "-lc" | "-c")
    {
        return match split_script(script) {
            Some(commands) => commands.iter().all(|words| is_safe_words(words)),
            None => false,
        };
    }
    is_safe_words(argv)
}

fn is_safe_words(argv: &[String]) -> bool {
    let Some((program, args)) = argv.split_first() else {
        return false;
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match program.as_str() {
        "ls" | "cat" | "head" | "tail" | "wc" | "pwd" | "echo" | "true" | "false" | "nl"
        | "stat" | "which" | "uname" | "whoami" | "basename" | "dirname" | "realpath" => true,
        "grep" | "egrep" | "fgrep" => true,
        "rg" => !args.iter().any(|arg| {
            // These make ripgrep run other programs on the files it searches.
            arg.starts_with("--pre")
                || *arg == "-z"
                || *arg == "--search-zip"
                || arg.starts_with("--hostname-bin")
                || is_short_flag_cluster_with(arg, 'z')
        }),
        "find" => !args.iter().any(|arg| {
            matches!(
                *arg,
                "-exec"
                    | "-execdir"
                    | "-ok"
                    | "-okdir"
                    | "-delete"
                    | "-fls"
                    | "-fprint"
                    | "-fprint0"
                    | "-fprintf"
            )
        }),
        "git" => is_safe_git(&args),
        "sed" => is_safe_sed(&args),
        _ => false,
    }
}

/// `-nz` style clusters of single-letter flags containing `flag`.
fn is_short_flag_cluster_with(arg: &str, flag: char) -> bool {
    arg.len() > 2
        && arg.starts_with('-')
        && !arg.starts_with("--")
        && arg[1..].chars().all(|c| c.is_ascii_alphabetic())
        && arg.contains(flag)
}

fn is_safe_git(args: &[&str]) -> bool {
    // No global options: `-c` and `--exec-path` can make git run arbitrary programs.
    let Some((subcommand, rest)) = args.split_first() else {
        return false;
    };
    // Writing to a file or running configured external programs is not reading.
    let writes_or_runs = rest.iter().any(|arg| {
        arg.starts_with("--output") || *arg == "--ext-diff" || arg.starts_with("--exec")
    });
    if writes_or_runs {
        return false;
    }
    match *subcommand {
        "status" | "diff" | "log" | "show" => true,
        // Only listing: flags like --list/-a/-r/-v/--show-current, no names (which would
        // create a branch) and no flags that delete, rename, copy or configure.
        "branch" => rest.iter().all(|arg| {
            matches!(
                *arg,
                "--list"
                    | "-l"
                    | "-a"
                    | "--all"
                    | "-r"
                    | "--remotes"
                    | "-v"
                    | "-vv"
                    | "--verbose"
                    | "--show-current"
                    | "--no-color"
                    | "--color"
            ) || arg.starts_with("--contains")
                || arg.starts_with("--merged")
                || arg.starts_with("--no-merged")
                || arg.starts_with("--sort")
                || arg.starts_with("--format")
        }),
        _ => false,
    }
}

/// Only `sed -n <N>p` / `sed -n <N>,<M>p` followed by file names.
fn is_safe_sed(args: &[&str]) -> bool {
    let [flag, script, files @ ..] = args else {
        return false;
    };
    let Some(range) = script.strip_suffix('p') else {
        return false;
    };
    let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let range_ok = match range.split_once(',') {
        Some((from, to)) => is_number(from) && (is_number(to) || to == "$"),
        None => is_number(range),
    };
    *flag == "-n" && range_ok && files.iter().all(|file| !file.starts_with('-'))
}

/// Splits a shell script into the words of its commands, or `None` if it uses anything beyond
/// plain words, quotes and the operators `&&`, `||`, `;`, `|`.
fn split_script(script: &str) -> Option<Vec<Vec<String>>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    // An operator that still needs a command after it (`ls &&` is incomplete).
    let mut dangling_operator = false;
    let mut chars = script.chars().peekable();
    let end_command = |words: &mut Vec<String>, commands: &mut Vec<Vec<String>>| {
        if words.is_empty() {
            return false;
        }
        commands.push(std::mem::take(words));
        true
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                dangling_operator = false;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        other => word.push(other),
                    }
                }
            }
            '"' => {
                in_word = true;
                dangling_operator = false;
                loop {
                    match chars.next()? {
                        '"' => break,
                        // Expansion and substitution inside double quotes.
                        '$' | '`' | '\\' | '!' => return None,
                        other => word.push(other),
                    }
                }
            }
            '&' | '|' | ';' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                let operator_ok = match c {
                    '&' => chars.next_if_eq(&'&').is_some(),
                    '|' => {
                        chars.next_if_eq(&'|');
                        true
                    }
                    _ => true,
                };
                if !operator_ok || !end_command(&mut words, &mut commands) {
                    return None;
                }
                dangling_operator = matches!(c, '&' | '|');
            }
            // Plain word characters; everything else (redirections, `$`, backticks, globs,
            // subshells, escapes, comments, assignments) makes the script not obviously safe.
            c if c.is_ascii_alphanumeric() || "-_./,:=+@%^".contains(c) => {
                in_word = true;
                dangling_operator = false;
                word.push(c);
            }
            _ => return None,
        }
    }
    if in_word {
        words.push(word);
    }
    if !words.is_empty() {
        commands.push(words);
    }
    if commands.is_empty() || dangling_operator {
        return None;
    }
    // `VAR=value cmd` would change the environment of the command.
    if commands.iter().any(|command| command[0].contains('=')) {
        return None;
    }
    Some(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn bash(script: &str) -> Vec<String> {
        argv(&["bash", "-lc", script])
    }

    #[test]
    fn classification_table() {
        let table: &[(Vec<String>, bool)] = &[
            (argv(&["ls", "-la"]), true),
            (argv(&["cat", "src/main.rs"]), true),
            (argv(&["head", "-n", "5", "f"]), true),
            (argv(&["tail", "-n", "5", "f"]), true),
            (argv(&["wc", "-l", "f"]), true),
            (argv(&["pwd"]), true),
            (argv(&["echo", "$HOME"]), true),
            (argv(&["grep", "-rn", "foo", "."]), true),
            (argv(&["rg", "-n", "foo"]), true),
            (argv(&["rg", "--pre", "sh", "foo"]), false),
            (argv(&["rg", "--pre=sh", "foo"]), false),
            (argv(&["rg", "-z", "foo"]), false),
            (argv(&["rg", "-nz", "foo"]), false),
            (argv(&["find", ".", "-name", "*.rs"]), true),
            (argv(&["find", ".", "-exec", "rm", "{}", ";"]), false),
            (argv(&["find", ".", "-delete"]), false),
            (argv(&["find", ".", "-fprint", "out"]), false),
            (argv(&["git", "status"]), true),
            (argv(&["git", "diff", "HEAD~1"]), true),
            (argv(&["git", "log", "--oneline"]), true),
            (argv(&["git", "show", "HEAD"]), true),
            (argv(&["git", "branch"]), true),
            (argv(&["git", "branch", "-a", "-v"]), true),
            (argv(&["git", "branch", "new-branch"]), false),
            (argv(&["git", "branch", "-D", "old"]), false),
            (argv(&["git", "diff", "--output=x"]), false),
            (argv(&["git", "-c", "core.pager=sh", "log"]), false),
            (argv(&["git", "commit", "-m", "x"]), false),
            (argv(&["git", "checkout", "."]), false),
            (argv(&["git"]), false),
            (argv(&["sed", "-n", "10p", "f"]), true),
            (argv(&["sed", "-n", "1,20p", "f"]), true),
            (argv(&["sed", "-i", "s/a/b/", "f"]), false),
            (argv(&["sed", "-n", "1w out", "f"]), false),
            (argv(&["rm", "-rf", "/"]), false),
            (argv(&["python3", "-c", "print(1)"]), false),
            (argv(&[]), false),
            (bash("ls -la"), true),
            (bash("git status && git diff"), true),
            (bash("cat a.txt | wc -l"), true),
            (bash("ls; pwd || echo 'no dir'"), true),
            (bash("rg -n \"fn main\" src"), true),
            (bash("ls > out.txt"), false),
            (bash("cat < in"), false),
            (bash("echo $(rm -rf x)"), false),
            (bash("echo `id`"), false),
            (bash("echo \"$HOME\""), false),
            (bash("ls && rm -rf x"), false),
            (bash("ls & rm x"), false),
            (bash("(ls)"), false),
            (bash("FOO=1 ls"), false),
            (bash("ls 'unterminated"), false),
            (bash("ls &&"), false),
            (bash(""), false),
            (argv(&["bash", "-c", "cat f"]), true),
            (argv(&["bash", "-lc", "ls", "extra"]), false),
            (argv(&["sh", "-lc", "find . -delete"]), false),
        ];
        for (command, expected) in table {
            assert_eq!(
                is_known_safe_command(command),
                *expected,
                "is_known_safe_command({command:?})"
            );
        }
    }
}
