//! The last line of defence for API keys: whatever a command printed or the model
//! wrote, a provider key's value is replaced by `[redacted]` before it is recorded in the
//! transcript or the index, or sent to the model. Commands do not get the key variables in the
//! first place (`baton_exec::command_env`); this catches a key that reached them another way.

use std::ffi::OsString;

use baton_protocol::{ContentItem, ResponseItem};

pub(crate) const REDACTED: &str = "[redacted]";

/// Values shorter than this are not redacted: they would match ordinary text.
const MIN_SECRET_LEN: usize = 8;

/// The values of the provider key variables present in baton's environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// The secrets among `vars` named in `names` (the `env_key` of every provider).
    pub fn from_env(
        names: &[String],
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Self {
        let mut values: Vec<String> = vars
            .into_iter()
            .filter(|(name, _)| names.iter().any(|wanted| name == wanted.as_str()))
            .filter_map(|(_, value)| value.into_string().ok())
            .filter(|value| value.len() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so a key that contains another is replaced whole.
        values.sort_by_key(|value| std::cmp::Reverse(value.len()));
        values.dedup();
        Self { values }
    }

    /// `text` with every secret value replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for value in &self.values {
            if text.contains(value.as_str()) {
                text = text.replace(value.as_str(), REDACTED);
            }
        }
        text
    }

    /// `item` with its text redacted: message parts, call arguments and tool outputs.
    pub fn redact_item(&self, item: ResponseItem) -> ResponseItem {
        if self.values.is_empty() {
            return item;
        }
        match item {
            ResponseItem::Message { role, content } => ResponseItem::Message {
                role,
                content: content
                    .into_iter()
                    .map(|part| match part {
                        ContentItem::InputText { text } => ContentItem::InputText {
                            text: self.redact(&text),
                        },
                        ContentItem::OutputText { text } => ContentItem::OutputText {
                            text: self.redact(&text),
                        },
                        other => other,
                    })
                    .collect(),
            },
            ResponseItem::FunctionCall {
                name,
                arguments,
                call_id,
            } => ResponseItem::FunctionCall {
                name,
                arguments: self.redact(&arguments),
                call_id,
            },
            ResponseItem::FunctionCallOutput { call_id, output } => {
                ResponseItem::FunctionCallOutput {
                    call_id,
                    output: self.redact(&output),
                }
            }
            ResponseItem::CustomToolCall {
                name,
                input,
                call_id,
            } => ResponseItem::CustomToolCall {
                name,
                input: self.redact(&input),
                call_id,
            },
            ResponseItem::CustomToolCallOutput { call_id, output } => {
                ResponseItem::CustomToolCallOutput {
                    call_id,
                    output: self.redact(&output),
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::from_env(
            &["CORP_KEY".to_owned(), "SHORT_KEY".to_owned()],
            [
                ("CORP_KEY".into(), "sk-corp-12345678".into()),
                ("SHORT_KEY".into(), "abc".into()),
                ("OTHER".into(), "not-a-secret-value".into()),
            ],
        )
    }

    #[test]
    fn key_values_are_replaced_wherever_they_appear() {
        let secrets = secrets();
        assert_eq!(
            secrets.redact("key=sk-corp-12345678 and again sk-corp-12345678."),
            "key=[redacted] and again [redacted]."
        );
        // Short values and other variables are left alone.
        assert_eq!(
            secrets.redact("abc not-a-secret-value"),
            "abc not-a-secret-value"
        );
        let item = secrets.redact_item(ResponseItem::FunctionCallOutput {
            call_id: "c1".into(),
            output: "CORP_KEY=sk-corp-12345678\n".into(),
        });
        assert_eq!(
            item,
            ResponseItem::FunctionCallOutput {
                call_id: "c1".into(),
                output: "CORP_KEY=[redacted]\n".into(),
            }
        );
        let message =
            secrets.redact_item(ResponseItem::assistant_message("it is sk-corp-12345678"));
        assert_eq!(
            message.message_text().map(|(_, text)| text),
            Some("it is [redacted]".to_owned())
        );
    }
}
