//! Closed sets stored and shown by name (run status, alert and delivery
//! states, drill outcomes): one table per set gives `as_str` and `Display`,
//! so the names are written once besides the serde/sqlx renames, which a
//! unit test holds to the same spelling.

/// `as_str` and `Display` for `$t` from its variant → name table.
macro_rules! names {
    ($t:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $t {
            /// The name as stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    /// The stored name (serde and sqlx renames) is the one `as_str` gives.
    #[test]
    fn serde_and_as_str_agree() {
        use crate::engine::drill::DrillOutcome;
        use crate::services::alerts::{AlertState, DeliveryState};
        use crate::services::state::RunStatus;
        fn check<T: serde::Serialize + std::fmt::Display>(all: &[T]) {
            for v in all {
                assert_eq!(serde_json::to_value(v).unwrap(), v.to_string());
            }
        }
        check(&[
            AlertState::Pending,
            AlertState::Firing,
            AlertState::Resolved,
        ]);
        check(&[
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
            DeliveryState::Expired,
        ]);
        check(&[
            DrillOutcome::Running,
            DrillOutcome::Passed,
            DrillOutcome::OverRto,
            DrillOutcome::Failed,
            DrillOutcome::Interrupted,
        ]);
        check(&[
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Interrupted,
            RunStatus::Skipped,
        ]);
    }
}
