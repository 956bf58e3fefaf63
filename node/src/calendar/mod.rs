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
//! provisional, never a silent guess.

mod instant;
mod period;
mod year;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{Datelike, NaiveDate, Weekday};

pub use instant::{BEIJING, format_instant, from_unix_millis, parse_instant};
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
    #[error("counting from {start} runs past the dates this program can represent")]
    OutOfRange { start: String },
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

/// The calendar's answer for one date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayKind {
    pub status: DayStatus,
    /// The date's year has no published notice: `status` assumes Monday to Friday.
    pub provisional: bool,
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
            calendar.years.insert(year.year(), year);
        }
        Ok(calendar)
    }

    /// This calendar with `year` added, replacing any earlier notice for the same year.
    pub fn with_year(mut self, year: YearCalendar) -> Calendar {
        self.add_year(year);
        self
    }

    /// Adds a newly published year. A year already present is replaced, since a re-issued
    /// record corrects the earlier one; the replaced year is returned.
    pub fn add_year(&mut self, year: YearCalendar) -> Option<YearCalendar> {
        let number = year.year();
        let source = year.source().to_owned();
        let replaced = self.years.insert(number, year);
        tracing::debug!(
            year = number,
            source = %source,
            replaced = replaced.is_some(),
            "working-day calendar year added"
        );
        replaced
    }

    pub fn is_published(&self, year: i32) -> bool {
        self.years.contains_key(&year)
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
            };
        }
        let status = match date.weekday() {
            Weekday::Sat | Weekday::Sun => DayStatus::Weekend,
            _ => DayStatus::Workday,
        };
        DayKind {
            status,
            provisional: !self.is_published(date.year()),
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
