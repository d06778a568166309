//! A turn's token usage, summed over its model requests, and how much of the context window is
//! left: what an orchestrator needs to know a session nears compaction.

use baton_model::TokenUsage;
use serde::Serialize;

/// Token figures of one turn (`structuredContent.usage`, `turn.completed` of `exec --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TurnUsage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    /// The model's context window in tokens, when known (config or a known model).
    pub context_window: Option<u64>,
    /// How much of the window the conversation leaves free after this turn, 0 to 100.
    pub context_left_percent: Option<u64>,
    /// Input and output of the last request that reported usage: the size of the
    /// conversation the next request starts from.
    #[serde(skip)]
    context_tokens: Option<u64>,
}

impl TurnUsage {
    /// Adds one response's usage.
    pub(crate) fn add(&mut self, usage: &TokenUsage) {
        self.input_tokens = self.input_tokens.saturating_add(usage.input_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(usage.cached_input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(usage.output_tokens);
        self.context_tokens = Some(usage.input_tokens.saturating_add(usage.output_tokens));
    }

    /// These figures with the window filled in and the share of it left.
    pub(crate) fn with_window(mut self, window: Option<u64>) -> Self {
        self.context_window = window;
        self.context_left_percent = match (window, self.context_tokens) {
            (Some(window), Some(used)) if window > 0 => {
                Some(window.saturating_sub(used).saturating_mul(100) / window)
            }
            _ => None,
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, cached: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            cached_input_tokens: cached,
            output_tokens: output,
            total_tokens: input + output,
        }
    }

    #[test]
    fn sums_requests_and_measures_the_last_one_against_the_window() {
        let mut turn = TurnUsage::default();
        turn.add(&usage(1000, 0, 50));
        turn.add(&usage(1200, 1000, 150));
        let turn = turn.with_window(Some(10_000));
        assert_eq!(
            (
                turn.input_tokens,
                turn.cached_input_tokens,
                turn.output_tokens
            ),
            (2200, 1000, 200)
        );
        assert_eq!(turn.context_window, Some(10_000));
        // 1350 of 10 000 used by the conversation now.
        assert_eq!(turn.context_left_percent, Some(86));
        assert_eq!(
            TurnUsage::default()
                .with_window(Some(10))
                .context_left_percent,
            None
        );
        let mut full = TurnUsage::default();
        full.add(&usage(20, 0, 5));
        assert_eq!(full.with_window(Some(10)).context_left_percent, Some(0));
    }
}
