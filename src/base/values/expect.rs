//! What a drill's SQL check expects of its query's result.

/// `>= 1`, `> 0`, `= 42` (or `==`), `!= 0`, `< 5`, `<= 5`; anything else is
/// an exact text match. Numbers compare as numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    op: &'static str,
    value: String,
}

impl Expect {
    /// Parse an expectation, or say why it is not one.
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

impl super::FromConfig for Expect {
    fn from_config(text: &str) -> Result<Self, String> {
        Expect::parse(text)
    }
}
