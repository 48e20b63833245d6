//! A byte rate as the config writes it (`"20MiB/s"`, `"500 KB/s"`), for a
//! repository's `rate_limit`.

/// Bytes per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ByteRate(pub u64);

/// The smallest limit taken: below it a backup of any size never ends.
const MIN: u64 = 64 * 1024;

impl super::FromConfig for ByteRate {
    fn from_config(text: &str) -> Result<Self, String> {
        let expected = "expected a rate such as \"20MiB/s\" or \"500KB/s\"";
        let Some(size) = text.trim().strip_suffix("/s") else {
            return Err(format!("{expected}, got {text:?}"));
        };
        let bytes = size
            .trim()
            .parse::<bytesize::ByteSize>()
            .map_err(|e| format!("{expected}, got {text:?} ({e})"))?
            .as_u64();
        if bytes < MIN {
            return Err(format!(
                "{text:?} is below the smallest limit of 64KiB/s ({expected})"
            ));
        }
        Ok(ByteRate(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::super::FromConfig;
    use super::*;

    #[test]
    fn rates_parse_with_binary_and_decimal_units() {
        assert_eq!(ByteRate::from_config("20MiB/s"), Ok(ByteRate(20 << 20)));
        assert_eq!(ByteRate::from_config("500 KB/s"), Ok(ByteRate(500_000)));
        assert_eq!(ByteRate::from_config(" 1 GiB/s "), Ok(ByteRate(1 << 30)));
        for bad in ["20MiB", "fast/s", "1KiB/s", "", "-5MiB/s"] {
            let e = ByteRate::from_config(bad).unwrap_err();
            assert!(e.contains("expected a rate"), "{bad}: {e}");
        }
    }
}
