//! Verifying a restored scratch database: every table in the manifest with
//! the exact row count taken in the backup's snapshot, every role the
//! globals dump names, and the drill's SQL checks.

use serde::Serialize;

/// `>= 1`, `> 0`, `= 42` (or `==`), `!= 0`, `< 5`, `<= 5`; anything else is
/// an exact text match. Numbers compare as numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    op: &'static str,
    value: String,
}

impl Expect {
    pub fn parse(s: &str) -> Result<Expect, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("expected a comparison like \">= 1\" or a value".into());
        }
        for op in [">=", "<=", "!=", "==", ">", "<", "="] {
            if let Some(rest) = s.strip_prefix(op) {
                let v = rest.trim().trim_matches('\'').to_owned();
                if v.is_empty() {
                    return Err(format!("{s:?}: nothing to compare with after {op}"));
                }
                let op = if op == "==" { "=" } else { op };
                if matches!(op, ">=" | "<=" | ">" | "<") && v.parse::<f64>().is_err() {
                    return Err(format!("{s:?}: {op} needs a number"));
                }
                return Ok(Expect { op, value: v });
            }
        }
        Ok(Expect {
            op: "=",
            value: s.trim_matches('\'').to_owned(),
        })
    }

    /// Does the query's result (first column of the first row, as text) meet it?
    pub fn holds(&self, got: Option<&str>) -> bool {
        let Some(got) = got else { return false };
        let num = |s: &str| s.trim().parse::<f64>().ok();
        match (num(got), num(&self.value)) {
            (Some(a), Some(b)) => match self.op {
                ">=" => a >= b,
                "<=" => a <= b,
                ">" => a > b,
                "<" => a < b,
                "!=" => a != b,
                _ => a == b,
            },
            _ => match self.op {
                "!=" => got != self.value,
                "=" => got == self.value,
                _ => false,
            },
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.op, self.value)
    }
}

/// One verification and its result.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CheckResult {
    /// `rows`, `role` or `sql`.
    pub kind: String,
    pub name: String,
    pub expected: String,
    pub got: Option<String>,
    pub ok: bool,
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
