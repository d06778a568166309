//! Every line of a transcript, in order, for people (`baton sessions show`): the conversation
//! together with what happened around it (plan updates, token counts, compactions).
//!
//! Unlike [`crate::read_rollout`], which rebuilds only what the model needs, this reads the
//! whole file (in blocks); it is for showing a session, never for continuing one.

use std::path::Path;

use baton_protocol::{Compacted, EventMsg, ResponseItem, RolloutItem, SessionMeta, TurnContext};

use crate::error::StoreError;
use crate::lines::{Envelope, FileSource, LineReader, MAX_LINE_BYTES, NextLine, Source};

/// The lines of the transcript at `path` that baton understands, in file order. Lines of
/// other types (Codex's `world_state`, …), corrupt lines and lines over the line cap are left
/// out with a warning. The file is read in blocks, so memory follows what is kept.
pub fn read_timeline(path: &Path) -> Result<Vec<RolloutItem>, StoreError> {
    let file = std::fs::File::open(path).map_err(StoreError::io("read the transcript", path))?;
    let len = file
        .metadata()
        .map_err(StoreError::io("read the transcript", path))?
        .len();
    parse_timeline(path, &FileSource { file: &file, len })
        .map_err(StoreError::io("read the transcript", path))
}

/// [`read_timeline`] of a transcript held in memory, such as [`crate::Store::export_thread`]
/// gives for any store (`path` names it in warnings).
pub fn timeline_of_text(path: &Path, text: &str) -> Result<Vec<RolloutItem>, StoreError> {
    parse_timeline(path, text.as_bytes()).map_err(StoreError::io("read the transcript", path))
}

fn parse_timeline<S: Source + ?Sized>(
    path: &Path,
    source: &S,
) -> std::io::Result<Vec<RolloutItem>> {
    let mut items = Vec::new();
    let mut reader = LineReader::new(source, 0, MAX_LINE_BYTES);
    while let Some(next) = reader.next_line()? {
        let line = match next {
            NextLine::Line(line) => line,
            NextLine::TooLong { number, len, .. } => {
                tracing::warn!(
                    "{} line {number}: skipped a line of {len} bytes, over the {MAX_LINE_BYTES}-byte line cap",
                    path.display()
                );
                continue;
            }
        };
        if line.is_blank() {
            continue;
        }
        let number = line.number;
        let item = Envelope::parse(line.bytes).and_then(|envelope| {
            let payload = envelope.payload.get();
            Ok(match envelope.kind.as_ref() {
                "session_meta" => Some(RolloutItem::SessionMeta(Box::new(serde_json::from_str::<
                    SessionMeta,
                >(
                    payload
                )?))),
                "turn_context" => Some(RolloutItem::TurnContext(serde_json::from_str::<
                    TurnContext,
                >(payload)?)),
                "response_item" => {
                    Some(RolloutItem::ResponseItem(ResponseItem::from_json(payload)?))
                }
                // Events are for people; another writer's event of a shape baton does not
                // know (Codex's exec_command_end has other fields) is left out quietly.
                "event_msg" => serde_json::from_str::<EventMsg>(payload)
                    .ok()
                    .map(RolloutItem::EventMsg),
                "compacted" => Some(RolloutItem::Compacted(serde_json::from_str::<Compacted>(
                    payload,
                )?)),
                _ => None,
            })
        });
        match item {
            Ok(Some(item)) => items.push(item),
            Ok(None) => {}
            // A torn last line is expected after a crash; anything else is worth a warning.
            Err(error) if line.terminated => tracing::warn!(
                "{} line {}: skipped a corrupt line ({error})",
                path.display(),
                number
            ),
            Err(_) => {}
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_known_lines_in_order_and_skips_the_rest() {
        let text = concat!(
            r#"{"timestamp":"2026-01-01T00:00:00.000Z","type":"session_meta","payload":{"id":"019c7616-b3e9-7782-9ea8-b53e6bb09329","timestamp":"t","cwd":"/p"}}"#,
            "\n",
            r#"{"timestamp":"2026-01-01T00:00:00.000Z","type":"world_state","payload":{}}"#,
            "\n",
            "not json\n",
            r#"{"timestamp":"2026-01-01T00:00:00.000Z","type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}}"#,
            "\n",
            r#"{"timestamp":"2026-01-01T00:00:00.000Z","type":"event_msg","payload":{"type":"token_count","input_tokens":10,"cached_input_tokens":4,"output_tokens":2,"total_tokens":12}}"#,
            "\n",
            r#"{"timestamp":"2026-01-01T00:00:00.000Z","type":"event_msg","payload":{"type":"plan_update","plan":[{"step":"a","status":"in_progress"}]}}"#,
            "\n",
            r#"{"timestamp":"2026-01-01T00:00:00.000Z","type":"event_msg","payload":{"type":"exec_command_end","stdout":""}}"#,
            "\n",
            r#"{"timestamp":"2026-01-01T00:00:00.000Z","type":"event_msg","pay"#,
        );
        let items = parse_timeline(Path::new("t.jsonl"), text.as_bytes()).expect("read");
        let kinds: Vec<&str> = items.iter().map(RolloutItem::type_name).collect();
        assert_eq!(
            kinds,
            ["session_meta", "response_item", "event_msg", "event_msg"]
        );
        assert!(matches!(
            items[2],
            RolloutItem::EventMsg(EventMsg::TokenCount {
                input_tokens: 10,
                cached_input_tokens: 4,
                ..
            })
        ));
        assert!(matches!(
            items[3],
            RolloutItem::EventMsg(EventMsg::PlanUpdate(_))
        ));
    }
}
