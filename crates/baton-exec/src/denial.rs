//! Guessing, from what a command printed, whether the sandbox is why it failed: `on-failure`
//! offers to rerun such a command without the sandbox.

use crate::ShellOutput;

/// Fragments (lower case) of the messages a command prints when the sandbox refuses it,
/// checked on this machine:
///
/// * a write outside the writable roots: Landlock returns `EACCES`, "Permission denied"
///   (`touch`, bash redirections, Python's `PermissionError`, git's "could not lock");
/// * a write inside `.git` under `workspace-write`: the read-only bind mount returns `EROFS`,
///   "Read-only file system";
/// * a socket with the network off: the seccomp filter returns `EPERM`, "Operation not
///   permitted" (bash's `/dev/tcp`: "bash: socket: Operation not permitted");
/// * tools that hide that errno: a blocked DNS lookup becomes curl's and git's "Could not
///   resolve host" or glibc's "Temporary failure in name resolution", and a blocked connect
///   becomes curl's "Couldn't connect to server".
///
/// Matching is case-insensitive because Node and Go print the same errors in lower case.
const DENIAL_MESSAGES: [&str; 6] = [
    "permission denied",
    "operation not permitted",
    "read-only file system",
    "could not resolve host",
    "temporary failure in name resolution",
    "couldn't connect to server",
];

/// Whether `output` looks like a command that the sandbox stopped: it failed (a non-zero exit
/// or a signal, but not a timeout or a cancel) and printed one of the messages the sandbox's
/// refusals produce. A heuristic for commands that ran sandboxed: a command that fails for its
/// own reasons with such a message (a network that is really down, a file the user cannot
/// write either) is counted as a denial too.
pub fn looks_like_sandbox_denial(output: &ShellOutput) -> bool {
    if output.exit_code == Some(0) || output.timed_out || output.cancelled {
        return false;
    }
    let text = output.output.to_lowercase();
    DENIAL_MESSAGES.iter().any(|message| text.contains(message))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn output(exit_code: Option<i32>, text: &str) -> ShellOutput {
        ShellOutput {
            exit_code,
            signal: None,
            timed_out: false,
            cancelled: false,
            output: text.to_owned(),
            truncated_bytes: 0,
            duration: Duration::from_millis(5),
        }
    }

    #[test]
    fn lower_case_messages_of_other_runtimes_count() {
        assert!(looks_like_sandbox_denial(&output(
            Some(1),
            "Error: EACCES: permission denied, open '/usr/x'"
        )));
        assert!(looks_like_sandbox_denial(&output(
            Some(1),
            "open /usr/x: read-only file system"
        )));
        assert!(looks_like_sandbox_denial(&output(
            Some(6),
            "curl: (6) Could not resolve host: example.com"
        )));
    }

    #[test]
    fn success_timeout_and_cancel_are_never_denials() {
        let message = "ls: cannot open directory '/root': Permission denied\n";
        assert!(!looks_like_sandbox_denial(&output(Some(0), message)));
        let mut timed_out = output(None, message);
        timed_out.timed_out = true;
        assert!(!looks_like_sandbox_denial(&timed_out));
        let mut cancelled = output(None, message);
        cancelled.cancelled = true;
        assert!(!looks_like_sandbox_denial(&cancelled));
    }

    #[test]
    fn failures_with_other_messages_are_not_denials() {
        assert!(!looks_like_sandbox_denial(&output(Some(1), "")));
        assert!(!looks_like_sandbox_denial(&output(
            Some(2),
            "ls: cannot access 'missing': No such file or directory\n"
        )));
        assert!(!looks_like_sandbox_denial(&output(
            Some(101),
            "test result: FAILED. 3 passed; 1 failed\n"
        )));
    }
}
