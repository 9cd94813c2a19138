//! The named strategies a consumer group can be run with, as the controller journals them and
//! the wire names them.
//!
//! It sits below both the controller (which runs the strategies, `controller::assignor`) and
//! the wire translation (which maps the names to and from `weir.v1`), so neither has to reach
//! into the other for a name.
//!
//! Invariant: the serde names (`range`, `round-robin`, `sticky`) are a stored format (the
//! controller's journal and snapshots); renaming a variant breaks existing journals.

use serde::{Deserialize, Serialize};

/// Which assignor a group uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssignorKind {
    Range,
    RoundRobin,
    Sticky,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journaled_names_do_not_change() {
        for (kind, name) in [
            (AssignorKind::Range, "\"range\""),
            (AssignorKind::RoundRobin, "\"round-robin\""),
            (AssignorKind::Sticky, "\"sticky\""),
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), name);
            assert_eq!(serde_json::from_str::<AssignorKind>(name).unwrap(), kind);
        }
    }
}
