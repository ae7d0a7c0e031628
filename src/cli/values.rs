//! Value parsers for flags whose range is checked as they are parsed, so that a bad value is refused with one
//! line naming the flag and exit code 2 before anything is loaded (clap puts the flag's name in front of the
//! message: "invalid value '1.5' for '--threshold <T>': must be between 0 and 1").
//!
//! Flags that take a number are declared with `allow_negative_numbers`, so that `--threshold -0.1` reaches these
//! parsers (and is refused here) instead of being taken for an unknown flag.

/// A score threshold: 0 to 1, both included.
pub fn unit_interval(s: &str) -> Result<f32, String> {
    let v: f32 = number(s)?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err("must be between 0 and 1".into()) }
}

/// An IoU limit: more than 0, at most 1 (0 would drop every overlapping box, whatever the overlap).
pub fn iou(s: &str) -> Result<f32, String> {
    let v: f32 = number(s)?;
    if v > 0.0 && v <= 1.0 { Ok(v) } else { Err("must be more than 0 and at most 1".into()) }
}

/// A count that must be at least 1 (`--every`, `--top-k`).
pub fn at_least_one_u32(s: &str) -> Result<u32, String> {
    let v: i64 = s.trim().parse().map_err(|_| format!("`{s}` is not a whole number"))?;
    u32::try_from(v).ok().filter(|&v| v >= 1).ok_or_else(|| "must be a whole number, 1 or more".into())
}

/// [`at_least_one_u32`] as a `usize`.
pub fn at_least_one_usize(s: &str) -> Result<usize, String> {
    at_least_one_u32(s).map(|v| v as usize)
}

/// A finite number more than 0 (seconds, frames per second).
pub fn positive(s: &str) -> Result<f64, String> {
    let v: f64 = number(s)?;
    if v.is_finite() && v > 0.0 { Ok(v) } else { Err("must be a number more than 0".into()) }
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| format!("`{s}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_with_a_reason() {
        assert_eq!(unit_interval("0.3"), Ok(0.3));
        assert_eq!(unit_interval("0"), Ok(0.0));
        assert_eq!(unit_interval("1"), Ok(1.0));
        assert!(unit_interval("1.5").unwrap_err().contains("between 0 and 1"));
        assert!(unit_interval("-0.1").is_err());
        assert!(unit_interval("NaN").is_err());
        assert!(unit_interval("high").unwrap_err().contains("`high` is not a number"));
        assert_eq!(iou("1"), Ok(1.0));
        assert!(iou("0").is_err() && iou("1.01").is_err() && iou("-0.5").is_err());
        assert_eq!(at_least_one_u32("3"), Ok(3));
        assert!(at_least_one_u32("0").is_err() && at_least_one_u32("-2").is_err() && at_least_one_u32("1.5").is_err());
        assert_eq!(at_least_one_usize("7"), Ok(7));
        assert_eq!(positive("0.5"), Ok(0.5));
        assert!(positive("0").is_err() && positive("-1").is_err() && positive("inf").is_err());
    }
}
