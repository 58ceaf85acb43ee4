//! Human durations as GitLab reads them (`timeout`, `start_in`,
//! `expire_in`): the ChronicDuration format.

/// Parses a human duration into whole seconds, as GitLab's ChronicDuration
/// does for `timeout:` and `start_in:`.
///
/// Accepted forms:
/// - a bare number of seconds: `"3600"`, `"90.5"`;
/// - numbers with units, in any order and combination: `"30 minutes"`,
///   `"1 day"`, `"1h 30m"`, `"1h30m"`, `"2.5 hours"`, `"1 week and 2 days"`,
///   `"1 hour, 5 mins"`;
/// - clock form: `"1:30:00"` (h:m:s) and `"5:30"` (m:s).
///
/// Units: s/sec/secs/second(s), m/min/mins/minute(s), h/hr/hrs/hour(s),
/// d/dy/day(s), w/wk/wks/week(s), mo/mos/month(s) (30 days),
/// y/yr/yrs/year(s) (365.25 days). A number without a unit counts seconds.
/// Unlike ChronicDuration, which drops words it does not know, an unknown
/// word makes the whole value invalid (`None`), so typos are reported.
pub fn parse_duration(s: &str) -> Option<u64> {
    let text = s.trim().to_ascii_lowercase();
    if text.is_empty() {
        return None;
    }
    if text.contains(':') {
        return parse_clock(&text);
    }
    let bytes = text.as_bytes();
    let mut total = 0f64;
    let mut pending: Option<f64> = None;
    let mut any = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() || c == b',' {
            i += 1;
        } else if c.is_ascii_digit() || c == b'.' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let n: f64 = text[start..i].parse().ok()?;
            // Two numbers in a row: the first one was seconds.
            if let Some(prev) = pending.replace(n) {
                total += prev;
            }
            any = true;
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let word = &text[start..i];
            if word == "and" {
                continue;
            }
            let unit = unit_seconds(word)?;
            total += pending.take()? * unit;
        } else {
            return None;
        }
    }
    if let Some(rest) = pending {
        total += rest;
    }
    if !any || !total.is_finite() || total < 0.0 || total > u64::MAX as f64 {
        return None;
    }
    Some(total.round() as u64)
}

fn unit_seconds(word: &str) -> Option<f64> {
    const MINUTE: f64 = 60.0;
    const HOUR: f64 = 3600.0;
    const DAY: f64 = 86_400.0;
    Some(match word {
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
        "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
        "d" | "dy" | "day" | "days" => DAY,
        "w" | "wk" | "wks" | "week" | "weeks" => 7.0 * DAY,
        "mo" | "mos" | "month" | "months" => 30.0 * DAY,
        "y" | "yr" | "yrs" | "year" | "years" => 365.25 * DAY,
        _ => return None,
    })
}

/// `h:m:s` or `m:s`.
fn parse_clock(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut total: u64 = 0;
    for p in &parts {
        total = total.checked_mul(60)?.checked_add(p.parse().ok()?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn reads_chronic_duration_forms() {
        assert_eq!(parse_duration("3600"), Some(3600));
        assert_eq!(parse_duration("30 minutes"), Some(1800));
        assert_eq!(parse_duration("1 day"), Some(86_400));
        assert_eq!(parse_duration("1h 30m"), Some(5400));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("2.5 hours"), Some(9000));
        assert_eq!(parse_duration("1 week and 2 days"), Some(9 * 86_400));
        assert_eq!(parse_duration("1 hour, 5 mins"), Some(3900));
        assert_eq!(parse_duration("1 hour 30"), Some(3630));
        assert_eq!(parse_duration("1:30:00"), Some(5400));
        assert_eq!(parse_duration("5:30"), Some(330));
        assert_eq!(parse_duration("1 Month"), Some(30 * 86_400));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "",
            "  ",
            "soon",
            "10 parsecs",
            "h",
            "1..2 h",
            "1::2",
            "-5 minutes",
            "1 h x",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
