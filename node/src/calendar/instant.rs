//! Instants at the calendar's edges: Beijing time, Unix milliseconds (as records store them)
//! and the text forms people type and read, including "24:00" for the end of a day.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike};

use super::{CalendarError, shorten};

/// China Standard Time, UTC+8, with no daylight saving: every deadline in the mechanism is
/// counted in it, whatever offset an instant arrives in.
pub const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

/// The instants a record may state, as Unix milliseconds: from 2000-01-01 00:00 up to, not
/// including, 2100-01-01 00:00, Beijing time — the years a calendar record may publish. The
/// mechanism began in December 2021, so anything outside is a slip (seconds for milliseconds,
/// a clock reset to 1970, `i64::MAX`), and a deadline counted from it would be nonsense or
/// would never come due.
pub const PLAUSIBLE_MS: std::ops::Range<i64> = 946_656_000_000..4_102_416_000_000;

/// The instant `millis` after the Unix epoch, in Beijing time, if it lies in
/// [`PLAUSIBLE_MS`].
pub fn plausible_instant(millis: i64) -> Result<DateTime<FixedOffset>, CalendarError> {
    let at = from_unix_millis(millis).ok();
    match at {
        Some(at) if PLAUSIBLE_MS.contains(&millis) => Ok(at),
        _ => Err(CalendarError::Implausible {
            millis,
            shown: at.map_or_else(|| "no representable instant".to_owned(), format_instant),
        }),
    }
}

/// The instant `millis` after the Unix epoch, in Beijing time.
pub fn from_unix_millis(millis: i64) -> Result<DateTime<FixedOffset>, CalendarError> {
    DateTime::from_timestamp_millis(millis)
        .map(|utc| utc.with_timezone(&BEIJING))
        .ok_or_else(|| CalendarError::BadInstant {
            input: millis.to_string(),
        })
}

/// Reads an instant typed by a person or given on a command line:
///
/// - RFC 3339, e.g. `2026-09-29T14:30:00+08:00` or `2026-09-29T06:30:00Z`;
/// - `YYYY-MM-DD HH:MM`, Beijing time assumed;
/// - `YYYY-MM-DD HH:MM +HH:MM`, the form [`format_instant`] writes.
///
/// `24:00` is accepted in the last two forms and means 00:00 of the following day.
pub fn parse_instant(input: &str) -> Result<DateTime<FixedOffset>, CalendarError> {
    let text = input.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at);
    }
    let bad = || CalendarError::BadInstant {
        input: shorten(input),
    };

    let mut parts = text.split_whitespace();
    let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    let offset = match parts.next() {
        Some(offset) => offset.parse::<FixedOffset>().map_err(|_| bad())?,
        None => BEIJING,
    };
    if parts.next().is_some() {
        return Err(bad());
    }

    let local = local_date_time(date, time).ok_or_else(bad)?;
    offset.from_local_datetime(&local).single().ok_or_else(bad)
}

/// Writes an instant in Beijing time as `YYYY-MM-DD HH:MM +08:00`, seconds added only when
/// present. Midnight is written as `24:00` of the day before, because deadlines end at the
/// end of a day and "2026-10-08 24:00" is what the rules and the offices say.
pub fn format_instant(at: DateTime<FixedOffset>) -> String {
    let local = at.with_timezone(&BEIJING);
    let time = local.time();
    if time == NaiveTime::MIN
        && let Some(day) = local.date_naive().pred_opt()
    {
        return format!("{} 24:00 +08:00", day.format("%Y-%m-%d"));
    }
    let pattern = match (time.second(), time.nanosecond()) {
        (0, 0) => "%Y-%m-%d %H:%M %:z",
        (_, 0) => "%Y-%m-%d %H:%M:%S %:z",
        _ => "%Y-%m-%d %H:%M:%S%.3f %:z",
    };
    local.format(pattern).to_string()
}

/// [`format_instant`] of Unix milliseconds, for messages: an instant outside chrono's range
/// is written as the number it is.
pub fn format_millis(millis: i64) -> String {
    from_unix_millis(millis)
        .map(format_instant)
        .unwrap_or_else(|_| format!("{millis} ms"))
}

fn local_date_time(date: &str, time: &str) -> Option<NaiveDateTime> {
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    if time == "24:00" {
        return Some(date.succ_opt()?.and_time(NaiveTime::MIN));
    }
    let time = NaiveTime::parse_from_str(time, "%H:%M").ok()?;
    Some(date.and_time(time))
}
