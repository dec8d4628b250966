//! Bounded label values. Model names come from clients and providers, so only the first
//! `max_models` distinct ones become label values; the rest are reported as `other`.

use std::collections::HashSet;

use parking_lot::Mutex;

/// The label value used once the cap is reached.
pub const OTHER: &str = "other";
/// The label value of a request that names no model.
pub const UNKNOWN: &str = "unknown";

pub struct ModelLabels {
    // Touched by the recorder thread when a record is written, and by scrapes never: a plain
    // mutex with no await inside.
    seen: Mutex<HashSet<String, foldhash::fast::RandomState>>,
    max: usize,
}

impl ModelLabels {
    pub fn new(max: usize) -> ModelLabels {
        ModelLabels {
            seen: Mutex::new(HashSet::default()),
            max,
        }
    }

    /// The label value for `model`: itself while there is room, else `other`.
    pub fn label<'a>(&self, model: Option<&'a str>) -> &'a str {
        let Some(model) = model.filter(|m| !m.is_empty()) else {
            return UNKNOWN;
        };
        let mut seen = self.seen.lock();
        if seen.contains(model) {
            return model;
        }
        if seen.len() < self.max {
            seen.insert(model.to_owned());
            return model;
        }
        OTHER
    }
}

/// Record fields an operator may opt in as labels of the request, token and cost counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ExtraLabel {
    KeyId,
    User,
    ConversationId,
}

impl ExtraLabel {
    pub fn name(self) -> &'static str {
        match self {
            ExtraLabel::KeyId => "key_id",
            ExtraLabel::User => "user",
            ExtraLabel::ConversationId => "conversation_id",
        }
    }

    pub fn value_of(self, record: &crate::record::Record) -> Option<&str> {
        match self {
            ExtraLabel::KeyId => record.key_id.as_deref(),
            ExtraLabel::User => record.user.as_deref(),
            ExtraLabel::ConversationId => record.conversation_id.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_distinct_values() {
        let labels = ModelLabels::new(2);
        assert_eq!(labels.label(Some("a")), "a");
        assert_eq!(labels.label(Some("b")), "b");
        assert_eq!(labels.label(Some("c")), OTHER);
        assert_eq!(labels.label(Some("a")), "a");
        assert_eq!(labels.label(None), "unknown");
        let many = ModelLabels::new(200);
        let distinct: HashSet<String> = (0..10_000)
            .map(|i| many.label(Some(&format!("m{i}"))).to_owned())
            .collect();
        assert_eq!(distinct.len(), 201);
    }
}
