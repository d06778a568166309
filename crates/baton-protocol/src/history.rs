//! Conversation rules shared by everything that reads or writes a history: which user
//! messages a person typed and which are context, where turns start, how a compaction summary
//! is marked, how a tool call left without an output is answered, and how text is shortened
//! for one line of display.
//!
//! The store (summaries, rehydration), the agent loop (cancellation, compaction, forks) and the
//! servers all follow these, so they live here, with no IO.

use std::collections::HashSet;

use crate::ResponseItem;

/// How baton's compaction summary starts: the first user message of a compacted history.
pub const COMPACTION_SUMMARY_HEADER: &str =
    "Summary of the earlier conversation (compacted by baton):";

/// The user message that replaces the conversation before a compaction.
pub fn compaction_summary_message(summary: &str) -> ResponseItem {
    ResponseItem::user_message(format!("{COMPACTION_SUMMARY_HEADER}\n{summary}"))
}

/// True for a user-role message that a person did not type: the context Codex sends as user
/// messages (environment, instructions, shell commands, abort notices) and the summary that
/// replaces the conversation after baton compacts it. Such messages are neither a thread's
/// first prompt nor a turn.
pub fn is_context_message(text: &str) -> bool {
    const PREFIXES: [&str; 7] = [
        "<environment_context>",
        "<user_instructions>",
        "# AGENTS.md instructions",
        "<INSTRUCTIONS>",
        "<user_shell_command>",
        "<turn_aborted>",
        COMPACTION_SUMMARY_HEADER,
    ];
    let text = text.trim_start();
    PREFIXES.iter().any(|prefix| text.starts_with(prefix))
}

/// Where each turn starts: the indices of the messages a person typed (not the context and
/// compaction summaries that are sent as user messages).
pub fn user_turn_starts(history: &[ResponseItem]) -> Vec<usize> {
    history
        .iter()
        .enumerate()
        .filter(|(_, item)| match item.message_text() {
            Some(("user", text)) => !is_context_message(&text),
            _ => false,
        })
        .map(|(index, _)| index)
        .collect()
}

/// The indices of the tool calls that have no output in `history`. The model APIs reject a
/// history with an unanswered call.
pub fn unanswered_calls(history: &[ResponseItem]) -> Vec<usize> {
    let answered: HashSet<&str> = history
        .iter()
        .filter_map(ResponseItem::output_call_id)
        .collect();
    history
        .iter()
        .enumerate()
        .filter(|(_, item)| item.call_id().is_some_and(|id| !answered.contains(id)))
        .map(|(index, _)| index)
        .collect()
}

/// The output that answers `call` with `text` (a custom tool call gets a custom tool output);
/// `None` if `call` is not a tool call.
pub fn call_output(call: &ResponseItem, text: &str) -> Option<ResponseItem> {
    match call {
        ResponseItem::CustomToolCall { call_id, .. } => Some(ResponseItem::CustomToolCallOutput {
            call_id: call_id.clone(),
            output: text.to_owned(),
        }),
        other => other
            .call_id()
            .map(|call_id| ResponseItem::FunctionCallOutput {
                call_id: call_id.to_owned(),
                output: text.to_owned(),
            }),
    }
}

/// `text` cut to at most `max` characters, with `…` when something was cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `text` on one line (runs of whitespace, newlines included, become one space), then
/// [`shorten`]ed to `max` characters.
pub fn shorten_line(text: &str, max: usize) -> String {
    shorten(&text.split_whitespace().collect::<Vec<_>>().join(" "), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_counts_characters() {
        assert_eq!(shorten("héllo", 10), "héllo");
        assert_eq!(shorten("héllo", 2), "hé…");
        assert_eq!(shorten("", 0), "");
    }

    #[test]
    fn turns_start_at_typed_messages_only() {
        let history = vec![
            ResponseItem::user_message("<environment_context>cwd</environment_context>"),
            ResponseItem::user_message("first"),
            compaction_summary_message("we did things"),
            ResponseItem::user_message("second"),
        ];
        assert_eq!(user_turn_starts(&history), vec![1, 3]);
    }

    #[test]
    fn only_calls_without_an_output_are_unanswered() {
        let call = |id: &str| ResponseItem::FunctionCall {
            name: "shell".into(),
            arguments: "{}".into(),
            call_id: id.into(),
        };
        let history = vec![
            call("a"),
            ResponseItem::FunctionCallOutput {
                call_id: "a".into(),
                output: "ok".into(),
            },
            call("b"),
        ];
        assert_eq!(unanswered_calls(&history), vec![2]);
        assert_eq!(
            call_output(&history[2], "aborted"),
            Some(ResponseItem::FunctionCallOutput {
                call_id: "b".into(),
                output: "aborted".into(),
            })
        );
    }
}
