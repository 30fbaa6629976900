//! The organization presence catalog: presence definition id → system presence and label.
//!
//! Built from `GET /api/v2/presence/definitions` (or the legacy `/api/v2/presencedefinitions`);
//! events carry the definition id, and we store the label as of the time of the event
//! (protocol reference §5). Unknown ids fall back to the system presence's own label.

use std::collections::HashMap;

use crate::domain::normalize_system_presence;
use crate::protocol::PresenceDefinition;

/// One org presence: its system presence and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEntry {
    /// Normalized system presence (`MEAL`).
    pub system: String,
    /// Label in the preferred locale (`Lunch`).
    pub label: String,
}

/// Immutable map from presence definition id to [`PresenceEntry`]; shared read-only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PresenceCatalog {
    by_id: HashMap<String, PresenceEntry>,
}

/// Locales tried in order for a definition's label.
const PREFERRED_LOCALES: [&str; 3] = ["en_US", "en", "en_GB"];

impl PresenceCatalog {
    /// Builds the catalog; deactivated definitions are kept (old events may still name them).
    pub fn from_definitions(definitions: &[PresenceDefinition]) -> Self {
        let mut by_id = HashMap::new();
        for def in definitions {
            let system = def
                .system_presence
                .as_deref()
                .map(normalize_system_presence)
                .unwrap_or_default();
            let label = def
                .language_labels
                .as_ref()
                .and_then(|labels| {
                    PREFERRED_LOCALES
                        .iter()
                        .find_map(|l| labels.get(*l))
                        .or_else(|| labels.values().next())
                        .cloned()
                })
                .unwrap_or_else(|| system_label(&system));
            by_id.insert(def.id.to_ascii_lowercase(), PresenceEntry { system, label });
        }
        PresenceCatalog { by_id }
    }

    /// Number of definitions known.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// True when the catalog knows this definition id (any case).
    pub fn knows(&self, definition_id: &str) -> bool {
        self.by_id.contains_key(&definition_id.to_ascii_lowercase())
    }

    /// The label of a definition id, falling back to the system presence's label.
    pub fn label(&self, definition_id: Option<&str>, system: &str) -> String {
        definition_id
            .and_then(|id| self.by_id.get(&id.to_ascii_lowercase()))
            .map(|e| e.label.clone())
            .unwrap_or_else(|| system_label(system))
    }
}

/// `ON_QUEUE` → `On Queue`: the label Genesys shows for a system presence.
pub fn system_label(system: &str) -> String {
    system
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_fallback() {
        let defs: Vec<PresenceDefinition> = serde_json::from_str(
            r#"[{"id":"AAA","languageLabels":{"en_US":"Lunch"},"systemPresence":"Meal","deactivated":false,"type":"User"}]"#,
        )
        .unwrap();
        let catalog = PresenceCatalog::from_definitions(&defs);
        assert_eq!(catalog.label(Some("aaa"), "MEAL"), "Lunch");
        assert_eq!(catalog.label(Some("unknown"), "ON_QUEUE"), "On Queue");
        assert_eq!(catalog.label(None, "AVAILABLE"), "Available");
    }
}
