//! The official working-day calendar (`WD` in the rules) and the period arithmetic built on
//! it: which days are working days, and when a period started at an instant ends.
//!
//! The calendar of 2021–2026 is embedded from `node/data/holidays.toml`, so a node needs no
//! file at run time; later years arrive as calendar records the Justice Bureau issues and are
//! added with [`Calendar::add_year`]. Storing those records, and knowing which rule runs for
//! how long, belong to other modules.
//!
//! Instants are `DateTime<FixedOffset>` throughout. [`from_unix_millis`] and [`parse_instant`]
//! bring them in, [`format_instant`] writes them, and every day boundary is taken in Beijing
//! time (UTC+8) whatever offset an instant carries.
//!
//! A day in a year without a published notice is answered Monday to Friday and flagged
//! provisional, never a silent guess; [`Unlisted`] says why the year is missing.
//!
//! The embedded years are official: a calendar record may publish any other year, and
//! re-issue it, but never change an embedded one ([`Calendar::publish`]).

mod instant;
mod period;
mod year;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::LazyLock;

use chrono::{Datelike, NaiveDate, Weekday};

pub use instant::{
    BEIJING, PLAUSIBLE_MS, format_instant, format_millis, from_unix_millis, parse_instant,
    plausible_instant,
};
pub use period::{
    Due, Period, PeriodPolicies, PeriodPolicy, format_delay, format_end_of_day, parse_delay,
    parse_end_of_day,
};
pub use year::{Holiday, YearCalendar};

/// The official holiday arrangements, one State Council notice per year.
const HOLIDAYS_TOML: &str = include_str!("../../data/holidays.toml");

/// Parsed once; `holidays_file_is_well_formed` in the tests proves it parses.
static OFFICIAL: LazyLock<Calendar> = LazyLock::new(|| {
    Calendar::from_holiday_file(HOLIDAYS_TOML).expect("the embedded holidays.toml is valid")
});

/// Everything that can go wrong reading calendars, periods and instants. Each variant
/// carries the offending input, shortened if long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("{input:?} is not a date (expected YYYY-MM-DD)")]
    BadDate { input: String },
    #[error("{input:?} is not a date range (expected YYYY-MM-DD..YYYY-MM-DD, first <= last)")]
    BadRange { input: String },
    #[error("{date} is outside the {year} calendar")]
    DateOutsideYear { date: NaiveDate, year: i32 },
    #[error("make-up working day {date} is a {weekday}, not a Saturday or Sunday")]
    MakeUpOnWeekday { date: NaiveDate, weekday: Weekday },
    #[error("{date} is listed both as a day off and as a make-up working day")]
    OffAndMakeUp { date: NaiveDate },
    #[error("{date} is listed twice")]
    ListedTwice { date: NaiveDate },
    #[error("the holiday file lists {year} more than once")]
    DuplicateYear { year: i32 },
    #[error("the holiday file is malformed: {detail}")]
    BadHolidayFile { detail: String },
    #[error("{input:?} is not a period ({reason}); expected e.g. 5wd, 24h, at-once, same-day")]
    BadPeriod { input: String, reason: &'static str },
    #[error("{input:?} is not a delay ({reason}); expected e.g. 2h, 90m, 1h30m")]
    BadDelay { input: String, reason: &'static str },
    #[error("{input:?} is not an end of day ({reason}); expected e.g. 17:30 or 24:00")]
    BadEndOfDay { input: String, reason: &'static str },
    #[error("{input:?} is not an instant (expected RFC 3339, or YYYY-MM-DD HH:MM in Beijing time)")]
    BadInstant { input: String },
    #[error(
        "时间超出合理范围 {millis} ({shown}) is outside the plausible range 2000-01-01 00:00 to 2100-01-01 00:00 Beijing time"
    )]
    Implausible { millis: i64, shown: String },
    #[error("counting from {start} runs past the dates this program can represent")]
    OutOfRange { start: String },
    #[error(
        "{year}年工作日历已是官方日历（依国务院通知，内置于本程序） the {year} calendar is already official (embedded from its State Council notice); a calendar record may only repeat its dates, and this one differs on {date}"
    )]
    OfficialYear { year: i32, date: NaiveDate },
    #[error("{due} is past the {limit} limit of its rule, which ends at {limit_due}")]
    BeyondLimit {
        due: String,
        limit: Period,
        limit_due: String,
    },
}

/// What kind of day a date is, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayStatus {
    /// Monday to Friday, not in a holiday block.
    Workday,
    /// A Saturday or Sunday declared a working day (调休上班).
    MakeUpWorkday,
    /// An ordinary Saturday or Sunday.
    Weekend,
    /// A day off in a holiday block, including weekdays swapped into it (放假调休).
    Holiday,
}

/// Why the calendar does not hold a year, so that an answer about it is provisional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlisted {
    /// A year after the first one held (typically after the last): its notice may not be out
    /// yet, and a calendar record will publish it.
    NotYetPublished,
    /// A year before the first official year this build embeds (`first` to `last`): its
    /// notice came out long ago, but this calendar does not carry it.
    BeforeRange { first: i32, last: i32 },
}

impl Unlisted {
    /// Of two reasons found along one count, the one to tell: a year before the range is
    /// the stranger answer, so it wins.
    fn worse(a: Option<Unlisted>, b: Option<Unlisted>) -> Option<Unlisted> {
        match (a, b) {
            (Some(before @ Unlisted::BeforeRange { .. }), _) => Some(before),
            (_, Some(before @ Unlisted::BeforeRange { .. })) => Some(before),
            (a, b) => a.or(b),
        }
    }
}

/// The note shown beside a provisional answer.
impl fmt::Display for Unlisted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unlisted::NotYetPublished => {
                f.write_str("暂定：该年度日历尚未发布 provisional: calendar year not yet published")
            }
            Unlisted::BeforeRange { first, last } => write!(
                f,
                "暂定：超出日历范围（内置{first}–{last}年） provisional: outside the calendar's range ({first}–{last} embedded)"
            ),
        }
    }
}

/// The calendar's answer for one date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayKind {
    pub status: DayStatus,
    /// The date's year is not in the calendar: `status` assumes Monday to Friday.
    pub provisional: bool,
    /// Why, when `provisional`; `None` otherwise.
    pub unlisted: Option<Unlisted>,
}

impl DayKind {
    pub fn is_working(self) -> bool {
        matches!(self.status, DayStatus::Workday | DayStatus::MakeUpWorkday)
    }
}

/// The working-day calendar: the published years, each from one notice.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    years: BTreeMap<i32, YearCalendar>,
    /// The years read from a holiday file (the State Council notices embedded in this build),
    /// which no calendar record may replace.
    official: BTreeSet<i32>,
}

impl Calendar {
    /// The calendar of every year embedded in this build (2021–2026).
    pub fn official() -> Calendar {
        OFFICIAL.clone()
    }

    /// Reads a calendar in the layout of `node/data/holidays.toml`.
    pub fn from_holiday_file(text: &str) -> Result<Calendar, CalendarError> {
        let mut calendar = Calendar::default();
        for year in year::parse_holiday_file(text)? {
            if calendar.years.contains_key(&year.year()) {
                return Err(CalendarError::DuplicateYear { year: year.year() });
            }
            calendar.official.insert(year.year());
            calendar.years.insert(year.year(), year);
        }
        Ok(calendar)
    }

    /// This calendar with `year` added as [`Calendar::add_year`] adds it.
    pub fn with_year(mut self, year: YearCalendar) -> Calendar {
        self.add_year(year);
        self
    }

    /// Adds a newly published year, as [`Calendar::publish`] does; a year that may not be
    /// published is dropped with a warning, and `None` returned.
    pub fn add_year(&mut self, year: YearCalendar) -> Option<YearCalendar> {
        let (number, source) = (year.year(), year.source().to_owned());
        self.publish(year).unwrap_or_else(|error| {
            tracing::warn!(year = number, source = %source, %error, "calendar year not added");
            None
        })
    }

    /// Adds a year published as a calendar record. A year published before is replaced, since
    /// a re-issued record corrects the earlier one; the replaced year is returned. An official
    /// year is never replaced: a record that repeats its dates is harmless and ignored, one
    /// that differs is refused ([`Calendar::check_publishable`]). Otherwise a single record
    /// could move every deadline of a year whose notice is known.
    pub fn publish(&mut self, year: YearCalendar) -> Result<Option<YearCalendar>, CalendarError> {
        self.check_publishable(&year)?;
        let number = year.year();
        if self.official.contains(&number) {
            return Ok(None);
        }
        let source = year.source().to_owned();
        let replaced = self.years.insert(number, year);
        tracing::debug!(
            year = number,
            source = %source,
            replaced = replaced.is_some(),
            "working-day calendar year added"
        );
        Ok(replaced)
    }

    /// Refuses `year` if it would change an official year of this calendar.
    pub fn check_publishable(&self, year: &YearCalendar) -> Result<(), CalendarError> {
        if !self.official.contains(&year.year()) {
            return Ok(());
        }
        match self
            .years
            .get(&year.year())
            .and_then(|o| o.first_difference(year))
        {
            None => Ok(()),
            Some(date) => Err(CalendarError::OfficialYear {
                year: year.year(),
                date,
            }),
        }
    }

    pub fn is_published(&self, year: i32) -> bool {
        self.years.contains_key(&year)
    }

    /// Whether `year` comes from the embedded notices rather than a calendar record.
    pub fn is_official(&self, year: i32) -> bool {
        self.official.contains(&year)
    }

    /// Why `year` is not in the calendar, or `None` if it is.
    pub fn unlisted(&self, year: i32) -> Option<Unlisted> {
        if self.is_published(year) {
            return None;
        }
        match (self.official.first(), self.official.last()) {
            (Some(&first), Some(&last)) if year < first => {
                Some(Unlisted::BeforeRange { first, last })
            }
            _ => Some(Unlisted::NotYetPublished),
        }
    }

    pub fn years(&self) -> impl Iterator<Item = &YearCalendar> {
        self.years.values()
    }

    /// Whether `date` is a working day (WD), and why.
    pub fn is_working_day(&self, date: NaiveDate) -> DayKind {
        if let Some(status) = self.notices_covering(date).find_map(|y| y.listing(date)) {
            return DayKind {
                status,
                provisional: false,
                unlisted: None,
            };
        }
        let status = match date.weekday() {
            Weekday::Sat | Weekday::Sun => DayStatus::Weekend,
            _ => DayStatus::Workday,
        };
        let unlisted = self.unlisted(date.year());
        DayKind {
            status,
            provisional: unlisted.is_some(),
            unlisted,
        }
    }

    /// The named holiday block `date` lies in, if the notice named one.
    pub fn holiday(&self, date: NaiveDate) -> Option<&Holiday> {
        self.notices_covering(date)
            .flat_map(|y| y.holidays())
            .find(|h| h.first <= date && date <= h.last)
    }

    /// The notices that may mention `date`: the next year's first, because a notice may reach
    /// back into the last days of December before it (the 2023 notice gave 2022-12-31 off).
    fn notices_covering(&self, date: NaiveDate) -> impl Iterator<Item = &YearCalendar> {
        [date.year() + 1, date.year()]
            .into_iter()
            .filter_map(|y| self.years.get(&y))
    }
}

/// Keeps error messages short when the input came from a peer or a paste.
fn shorten(input: &str) -> String {
    const MAX_CHARS: usize = 64;
    if input.chars().count() <= MAX_CHARS {
        input.to_owned()
    } else {
        input.chars().take(MAX_CHARS).chain("…".chars()).collect()
    }
}
