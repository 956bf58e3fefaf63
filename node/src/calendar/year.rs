//! One published year of the calendar: the days off and make-up working days of one State
//! Council notice, validated, whether it comes from the embedded data file or from a calendar
//! record the Justice Bureau issues at run time.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::Deserialize;

use super::{CalendarError, DayStatus, shorten};

/// The first day of December, in the year before a notice's own year, that the notice may
/// still cover. A New Year's Day block may begin before 1 January: the 2023 notice gave
/// 2022-12-31 off, and the 2012 notice made 2011-12-31 a make-up working day. A week is
/// enough for any such block and still catches a record filed under the wrong year.
const EARLIEST_DAY_OF_PREVIOUS_DECEMBER: u32 = 25;

/// A named block of consecutive days off, as the notice announces it (放假调休).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holiday {
    pub first: NaiveDate,
    pub last: NaiveDate,
    /// The Chinese name, as in the notice (e.g. 国庆节).
    pub name: String,
    pub name_en: String,
}

/// The days off and make-up working days of one year's notice.
///
/// Invariants, checked on construction: every date lies in `year` (or in the last week of the
/// December before it), every make-up day is a Saturday or Sunday, and no date is both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YearCalendar {
    year: i32,
    off_days: BTreeSet<NaiveDate>,
    make_up_days: BTreeSet<NaiveDate>,
    holidays: Vec<Holiday>,
    source: String,
}

impl YearCalendar {
    /// Builds a year from the dates of a calendar record ("YYYY-MM-DD" each). The record
    /// carries no holiday names, so [`YearCalendar::holidays`] stays empty.
    pub fn from_dates<S: AsRef<str>>(
        year: i32,
        off_days: &[S],
        make_up_days: &[S],
    ) -> Result<Self, CalendarError> {
        let off = off_days
            .iter()
            .map(|d| parse_date(d.as_ref()))
            .collect::<Result<_, _>>()?;
        let make_up = make_up_days
            .iter()
            .map(|d| parse_date(d.as_ref()))
            .collect::<Result<_, _>>()?;
        Self::validated(year, off, make_up, Vec::new())
    }

    /// Names the notice the dates come from.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn off_days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.off_days.iter().copied()
    }

    pub fn make_up_days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.make_up_days.iter().copied()
    }

    /// The named holiday blocks; empty for a year built from bare dates.
    pub fn holidays(&self) -> &[Holiday] {
        &self.holidays
    }

    /// The earliest date this notice and `other` list differently (off in one and not the
    /// other, or a make-up day in one and not the other); `None` when they agree date for
    /// date. Holiday names and sources are not compared: a calendar record carries neither.
    pub fn first_difference(&self, other: &YearCalendar) -> Option<NaiveDate> {
        let off = self.off_days.symmetric_difference(&other.off_days);
        let make_up = self.make_up_days.symmetric_difference(&other.make_up_days);
        off.chain(make_up).min().copied()
    }

    /// What this notice says about `date`, if it mentions it at all.
    pub(super) fn listing(&self, date: NaiveDate) -> Option<DayStatus> {
        if self.make_up_days.contains(&date) {
            Some(DayStatus::MakeUpWorkday)
        } else if self.off_days.contains(&date) {
            Some(DayStatus::Holiday)
        } else {
            None
        }
    }

    fn validated(
        year: i32,
        off: Vec<NaiveDate>,
        make_up: Vec<NaiveDate>,
        holidays: Vec<Holiday>,
    ) -> Result<Self, CalendarError> {
        if let Some(&date) = off
            .iter()
            .chain(&make_up)
            .find(|d| !in_notice_window(year, **d))
        {
            return Err(CalendarError::DateOutsideYear { date, year });
        }
        if let Some(&date) = make_up.iter().find(|d| !is_weekend(**d)) {
            return Err(CalendarError::MakeUpOnWeekday {
                date,
                weekday: date.weekday(),
            });
        }
        // A date listed twice is a slip in the notice's transcription, not a second holiday.
        for dates in [&off, &make_up] {
            let mut seen = BTreeSet::new();
            if let Some(&date) = dates.iter().find(|d| !seen.insert(**d)) {
                return Err(CalendarError::ListedTwice { date });
            }
        }
        let off_days: BTreeSet<_> = off.into_iter().collect();
        if let Some(&date) = make_up.iter().find(|d| off_days.contains(d)) {
            return Err(CalendarError::OffAndMakeUp { date });
        }

        Ok(Self {
            year,
            off_days,
            make_up_days: make_up.into_iter().collect(),
            holidays,
            source: String::new(),
        })
    }
}

/// The layout of `node/data/holidays.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayFile {
    year: Vec<NoticeEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoticeEntry {
    year: i32,
    notice: String,
    url: String,
    off: Vec<OffEntry>,
    make_up: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OffEntry {
    /// "YYYY-MM-DD..YYYY-MM-DD", both ends included, or a single "YYYY-MM-DD".
    days: String,
    name: String,
    name_en: String,
}

/// Reads every year of a holiday file in the layout of `node/data/holidays.toml`.
pub(super) fn parse_holiday_file(text: &str) -> Result<Vec<YearCalendar>, CalendarError> {
    let file: HolidayFile = toml::from_str(text).map_err(|e| CalendarError::BadHolidayFile {
        detail: e.message().to_owned(),
    })?;
    file.year.into_iter().map(year_from_entry).collect()
}

fn year_from_entry(entry: NoticeEntry) -> Result<YearCalendar, CalendarError> {
    let mut holidays = Vec::with_capacity(entry.off.len());
    let mut off = Vec::new();
    for block in entry.off {
        let (first, last) = parse_range(&block.days)?;
        // Checked before expanding, so a mistyped range cannot make us walk millennia.
        for date in [first, last] {
            if !in_notice_window(entry.year, date) {
                return Err(CalendarError::DateOutsideYear {
                    date,
                    year: entry.year,
                });
            }
        }
        off.extend(first.iter_days().take_while(|d| *d <= last));
        holidays.push(Holiday {
            first,
            last,
            name: block.name,
            name_en: block.name_en,
        });
    }
    let make_up = entry
        .make_up
        .iter()
        .map(|d| parse_date(d))
        .collect::<Result<_, _>>()?;

    let year = YearCalendar::validated(entry.year, off, make_up, holidays)?;
    Ok(year.with_source(format!("{} {}", entry.notice, entry.url)))
}

pub(super) fn parse_date(input: &str) -> Result<NaiveDate, CalendarError> {
    NaiveDate::parse_from_str(input.trim(), "%Y-%m-%d").map_err(|_| CalendarError::BadDate {
        input: shorten(input),
    })
}

fn parse_range(input: &str) -> Result<(NaiveDate, NaiveDate), CalendarError> {
    let bad = || CalendarError::BadRange {
        input: shorten(input),
    };
    let (first, last) = match input.split_once("..") {
        Some((first, last)) => (parse_date(first), parse_date(last)),
        None => (parse_date(input), parse_date(input)),
    };
    let (first, last) = (first.map_err(|_| bad())?, last.map_err(|_| bad())?);
    if first > last {
        return Err(bad());
    }
    Ok((first, last))
}

fn in_notice_window(year: i32, date: NaiveDate) -> bool {
    date.year() == year
        || (Some(date.year()) == year.checked_sub(1)
            && date.month() == 12
            && date.day() >= EARLIEST_DAY_OF_PREVIOUS_DECEMBER)
}

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}
