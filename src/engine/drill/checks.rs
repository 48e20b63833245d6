//! Verifying a restored scratch database: every table in the manifest with
//! the exact row count taken in the backup's snapshot, every role the
//! globals dump names, and the drill's SQL checks.

use serde::Serialize;

pub use crate::base::values::Expect;

/// One verification and its result.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CheckResult {
    /// `rows`, `role` or `sql`.
    pub kind: String,
    /// What is checked: a table name or the SQL check's name.
    pub name: String,
    /// What the backup's manifest (or the check's `expect`) says.
    pub expected: String,
    /// What the restored database answered (None: it could not answer).
    pub got: Option<String>,
    /// Whether `got` meets `expected`.
    pub ok: bool,
}

/// A SQL check's result: what it answered (or its error) against its
/// expectation.
pub fn judged(
    c: &crate::config::SqlCheck,
    expect: &Expect,
    got: std::result::Result<Option<String>, String>,
) -> CheckResult {
    let (got, ok) = match got {
        Ok(v) => {
            let ok = expect.holds(v.as_deref());
            (v, ok)
        }
        Err(e) => (Some(format!("error: {e}")), false),
    };
    CheckResult {
        kind: "sql".into(),
        name: c.sql.clone(),
        expected: expect.to_string(),
        got,
        ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons() {
        let e = Expect::parse(">= 1").unwrap();
        assert!(e.holds(Some("3")) && e.holds(Some("1")) && !e.holds(Some("0")) && !e.holds(None));
        assert!(Expect::parse("= 42").unwrap().holds(Some("42")));
        assert!(Expect::parse("== 'paid'").unwrap().holds(Some("paid")));
        assert!(Expect::parse("paid").unwrap().holds(Some("paid")));
        assert!(!Expect::parse("paid").unwrap().holds(Some("failed")));
        assert!(Expect::parse("!= 0").unwrap().holds(Some("7")));
        assert!(Expect::parse("< 5").unwrap().holds(Some("4.5")));
        assert!(Expect::parse(">= x").is_err());
        assert!(Expect::parse("").is_err());
    }
}
