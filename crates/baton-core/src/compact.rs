//! Compaction: when a conversation nears the model's context window, its older part is
//! replaced by a summary the model writes, and the recent items are kept verbatim.
//!
//! The functions here are pure (no IO), so the rules are tested directly: a tool call and its
//! output are never split apart, and the summary request itself fits in the window.

use std::collections::HashSet;

use baton_protocol::ResponseItem;

use crate::{project_doc, tools};

/// The request for a summary, sent as the last user message of the summarization request.
pub(crate) const SUMMARY_PROMPT: &str = "Your context window is nearly full. Write a summary of \
the conversation so far that lets you continue the work without it: the user's goals and \
constraints, what was done (commands, files changed, results), what was decided, and what \
remains. Be concise and concrete; do not call tools.";

/// A rough token count: serialized bytes / 4, the usual rule of thumb for English and code.
pub(crate) fn estimate_tokens(items: &[ResponseItem]) -> u64 {
    items.iter().map(item_tokens).sum()
}

fn item_tokens(item: &ResponseItem) -> u64 {
    let bytes = serde_json::to_vec(item).map_or(0, |v| v.len());
    (bytes as u64).div_ceil(4)
}

/// Where the kept tail of `history` may start: an index such that every tool output in
/// `history[cut..]` has its call there too.
fn is_clean_cut(history: &[ResponseItem], cut: usize) -> bool {
    let tail = &history[cut..];
    let calls: HashSet<&str> = tail.iter().filter_map(ResponseItem::call_id).collect();
    tail.iter()
        .filter_map(ResponseItem::output_call_id)
        .all(|id| calls.contains(id))
}

/// The start of the tail to keep verbatim: the latest clean cut at or after the last user
/// message whose tail fits in `budget` tokens, else `history.len()` (keep nothing).
pub(crate) fn choose_cut(history: &[ResponseItem], budget: u64) -> usize {
    let last_user = last_user_index(history).unwrap_or(history.len());
    let mut tail_tokens: u64 = history[last_user..].iter().map(item_tokens).sum();
    for cut in last_user..history.len() {
        if tail_tokens <= budget && is_clean_cut(history, cut) {
            return cut;
        }
        tail_tokens = tail_tokens.saturating_sub(item_tokens(&history[cut]));
    }
    history.len()
}

pub(crate) fn last_user_index(history: &[ResponseItem]) -> Option<usize> {
    history
        .iter()
        .rposition(|item| matches!(item.message_text(), Some(("user", _))))
}

/// The history that replaces everything: the developer and project (AGENTS.md) instructions
/// (they hold for the whole session), the summary, the last user message when the kept tail starts after it (so the
/// task in progress stays stated), then the tail.
pub(crate) fn replacement_history(
    history: &[ResponseItem],
    cut: usize,
    summary: &str,
) -> Vec<ResponseItem> {
    let mut replacement: Vec<ResponseItem> = history[..cut]
        .iter()
        .filter(|item| {
            matches!(item.message_text(), Some(("developer", _)))
                || project_doc::is_instructions_message(item)
        })
        .cloned()
        .collect();
    replacement.push(baton_protocol::compaction_summary_message(summary));
    let mut kept: Vec<usize> = Vec::new();
    if let Some(user) = last_user_index(history)
        && user < cut
    {
        kept.push(user);
    }
    kept.extend(latest_plan_pair(&history[..cut]));
    kept.sort_unstable();
    kept.dedup();
    replacement.extend(kept.into_iter().map(|index| history[index].clone()));
    replacement.extend_from_slice(&history[cut..]);
    replacement
}

/// The newest `update_plan` call of `history` and its output, when both are there: the plan
/// stays in front of the model, and is still the thread's plan when the transcript is read
/// back after a restart.
fn latest_plan_pair(history: &[ResponseItem]) -> Vec<usize> {
    let call = history.iter().rposition(|item| {
        matches!(item, ResponseItem::FunctionCall { name, .. } if name == tools::UPDATE_PLAN_TOOL)
    });
    let Some(call) = call else {
        return Vec::new();
    };
    let call_id = history[call].call_id();
    match history[call..]
        .iter()
        .position(|item| item.output_call_id().is_some() && item.output_call_id() == call_id)
    {
        Some(offset) => vec![call, call + offset],
        None => Vec::new(),
    }
}

/// The conversation sent for summarizing: the newest items that fit in `budget` tokens,
/// starting at a clean cut, followed by the summary request.
pub(crate) fn summarization_input(history: &[ResponseItem], budget: u64) -> Vec<ResponseItem> {
    let mut start = history.len();
    let mut used = 0u64;
    while start > 0 {
        let cost = item_tokens(&history[start - 1]);
        if used + cost > budget {
            break;
        }
        used += cost;
        start -= 1;
    }
    while start < history.len() && !is_clean_cut(history, start) {
        start += 1;
    }
    let mut input = history[start..].to_vec();
    input.push(ResponseItem::user_message(SUMMARY_PROMPT));
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> ResponseItem {
        ResponseItem::FunctionCall {
            name: "shell".into(),
            arguments: "{\"command\":[\"ls\"]}".into(),
            call_id: id.into(),
        }
    }

    fn output(id: &str, size: usize) -> ResponseItem {
        ResponseItem::FunctionCallOutput {
            call_id: id.into(),
            output: "x".repeat(size),
        }
    }

    #[test]
    fn a_cut_never_separates_a_call_from_its_output() {
        let history = vec![
            ResponseItem::user_message("old task"),
            ResponseItem::assistant_message("done"),
            ResponseItem::user_message("new task"),
            call("a"),
            call("b"),
            output("a", 4000),
            output("b", 40),
            ResponseItem::assistant_message("ok"),
        ];
        for budget in [0, 10, 50, 1000, 2000, 100_000] {
            let cut = choose_cut(&history, budget);
            assert!(is_clean_cut(&history, cut), "budget {budget}: cut {cut}");
            assert!(cut >= 2, "the last user message bounds the cut");
            if cut < history.len() {
                assert!(estimate_tokens(&history[cut..]) <= budget);
            }
        }
        // A large budget keeps the whole current turn.
        assert_eq!(choose_cut(&history, 100_000), 2);
        // Call `b` cannot be kept without call `a`, whose output is large.
        assert_eq!(choose_cut(&history, 100), 7);
    }

    #[test]
    fn replacement_keeps_the_task_and_the_tail() {
        let history = vec![
            ResponseItem::user_message("old"),
            ResponseItem::user_message("current task"),
            call("a"),
            output("a", 10),
        ];
        let replacement = replacement_history(&history, 2, "we did things");
        assert_eq!(replacement.len(), 4);
        let (_, first) = replacement[0].message_text().expect("message");
        assert!(
            first.starts_with(baton_protocol::COMPACTION_SUMMARY_HEADER)
                && first.ends_with("we did things")
        );
        assert_eq!(replacement[1], history[1]);
        assert_eq!(&replacement[2..], &history[2..]);
    }

    #[test]
    fn developer_instructions_survive_compaction() {
        let history = vec![
            ResponseItem::developer_message("always answer in French"),
            ResponseItem::user_message("old"),
            ResponseItem::assistant_message("vieux"),
            ResponseItem::user_message("current"),
        ];
        let replacement = replacement_history(&history, 3, "summary");
        assert_eq!(replacement[0], history[0]);
        assert!(
            replacement[1]
                .message_text()
                .is_some_and(|(role, text)| role == "user"
                    && text.starts_with(baton_protocol::COMPACTION_SUMMARY_HEADER))
        );
        assert_eq!(replacement[2], history[3]);
        assert_eq!(replacement.len(), 3);
    }

    #[test]
    fn project_instructions_survive_compaction() {
        let agents = ResponseItem::user_message(format!(
            "{}/p\n\n<INSTRUCTIONS>\nuse tabs\n</INSTRUCTIONS>",
            project_doc::HEADER_PREFIX
        ));
        let history = vec![
            agents.clone(),
            ResponseItem::developer_message("be brief"),
            ResponseItem::user_message("old"),
            ResponseItem::assistant_message("done"),
            ResponseItem::user_message("current"),
        ];
        let replacement = replacement_history(&history, 4, "summary");
        assert_eq!(replacement[..2], history[..2]);
        assert_eq!(replacement.len(), 4);
        assert_eq!(replacement[3], history[4]);
    }

    #[test]
    fn the_latest_plan_survives_compaction() {
        let plan_call = |id: &str, step: &str| ResponseItem::FunctionCall {
            name: tools::UPDATE_PLAN_TOOL.into(),
            arguments: format!(r#"{{"plan":[{{"step":"{step}","status":"in_progress"}}]}}"#),
            call_id: id.into(),
        };
        let history = vec![
            ResponseItem::user_message("task"),
            plan_call("p1", "old"),
            output("p1", 5),
            plan_call("p2", "new"),
            output("p2", 5),
            call("a"),
            output("a", 10),
        ];
        let replacement = replacement_history(&history, 5, "summary");
        assert_eq!(
            &replacement[1..],
            &[
                history[0].clone(),
                history[3].clone(),
                history[4].clone(),
                history[5].clone(),
                history[6].clone()
            ]
        );
        assert_eq!(
            tools::latest_plan(&replacement).map(|p| p.plan[0].step.clone()),
            Some("new".to_owned())
        );
    }

    #[test]
    fn summarization_input_fits_the_budget_and_starts_clean() {
        let history = vec![
            ResponseItem::user_message("a".repeat(4000)),
            call("a"),
            output("a", 400),
            ResponseItem::assistant_message("fine"),
        ];
        let input = summarization_input(&history, 200);
        assert!(estimate_tokens(&input[..input.len() - 1]) <= 200);
        assert!(!matches!(input[0], ResponseItem::FunctionCallOutput { .. }));
        assert_eq!(
            input.last().and_then(|i| i.message_text()).map(|(_, t)| t),
            Some(SUMMARY_PROMPT.to_owned())
        );
    }
}
