//! Periods ("3 WD", "24 hours", "at once") and the due times they give from an event,
//! extensions of a due time and the limits rules put on them. Which rule uses which period is
//! left to the obligation logic. [`PeriodPolicies`] holds a district's policies, one per
//! organisation that differs from the district's; reading them from configuration is
//! [`crate::config`]'s.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeDelta, TimeZone};

use super::{BEIJING, Calendar, CalendarError, Unlisted, format_instant, shorten};

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

/// Written as the configuration takes it: `at once 2h, end of day 24:00`.
impl fmt::Display for PeriodPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at once {}, end of day {}",
            format_delay(self.at_once),
            format_end_of_day(self.end_of_day)
        )
    }
}

/// The period policies of a district: its default and the organisations that differ from it.
///
/// Every node computes every party's obligations, not only its own, and the hub computes the
/// district's; they agree on a due time only if they hold the same policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodPolicies {
    /// The policy of every organisation not listed in `organisations`.
    pub district: PeriodPolicy,
    /// Organisations with their own policy, by organisation id.
    pub organisations: BTreeMap<String, PeriodPolicy>,
}

impl PeriodPolicies {
    /// The policy that turns `org`'s periods into due times.
    pub fn for_org(&self, org: &str) -> &PeriodPolicy {
        self.organisations.get(org).unwrap_or(&self.district)
    }
}

/// The longest "at once" accepted: T-1's urgent period. A longer delay is no longer "at once",
/// and is more likely minutes written as hours.
const MAX_AT_ONCE: TimeDelta = TimeDelta::hours(24);

/// Reads a delay for "at once": `2h`, `90m` or `1h30m` (case and surrounding spaces
/// ignored), from one minute to 24 hours.
pub fn parse_delay(input: &str) -> Result<TimeDelta, CalendarError> {
    let bad = |reason| CalendarError::BadDelay {
        input: shorten(input),
        reason,
    };
    let text = input.trim().to_ascii_lowercase();
    let (hours, minutes) = match text.split_once('h') {
        Some((hours, "")) => (hours, None),
        Some((hours, rest)) => (
            hours,
            Some(
                rest.strip_suffix('m')
                    .ok_or_else(|| bad("minutes must end in m"))?,
            ),
        ),
        None => match text.strip_suffix('m') {
            Some(minutes) => ("0", Some(minutes)),
            None => return Err(bad("expected hours with h, minutes with m, or both")),
        },
    };
    let number = |digits: &str| -> Result<i64, CalendarError> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("each count must be a whole number"));
        }
        // Anything past 24 hours is refused below; the bound only keeps the sum from
        // overflowing.
        digits
            .parse::<u32>()
            .map(i64::from)
            .map_err(|_| bad("longer than 24 hours"))
    };
    let minutes = number(hours)? * 60 + minutes.map(number).transpose()?.unwrap_or(0);
    let delay = TimeDelta::minutes(minutes);
    if delay < TimeDelta::minutes(1) {
        return Err(bad("must be at least 1 minute"));
    }
    if delay > MAX_AT_ONCE {
        return Err(bad("longer than 24 hours"));
    }
    Ok(delay)
}

/// Writes a delay the way [`parse_delay`] reads it: `2h`, `90m`, `1h30m`.
pub fn format_delay(delay: TimeDelta) -> String {
    let minutes = delay.num_minutes();
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

/// Reads an end of day in Beijing time: `HH:MM` from `00:01` to `24:00`. `24:00` gives
/// [`PeriodPolicy::MIDNIGHT`]; `00:00` is refused, as a day cannot end at its own start.
pub fn parse_end_of_day(input: &str) -> Result<NaiveTime, CalendarError> {
    let bad = |reason| CalendarError::BadEndOfDay {
        input: shorten(input),
        reason,
    };
    let text = input.trim();
    let Some((hours, minutes)) = text.split_once(':') else {
        return Err(bad("expected HH:MM"));
    };
    let digits = |part: &str, widths: std::ops::RangeInclusive<usize>| {
        widths.contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(hours, 1..=2) || !digits(minutes, 2..=2) {
        return Err(bad("expected HH:MM"));
    }
    let (hours, minutes): (u32, u32) = (
        hours.parse().map_err(|_| bad("expected HH:MM"))?,
        minutes.parse().map_err(|_| bad("expected HH:MM"))?,
    );
    match (hours, minutes) {
        (24, 0) => Ok(PeriodPolicy::MIDNIGHT),
        (0, 0) => Err(bad(
            "a day cannot end at its start; write 24:00 for midnight",
        )),
        _ => NaiveTime::from_hms_opt(hours, minutes, 0).ok_or_else(|| bad("no such time of day")),
    }
}

/// Writes an end of day the way [`parse_end_of_day`] reads it; midnight is `24:00`.
pub fn format_end_of_day(end_of_day: NaiveTime) -> String {
    if end_of_day == PeriodPolicy::MIDNIGHT {
        "24:00".to_owned()
    } else {
        end_of_day.format("%H:%M").to_string()
    }
}

/// When an obligation falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// In Beijing time; 24:00 of a day is 00:00 of the next.
    pub at: DateTime<FixedOffset>,
    /// Some day the count relied on lies in a year the calendar does not hold, so Monday to
    /// Friday was assumed for it and the time may be wrong (or move once the year is
    /// published).
    pub provisional: bool,
    /// Why, when `provisional`; `None` otherwise.
    pub unlisted: Option<Unlisted>,
}

impl fmt::Display for Due {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_instant(self.at))?;
        match self.unlisted {
            Some(unlisted) => write!(f, " ({unlisted})"),
            None if self.provisional => write!(f, " ({})", Unlisted::NotYetPublished),
            None => Ok(()),
        }
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
                unlisted: None,
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
                    unlisted: None,
                })
            }
            Period::WorkingDays(count) => {
                let event_day = from.with_timezone(&BEIJING).date_naive();
                let (day, unlisted) = self.nth_working_day_after(event_day, count)?;
                let at = policy.end_of(day).ok_or_else(out_of_range)?;
                Ok(Due {
                    at,
                    provisional: unlisted.is_some(),
                    unlisted,
                })
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
        let (day, unlisted) =
            self.nth_working_day_after(day_ended_by(original.at), extra_working_days)?;
        let at = policy.end_of(day).ok_or_else(out_of_range)?;
        let unlisted = Unlisted::worse(original.unlisted, unlisted);
        Ok(Due {
            at,
            provisional: original.provisional || unlisted.is_some(),
            unlisted,
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

    /// The `count`-th working day after `after` (which is not counted), and why, if any day
    /// looked at on the way lies in a year the calendar does not hold. A skipped weekend there
    /// counts too: it might be a make-up working day.
    fn nth_working_day_after(
        &self,
        after: NaiveDate,
        count: u16,
    ) -> Result<(NaiveDate, Option<Unlisted>), CalendarError> {
        let mut day = after;
        let mut unlisted = None;
        let mut counted = 0;
        while counted < count {
            day = day.succ_opt().ok_or_else(|| CalendarError::OutOfRange {
                start: after.format("%Y-%m-%d").to_string(),
            })?;
            let kind = self.is_working_day(day);
            unlisted = Unlisted::worse(unlisted, kind.unlisted);
            if kind.is_working() {
                counted += 1;
            }
        }
        Ok((day, unlisted))
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
