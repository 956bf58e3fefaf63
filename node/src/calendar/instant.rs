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

fn local_date_time(date: &str, time: &str) -> Option<NaiveDateTime> {
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    if time == "24:00" {
        return Some(date.succ_opt()?.and_time(NaiveTime::MIN));
    }
    let time = NaiveTime::parse_from_str(time, "%H:%M").ok()?;
    Some(date.and_time(time))
}
