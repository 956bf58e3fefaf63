//! Periods ("3 WD", "24 hours", "at once") and the due times they give from an event,
//! extensions of a due time and the limits rules put on them. Which rule uses which period is
//! left to the obligation logic.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeDelta, TimeZone};

use super::{BEIJING, Calendar, CalendarError, format_instant, shorten};

/// How long an obligation runs from its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// "At once" (T-2, J-3): the organisation's configured delay, 2 hours by default.
    AtOnce,
    /// Until the end of the event's own calendar day, working day or not (S-2: shared the
    /// same day the information is formed).
    SameDay,
    /// Continuous hours, nights and holidays included (T-1 urgent: 24 hours).
    Hours(u16),
    /// N working days: the event's own day is not counted and the period ends at the end of
    /// the N-th working day after it (T-1: 3 WD, A-1: 5 WD, A-2: 3 WD).
    WorkingDays(u16),
}

/// An organisation's settings for turning periods into due times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodPolicy {
    /// What "at once" gives; the mission's default is 2 hours.
    pub at_once: TimeDelta,
    /// When the organisation's day ends, in Beijing time. [`PeriodPolicy::MIDNIGHT`] (the
    /// default) means 24:00.
    pub end_of_day: NaiveTime,
}

impl PeriodPolicy {
    /// 24:00, the end of a calendar day. `NaiveTime` has no 24:00, and a day that ends at its
    /// own start makes no sense, so 00:00 stands for it.
    pub const MIDNIGHT: NaiveTime = NaiveTime::MIN;

    /// The instant `day` ends for this organisation.
    fn end_of(&self, day: NaiveDate) -> Option<DateTime<FixedOffset>> {
        let local = if self.end_of_day == Self::MIDNIGHT {
            day.succ_opt()?.and_time(NaiveTime::MIN)
        } else {
            day.and_time(self.end_of_day)
        };
        BEIJING.from_local_datetime(&local).single()
    }
}

impl Default for PeriodPolicy {
    fn default() -> Self {
        Self {
            at_once: TimeDelta::hours(2),
            end_of_day: Self::MIDNIGHT,
        }
    }
}

/// When an obligation falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// In Beijing time; 24:00 of a day is 00:00 of the next.
    pub at: DateTime<FixedOffset>,
    /// Some day the count relied on lies in a year whose calendar is not published, so
    /// Monday to Friday was assumed for it and the time may move once it is.
    pub provisional: bool,
}

impl fmt::Display for Due {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_instant(self.at))?;
        if self.provisional {
            f.write_str(" (provisional: calendar year not yet published)")?;
        }
        Ok(())
    }
}

impl Calendar {
    /// When a period started at `from` ends.
    ///
    /// Only working-day periods consult the calendar and so can be provisional; hours and "at
    /// once" run continuously. A same-day period ends at the organisation's end of day, or at
    /// 24:00 when the event came after that, since the day is not over until midnight.
    pub fn due(
        &self,
        from: DateTime<FixedOffset>,
        period: Period,
        policy: &PeriodPolicy,
    ) -> Result<Due, CalendarError> {
        let out_of_range = || CalendarError::OutOfRange {
            start: format_instant(from),
        };
        let continuous = |delay: TimeDelta| {
            let at = from.checked_add_signed(delay).ok_or_else(out_of_range)?;
            Ok(Due {
                at: at.with_timezone(&BEIJING),
                provisional: false,
            })
        };

        match period {
            Period::AtOnce => continuous(policy.at_once),
            Period::Hours(hours) => continuous(TimeDelta::hours(hours.into())),
            Period::SameDay => {
                let day = from.with_timezone(&BEIJING).date_naive();
                let mut at = policy.end_of(day).ok_or_else(out_of_range)?;
                if at <= from {
                    at = PeriodPolicy::default()
                        .end_of(day)
                        .ok_or_else(out_of_range)?;
                }
                Ok(Due {
                    at,
                    provisional: false,
                })
            }
            Period::WorkingDays(count) => {
                let event_day = from.with_timezone(&BEIJING).date_naive();
                let (day, provisional) = self.nth_working_day_after(event_day, count)?;
                let at = policy.end_of(day).ok_or_else(out_of_range)?;
                Ok(Due { at, provisional })
            }
        }
    }

    /// Extends a due time by `extra_working_days`, counted like a period whose event is the
    /// original due time: the day the original period ended is not counted (S-2, A-3).
    pub fn extend(
        &self,
        original: &Due,
        extra_working_days: u16,
        policy: &PeriodPolicy,
    ) -> Result<Due, CalendarError> {
        let out_of_range = || CalendarError::OutOfRange {
            start: format_instant(original.at),
        };
        let (day, provisional) =
            self.nth_working_day_after(day_ended_by(original.at), extra_working_days)?;
        let at = policy.end_of(day).ok_or_else(out_of_range)?;
        Ok(Due {
            at,
            provisional: original.provisional || provisional,
        })
    }

    /// Checks an extended due time against the limit its rule sets, counted from the event
    /// (S-2: at most 15 WD from the day the information was formed). Returns the limit's own
    /// due time, whose `provisional` says whether the check itself may change.
    pub fn check_limit(
        &self,
        from: DateTime<FixedOffset>,
        limit: Period,
        extended: &Due,
        policy: &PeriodPolicy,
    ) -> Result<Due, CalendarError> {
        let bound = self.due(from, limit, policy)?;
        if extended.at > bound.at {
            return Err(CalendarError::BeyondLimit {
                due: format_instant(extended.at),
                limit,
                limit_due: format_instant(bound.at),
            });
        }
        Ok(bound)
    }

    /// The `count`-th working day after `after` (which is not counted), and whether any day
    /// looked at on the way lies in an unpublished year. A skipped weekend there counts too: it
    /// might turn out to be a make-up working day.
    fn nth_working_day_after(
        &self,
        after: NaiveDate,
        count: u16,
    ) -> Result<(NaiveDate, bool), CalendarError> {
        let mut day = after;
        let mut provisional = false;
        let mut counted = 0;
        while counted < count {
            day = day.succ_opt().ok_or_else(|| CalendarError::OutOfRange {
                start: after.format("%Y-%m-%d").to_string(),
            })?;
            let kind = self.is_working_day(day);
            provisional |= kind.provisional;
            if kind.is_working() {
                counted += 1;
            }
        }
        Ok((day, provisional))
    }
}

/// The Beijing calendar day a due time closes. Midnight closes the day before it, matching
/// how [`format_instant`] writes it as 24:00.
fn day_ended_by(at: DateTime<FixedOffset>) -> NaiveDate {
    let local = at.with_timezone(&BEIJING);
    let day = local.date_naive();
    if local.time() == NaiveTime::MIN {
        day.pred_opt().unwrap_or(day)
    } else {
        day
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::AtOnce => f.write_str("at-once"),
            Period::SameDay => f.write_str("same-day"),
            Period::Hours(hours) => write!(f, "{hours}h"),
            Period::WorkingDays(days) => write!(f, "{days}wd"),
        }
    }
}

/// Reads the form [`Period`]'s `Display` writes: `5wd`, `24h`, `at-once`, `same-day`
/// (case and surrounding spaces ignored).
impl FromStr for Period {
    type Err = CalendarError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |reason| CalendarError::BadPeriod {
            input: shorten(input),
            reason,
        };
        let text = input.trim().to_ascii_lowercase();
        match text.as_str() {
            "at-once" => return Ok(Period::AtOnce),
            "same-day" => return Ok(Period::SameDay),
            _ => {}
        }

        let (count, unit): (&str, fn(u16) -> Period) = if let Some(count) = text.strip_suffix("wd")
        {
            (count, Period::WorkingDays)
        } else if let Some(count) = text.strip_suffix('h') {
            (count, Period::Hours)
        } else {
            return Err(bad("expected a count with wd or h, at-once or same-day"));
        };
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the count must be a whole number"));
        }
        match count.parse::<u16>() {
            Ok(0) => Err(bad("the count must be at least 1")),
            Ok(count) => Ok(unit(count)),
            Err(_) => Err(bad("the count is too large (at most 65535)")),
        }
    }
}
