//! A daily maintenance window (`window = "01:00-05:00"`).

/// `"01:00-05:00"`: a daily window, possibly across midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First minute inside.
    pub start: chrono::NaiveTime,
    /// First minute outside again (before `start`: the window spans midnight).
    pub end: chrono::NaiveTime,
}

impl Window {
    /// Parse `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<Window, String> {
        let bad = || format!("expected \"HH:MM-HH:MM\", e.g. \"01:00-05:00\", got {s:?}");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let t = |x: &str| chrono::NaiveTime::parse_from_str(x.trim(), "%H:%M").map_err(|_| bad());
        let w = Window {
            start: t(a)?,
            end: t(b)?,
        };
        if w.start == w.end {
            return Err(format!("{s:?} is an empty window"));
        }
        Ok(w)
    }

    /// Whether `t` falls inside.
    pub fn contains(&self, t: chrono::NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

impl super::FromConfig for Window {
    fn from_config(text: &str) -> Result<Self, String> {
        Window::parse(text)
    }
}
