//! Streamed tool calls put back together. An OpenAI-compatible server streams each function
//! call as deltas: the first usually carries the call's `index`, its `id` and the function's
//! `name`, the following ones fragments of its `arguments` text, split anywhere.
//!
//! Deltas are grouped by index **and** id: some servers stream parallel calls all at index 0 and
//! tell them apart only by a new `id`, so a delta whose id differs from the one already held at
//! its index starts a new call. A delta without an index continues the latest call. A call that
//! never got an id is given one (`call_<n>`), so the tool's answer can still refer to it.

use crate::chat::ToolCall;

/// One tool-call delta as the wire carries it (every part optional).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCallDelta {
    /// Which call of the message it belongs to.
    pub index: Option<u64>,
    /// The call's id (normally only on its first delta).
    pub id: Option<String>,
    /// The function's name (normally only on the first delta).
    pub name: Option<String>,
    /// The next fragment of the arguments' JSON text.
    pub arguments: Option<String>,
}

#[derive(Debug)]
struct Partial {
    index: u64,
    call: ToolCall,
}

/// Collects [`ToolCallDelta`]s into whole [`ToolCall`]s.
#[derive(Debug, Default)]
pub struct ToolCallAccumulator {
    calls: Vec<Partial>,
}

impl ToolCallAccumulator {
    /// Adds one delta.
    pub fn push(&mut self, delta: ToolCallDelta) {
        let id = delta.id.filter(|id| !id.is_empty());
        let index = delta
            .index
            .or_else(|| self.calls.last().map(|p| p.index))
            .unwrap_or(0);
        let held = self.calls.iter().rposition(|p| p.index == index);
        let at = match held {
            Some(at)
                if id.as_ref().is_none_or(|id| {
                    self.calls
                        .get(at)
                        .is_some_and(|p| p.call.id.is_empty() || p.call.id == *id)
                }) =>
            {
                at
            }
            _ => {
                self.calls.push(Partial {
                    index,
                    call: ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    },
                });
                self.calls.len() - 1
            }
        };
        let Some(partial) = self.calls.get_mut(at) else {
            return;
        };
        let call = &mut partial.call;
        if let Some(id) = id {
            call.id = id;
        }
        if let Some(name) = delta.name.filter(|n| !n.is_empty()) {
            // Most servers send the name once; some repeat it on every delta; a few split it.
            if call.name != name {
                call.name.push_str(&name);
            }
        }
        if let Some(arguments) = delta.arguments {
            call.arguments.push_str(&arguments);
        }
    }

    /// Whether no delta has come.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls, in the order they began; the accumulator is empty afterwards.
    pub fn take(&mut self) -> Vec<ToolCall> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .enumerate()
            .map(|(n, mut partial)| {
                if partial.call.id.is_empty() {
                    partial.call.id = format!("call_{n}");
                }
                partial.call
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;

    fn delta(
        index: Option<u64>,
        id: Option<&str>,
        name: Option<&str>,
        args: &str,
    ) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.map(Into::into),
            name: name.map(Into::into),
            arguments: Some(args.into()),
        }
    }

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn parallel_calls_at_their_own_indices() {
        let mut acc = ToolCallAccumulator::default();
        acc.push(delta(Some(0), Some("a"), Some("end_call"), ""));
        acc.push(delta(Some(1), Some("b"), Some("send_dtmf"), "{\"dig"));
        acc.push(delta(Some(0), None, None, "{}"));
        acc.push(delta(Some(1), None, None, "its\":\"12\"}"));
        assert_eq!(
            acc.take(),
            vec![
                call("a", "end_call", "{}"),
                call("b", "send_dtmf", "{\"digits\":\"12\"}")
            ]
        );
        assert!(acc.is_empty());
    }

    #[test]
    fn a_new_id_at_a_used_index_starts_a_new_call() {
        let mut acc = ToolCallAccumulator::default();
        acc.push(delta(Some(0), Some("a"), Some("lookup"), "{\"q\":"));
        acc.push(delta(Some(0), None, None, "1}"));
        acc.push(delta(Some(0), Some("b"), Some("lookup"), "{\"q\":"));
        acc.push(delta(Some(0), Some("b"), None, "2}"));
        assert_eq!(
            acc.take(),
            vec![
                call("a", "lookup", "{\"q\":1}"),
                call("b", "lookup", "{\"q\":2}")
            ]
        );
    }

    #[test]
    fn a_repeated_name_is_kept_once_and_missing_ids_are_made_up() {
        let mut acc = ToolCallAccumulator::default();
        acc.push(delta(None, None, Some("end_call"), "{"));
        acc.push(delta(None, None, Some("end_call"), "}"));
        assert_eq!(acc.take(), vec![call("call_0", "end_call", "{}")]);
    }

    fn split(text: &str, cuts: &[proptest::sample::Index]) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(chars.len() + 1)).collect();
        at.sort_unstable();
        at.dedup();
        let mut pieces = Vec::new();
        let mut from = 0;
        for cut in at {
            pieces.push(chars[from..cut].iter().collect());
            from = cut;
        }
        pieces.push(chars[from..].iter().collect());
        pieces
    }

    proptest! {
        #[test]
        fn arguments_split_anywhere_reassemble(
            calls in proptest::collection::vec(("[a-z]{1,6}", "\\PC{0,40}"), 1..4),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
            reuse_index in any::<bool>(),
        ) {
            let mut acc = ToolCallAccumulator::default();
            let mut expected = Vec::new();
            for (n, (name, arguments)) in calls.iter().enumerate() {
                let id = format!("id{n}");
                let index = if reuse_index { 0 } else { n as u64 };
                let pieces = split(arguments, &cuts);
                for (k, piece) in pieces.iter().enumerate() {
                    let first = k == 0;
                    acc.push(ToolCallDelta {
                        index: Some(index),
                        id: first.then(|| id.clone()),
                        name: first.then(|| name.clone()),
                        arguments: Some(piece.clone()),
                    });
                }
                expected.push(call(&id, name, arguments));
            }
            prop_assert_eq!(acc.take(), expected);
        }
    }
}
