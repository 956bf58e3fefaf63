//! Tests of the calendar: the embedded data against its source, working-day arithmetic
//! across every holiday block of 2021–2026, the scenario's deadlines, and properties of
//! period arithmetic over arbitrary dates.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeDelta, Weekday};
use proptest::prelude::*;

use super::*;

fn at(text: &str) -> DateTime<FixedOffset> {
    parse_instant(text).unwrap()
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn due_text(from: &str, period: Period) -> String {
    let due = Calendar::official()
        .due(at(from), period, &PeriodPolicy::default())
        .unwrap();
    format_instant(due.at)
}

fn policy_ending_at(hour: u32, minute: u32) -> PeriodPolicy {
    PeriodPolicy {
        end_of_day: NaiveTime::from_hms_opt(hour, minute, 0).unwrap(),
        ..PeriodPolicy::default()
    }
}

#[test]
fn holidays_file_is_well_formed() {
    let calendar = Calendar::from_holiday_file(HOLIDAYS_TOML).unwrap();
    let years: Vec<i32> = calendar.years().map(YearCalendar::year).collect();
    assert_eq!(years, vec![2021, 2022, 2023, 2024, 2025, 2026]);
    for year in calendar.years() {
        assert!(
            year.source().contains("国务院办公厅"),
            "{} names no notice",
            year.year()
        );
        assert!(!year.holidays().is_empty());
    }
}

#[test]
fn year_2027_is_unpublished_and_answered_provisionally() {
    let calendar = Calendar::official();
    assert!(!calendar.is_published(2027));

    // 2027-01-01 is a Friday: assumed a working day, though a New Year's holiday is certain.
    let new_year = calendar.is_working_day(date("2027-01-01"));
    assert_eq!(
        new_year,
        DayKind {
            status: DayStatus::Workday,
            provisional: true,
            unlisted: Some(Unlisted::NotYetPublished),
        }
    );
    let saturday = calendar.is_working_day(date("2027-01-02"));
    assert_eq!(
        saturday,
        DayKind {
            status: DayStatus::Weekend,
            provisional: true,
            unlisted: Some(Unlisted::NotYetPublished),
        }
    );
    assert!(calendar.is_working_day(date("2020-12-31")).provisional);
    assert!(!calendar.is_working_day(date("2026-12-31")).provisional);
}

#[test]
fn wd_deadline_reaching_into_2027_is_provisional() {
    let calendar = Calendar::official();
    let policy = PeriodPolicy::default();

    let into_2027 = calendar
        .due(at("2026-12-30 10:00"), Period::WorkingDays(3), &policy)
        .unwrap();
    assert_eq!(format_instant(into_2027.at), "2027-01-04 24:00 +08:00");
    assert!(into_2027.provisional);
    assert_eq!(
        into_2027.to_string(),
        "2027-01-04 24:00 +08:00 (暂定：该年度日历尚未发布 provisional: calendar year not yet published)"
    );

    let within_2026 = calendar
        .due(at("2026-12-29 10:00"), Period::WorkingDays(1), &policy)
        .unwrap();
    assert!(!within_2026.provisional);
}

#[test]
fn hours_and_at_once_are_never_provisional() {
    let calendar = Calendar::official();
    let policy = PeriodPolicy::default();
    for period in [Period::Hours(72), Period::AtOnce, Period::SameDay] {
        let due = calendar
            .due(at("2026-12-31 23:30"), period, &policy)
            .unwrap();
        assert!(!due.provisional, "{period}");
    }
}

#[test]
fn published_2027_record_replaces_the_provisional_answer() {
    // A hypothetical 2027 record, as the Justice Bureau would issue it; not real data.
    let record = YearCalendar::from_dates(2027, &["2027-01-01", "2027-01-02", "2027-01-03"], &[])
        .unwrap()
        .with_source("hypothetical notice for a test");
    let calendar = Calendar::official().with_year(record);

    let due = calendar
        .due(
            at("2026-12-30 10:00"),
            Period::WorkingDays(3),
            &PeriodPolicy::default(),
        )
        .unwrap();
    assert_eq!(format_instant(due.at), "2027-01-05 24:00 +08:00");
    assert!(!due.provisional);
    assert_eq!(
        calendar.is_working_day(date("2027-01-01")),
        DayKind {
            status: DayStatus::Holiday,
            provisional: false,
            unlisted: None,
        }
    );
}

#[test]
fn add_year_returns_the_year_it_replaces() {
    // Hypothetical 2027 records: the first, then a corrected re-issue.
    let mut calendar = Calendar::official();
    let first = YearCalendar::from_dates(2027, &["2027-01-04"], &[])
        .unwrap()
        .with_source("first issue");
    assert_eq!(calendar.add_year(first), None);
    let corrected = YearCalendar::from_dates(2027, &["2027-01-01"], &[]).unwrap();
    let replaced = calendar.add_year(corrected).unwrap();
    assert_eq!((replaced.year(), replaced.source()), (2027, "first issue"));
    assert!(calendar.is_working_day(date("2027-01-04")).is_working());
}

#[test]
fn an_official_year_is_never_replaced_by_a_published_one() {
    // The reviewer's record: 2026 with no days off at all. Every deadline over National Day
    // would have moved.
    let mut calendar = Calendar::official();
    let empty = YearCalendar::from_dates::<&str>(2026, &[], &[]).unwrap();
    assert_eq!(
        calendar.publish(empty.clone()),
        Err(CalendarError::OfficialYear {
            year: 2026,
            date: date("2026-01-01")
        })
    );
    assert_eq!(calendar.add_year(empty), None);
    let national_day = calendar.is_working_day(date("2026-10-01"));
    assert_eq!(national_day.status, DayStatus::Holiday);
    assert_eq!(
        calendar
            .holiday(date("2026-10-01"))
            .map(|h| h.name.as_str()),
        Some("国庆节"),
        "the official notice, with its holiday names, stays"
    );

    let error = calendar
        .check_publishable(&YearCalendar::from_dates(2026, &["2026-10-01"], &[]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("2026") && error.contains("already official"),
        "{error}"
    );
}

#[test]
fn an_official_year_repeated_date_for_date_is_accepted_and_changes_nothing() {
    let official = Calendar::official();
    let same = official.years().find(|y| y.year() == 2023).unwrap();
    let off: Vec<String> = same.off_days().map(|d| d.to_string()).collect();
    let make_up: Vec<String> = same.make_up_days().map(|d| d.to_string()).collect();
    // The 2023 notice reaches back to 2022-12-31; a faithful record does too.
    assert!(off.contains(&"2022-12-31".to_owned()));
    let repeated = YearCalendar::from_dates(2023, &off, &make_up).unwrap();
    assert_eq!(same.first_difference(&repeated), None);

    let mut calendar = Calendar::official();
    assert_eq!(calendar.publish(repeated), Ok(None));
    assert!(calendar.is_official(2023));
    assert!(calendar.holiday(date("2023-10-01")).is_some());
}

#[test]
fn a_year_before_the_embedded_range_is_outside_the_range_not_unpublished() {
    // 2020-10-01 was National Day; the 2020 notice exists, this build just does not carry it.
    let calendar = Calendar::official();
    let kind = calendar.is_working_day(date("2020-10-01"));
    let before = Unlisted::BeforeRange {
        first: 2021,
        last: 2026,
    };
    assert_eq!(
        kind,
        DayKind {
            status: DayStatus::Workday,
            provisional: true,
            unlisted: Some(before),
        }
    );
    let note = before.to_string();
    assert!(
        note.contains("outside the calendar's range (2021–2026 embedded)"),
        "{note}"
    );
    assert!(!note.contains("not yet published"), "{note}");

    let due = calendar
        .due(
            at("2020-09-28 10:00"),
            Period::WorkingDays(3),
            &PeriodPolicy::default(),
        )
        .unwrap();
    assert_eq!(due.unlisted, Some(before));
    assert!(
        due.to_string().contains("outside the calendar's range"),
        "{due}"
    );

    // A year after the range stays "not yet published".
    assert_eq!(
        calendar.is_working_day(date("2027-10-01")).unlisted,
        Some(Unlisted::NotYetPublished)
    );
    // A count that starts before the range and ends inside it says why it is provisional.
    let across = calendar
        .due(
            at("2020-12-30 10:00"),
            Period::WorkingDays(3),
            &PeriodPolicy::default(),
        )
        .unwrap();
    assert_eq!(across.unlisted, Some(before));
}

#[test]
fn plausible_instants_run_from_2000_to_2100_beijing_time() {
    let ms = |text: &str| at(text).timestamp_millis();
    assert_eq!(PLAUSIBLE_MS.start, ms("2000-01-01 00:00"));
    assert_eq!(PLAUSIBLE_MS.end, ms("2100-01-01 00:00"));
    assert!(plausible_instant(ms("2026-09-28 10:20")).is_ok());
    assert!(plausible_instant(ms("2099-12-31 23:59")).is_ok());
    for bad in [
        1,
        0,
        -1,
        ms("1999-12-31 23:59"),
        ms("2100-01-01 00:00"),
        i64::MAX,
    ] {
        let error = plausible_instant(bad).unwrap_err();
        assert!(
            matches!(&error, CalendarError::Implausible { millis, .. } if *millis == bad),
            "{error}"
        );
    }
    let shown = plausible_instant(1).unwrap_err().to_string();
    assert!(shown.contains("1970-01-01 08:00:00.001 +08:00"), "{shown}");
    let shown = plausible_instant(ms("9999-12-31 12:00"))
        .unwrap_err()
        .to_string();
    assert!(shown.contains("9999-12-31 12:00 +08:00"), "{shown}");
    let shown = plausible_instant(i64::MAX).unwrap_err().to_string();
    assert!(shown.contains("no representable instant"), "{shown}");
}

#[test]
fn from_dates_rejects_a_date_outside_its_year() {
    let error = YearCalendar::from_dates(2027, &["2027-10-01", "2028-01-01"], &[]).unwrap_err();
    assert_eq!(
        error,
        CalendarError::DateOutsideYear {
            date: date("2028-01-01"),
            year: 2027
        }
    );
    assert!(error.to_string().contains("2028-01-01"));

    let early_december = YearCalendar::from_dates(2027, &["2026-12-01"], &[]).unwrap_err();
    assert!(early_december.to_string().contains("2026-12-01"));
}

#[test]
fn from_dates_accepts_the_last_days_of_the_previous_december() {
    // As the 2023 notice did with 2022-12-31.
    let year = YearCalendar::from_dates(2027, &["2026-12-31"], &[]).unwrap();
    assert_eq!(
        year.off_days().collect::<Vec<_>>(),
        vec![date("2026-12-31")]
    );
}

#[test]
fn from_dates_rejects_a_make_up_day_on_a_weekday() {
    let error = YearCalendar::from_dates(2026, &[], &["2026-09-20", "2026-10-09"]).unwrap_err();
    assert_eq!(
        error,
        CalendarError::MakeUpOnWeekday {
            date: date("2026-10-09"),
            weekday: Weekday::Fri
        }
    );
    assert!(error.to_string().contains("2026-10-09"));
}

#[test]
fn from_dates_rejects_a_date_both_off_and_make_up() {
    let error = YearCalendar::from_dates(2026, &["2026-10-10"], &["2026-10-10"]).unwrap_err();
    assert_eq!(
        error,
        CalendarError::OffAndMakeUp {
            date: date("2026-10-10")
        }
    );
    assert!(error.to_string().contains("2026-10-10"));
}

#[test]
fn from_dates_rejects_malformed_dates_naming_them() {
    for input in ["2026-13-01", "2026/10/01", "", "tomorrow"] {
        let error = YearCalendar::from_dates(2026, &[input], &[]).unwrap_err();
        assert_eq!(
            error,
            CalendarError::BadDate {
                input: input.to_owned()
            }
        );
    }
    let long = "9".repeat(10_000);
    let error = YearCalendar::from_dates(2026, &[long.as_str()], &[]).unwrap_err();
    assert!(
        error.to_string().len() < 200,
        "a long input is shortened in the message"
    );
}

#[test]
fn holiday_file_rejects_a_reversed_range_and_a_repeated_year() {
    let reversed = r#"
        [[year]]
        year = 2026
        notice = "n"
        url = "u"
        off = [{ days = "2026-10-07..2026-10-01", name = "国庆节", name_en = "National Day" }]
        make_up = []
    "#;
    assert_eq!(
        Calendar::from_holiday_file(reversed).unwrap_err(),
        CalendarError::BadRange {
            input: "2026-10-07..2026-10-01".to_owned()
        }
    );

    let once = r#"
        [[year]]
        year = 2026
        notice = "n"
        url = "u"
        off = []
        make_up = []
    "#;
    let twice = format!("{once}{once}");
    assert_eq!(
        Calendar::from_holiday_file(&twice).unwrap_err(),
        CalendarError::DuplicateYear { year: 2026 }
    );
}

#[test]
fn holiday_names_come_from_the_notice() {
    let calendar = Calendar::official();
    let national_day = calendar.holiday(date("2026-10-05")).unwrap();
    assert_eq!(
        (national_day.name.as_str(), national_day.name_en.as_str()),
        ("国庆节", "National Day")
    );
    assert_eq!(calendar.holiday(date("2022-12-31")).unwrap().name, "元旦");
    assert!(calendar.holiday(date("2026-10-08")).is_none());
}

#[test]
fn new_year_block_reaching_back_into_december_is_a_holiday() {
    // 2022-12-31 is listed in the 2023 notice, not the 2022 one.
    let kind = Calendar::official().is_working_day(date("2022-12-31"));
    assert_eq!(
        kind,
        DayKind {
            status: DayStatus::Holiday,
            provisional: false,
            unlisted: None,
        }
    );
}

#[test]
fn make_up_saturdays_and_sundays_are_working_days() {
    let calendar = Calendar::official();
    for (day, expected) in [
        ("2026-10-10", DayStatus::MakeUpWorkday), // Sat, for National Day
        ("2026-09-20", DayStatus::MakeUpWorkday), // Sun, for National Day
        ("2021-02-07", DayStatus::MakeUpWorkday), // Sun, for Spring Festival
        ("2026-10-11", DayStatus::Weekend),       // the Sunday after, an ordinary rest day
        ("2026-10-07", DayStatus::Holiday),       // a Wednesday inside National Day
    ] {
        let kind = calendar.is_working_day(date(day));
        assert_eq!(kind.status, expected, "{day}");
        assert!(!kind.provisional, "{day}");
    }
}

/// One or two cases per holiday block of 2021–2026: one working day from the day before the
/// block, and three from its first day. Expected values were worked out from the State
/// Council notices independently of this code.
#[test]
fn wd_periods_skip_every_holiday_block_2021_to_2026() {
    // Kept one case per line so the table reads down the years.
    #[rustfmt::skip]
    let cases: &[(&str, &str, u16, &str)] = &[
        ("2021 New Year",                         "2020-12-31 10:00", 1, "2021-01-04"),
        ("2021 New Year",                         "2021-01-01 09:00", 3, "2021-01-06"),
        ("2021 Spring Festival",                  "2021-02-10 10:00", 1, "2021-02-18"),
        ("2021 Spring Festival, make-up Sat",     "2021-02-11 09:00", 3, "2021-02-20"),
        ("2021 Qingming",                         "2021-04-02 10:00", 1, "2021-04-06"),
        ("2021 Qingming",                         "2021-04-03 09:00", 3, "2021-04-08"),
        ("2021 Labour Day",                       "2021-04-30 10:00", 1, "2021-05-06"),
        ("2021 Labour Day, make-up Sat",          "2021-05-01 09:00", 3, "2021-05-08"),
        ("2021 Dragon Boat",                      "2021-06-11 10:00", 1, "2021-06-15"),
        ("2021 Dragon Boat",                      "2021-06-12 09:00", 3, "2021-06-17"),
        ("2021 Mid-Autumn",                       "2021-09-18 10:00", 1, "2021-09-22"),
        ("2021 Mid-Autumn",                       "2021-09-19 09:00", 3, "2021-09-24"),
        ("2021 National Day",                     "2021-09-30 10:00", 1, "2021-10-08"),
        ("2021 National Day, make-up Sat",        "2021-10-01 09:00", 3, "2021-10-11"),
        ("2022 New Year",                         "2021-12-31 10:00", 1, "2022-01-04"),
        ("2022 New Year",                         "2022-01-01 09:00", 3, "2022-01-06"),
        ("2022 Spring Festival",                  "2022-01-30 10:00", 1, "2022-02-07"),
        ("2022 Spring Festival",                  "2022-01-31 09:00", 3, "2022-02-09"),
        ("2022 Qingming",                         "2022-04-02 10:00", 1, "2022-04-06"),
        ("2022 Qingming",                         "2022-04-03 09:00", 3, "2022-04-08"),
        ("2022 Labour Day",                       "2022-04-29 10:00", 1, "2022-05-05"),
        ("2022 Labour Day, make-up Sat",          "2022-04-30 09:00", 3, "2022-05-07"),
        ("2022 Dragon Boat",                      "2022-06-02 10:00", 1, "2022-06-06"),
        ("2022 Dragon Boat",                      "2022-06-03 09:00", 3, "2022-06-08"),
        ("2022 Mid-Autumn",                       "2022-09-09 10:00", 1, "2022-09-13"),
        ("2022 Mid-Autumn",                       "2022-09-10 09:00", 3, "2022-09-15"),
        ("2022 National Day, make-up Sat",        "2022-09-30 10:00", 1, "2022-10-08"),
        ("2022 National Day, make-up Sat+Sun",    "2022-10-01 09:00", 3, "2022-10-10"),
        ("2023 New Year from 2022-12-31",         "2022-12-30 10:00", 1, "2023-01-03"),
        ("2023 New Year from 2022-12-31",         "2022-12-31 09:00", 3, "2023-01-05"),
        ("2023 Spring Festival, make-up Sat",     "2023-01-20 10:00", 1, "2023-01-28"),
        ("2023 Spring Festival, make-up Sat+Sun", "2023-01-21 09:00", 3, "2023-01-30"),
        ("2023 Qingming",                         "2023-04-04 10:00", 1, "2023-04-06"),
        ("2023 Qingming",                         "2023-04-05 09:00", 3, "2023-04-10"),
        ("2023 Labour Day",                       "2023-04-28 10:00", 1, "2023-05-04"),
        ("2023 Labour Day, make-up Sat",          "2023-04-29 09:00", 3, "2023-05-06"),
        ("2023 Dragon Boat, make-up Sun",         "2023-06-21 10:00", 1, "2023-06-25"),
        ("2023 Dragon Boat, make-up Sun",         "2023-06-22 09:00", 3, "2023-06-27"),
        ("2023 Mid-Autumn + National Day",        "2023-09-28 10:00", 1, "2023-10-07"),
        ("2023 Mid-Autumn + National Day",        "2023-09-29 09:00", 3, "2023-10-09"),
        ("2024 New Year",                         "2023-12-31 10:00", 1, "2024-01-02"),
        ("2024 New Year",                         "2024-01-01 09:00", 3, "2024-01-04"),
        ("2024 Spring Festival, make-up Sun",     "2024-02-09 10:00", 1, "2024-02-18"),
        ("2024 Spring Festival, make-up Sun",     "2024-02-10 09:00", 3, "2024-02-20"),
        ("2024 Qingming, make-up Sun",            "2024-04-03 10:00", 1, "2024-04-07"),
        ("2024 Qingming, make-up Sun",            "2024-04-04 09:00", 3, "2024-04-09"),
        ("2024 Labour Day",                       "2024-04-30 10:00", 1, "2024-05-06"),
        ("2024 Labour Day",                       "2024-05-01 09:00", 3, "2024-05-08"),
        ("2024 Dragon Boat",                      "2024-06-09 10:00", 1, "2024-06-11"),
        ("2024 Dragon Boat",                      "2024-06-10 09:00", 3, "2024-06-13"),
        ("2024 Mid-Autumn",                       "2024-09-14 10:00", 1, "2024-09-18"),
        ("2024 Mid-Autumn",                       "2024-09-15 09:00", 3, "2024-09-20"),
        ("2024 National Day",                     "2024-09-30 10:00", 1, "2024-10-08"),
        ("2024 National Day",                     "2024-10-01 09:00", 3, "2024-10-10"),
        ("2025 New Year",                         "2024-12-31 10:00", 1, "2025-01-02"),
        ("2025 New Year",                         "2025-01-01 09:00", 3, "2025-01-06"),
        ("2025 Spring Festival",                  "2025-01-27 10:00", 1, "2025-02-05"),
        ("2025 Spring Festival",                  "2025-01-28 09:00", 3, "2025-02-07"),
        ("2025 Qingming",                         "2025-04-03 10:00", 1, "2025-04-07"),
        ("2025 Qingming",                         "2025-04-04 09:00", 3, "2025-04-09"),
        ("2025 Labour Day",                       "2025-04-30 10:00", 1, "2025-05-06"),
        ("2025 Labour Day",                       "2025-05-01 09:00", 3, "2025-05-08"),
        ("2025 Dragon Boat",                      "2025-05-30 10:00", 1, "2025-06-03"),
        ("2025 Dragon Boat",                      "2025-05-31 09:00", 3, "2025-06-05"),
        ("2025 National Day + Mid-Autumn",        "2025-09-30 10:00", 1, "2025-10-09"),
        ("2025 National Day, make-up Sat",        "2025-10-01 09:00", 3, "2025-10-11"),
        ("2026 New Year, make-up Sun",            "2025-12-31 10:00", 1, "2026-01-04"),
        ("2026 New Year, make-up Sun",            "2026-01-01 09:00", 3, "2026-01-06"),
        ("2026 Spring Festival",                  "2026-02-14 10:00", 1, "2026-02-24"),
        ("2026 Spring Festival",                  "2026-02-15 09:00", 3, "2026-02-26"),
        ("2026 Qingming",                         "2026-04-03 10:00", 1, "2026-04-07"),
        ("2026 Qingming",                         "2026-04-04 09:00", 3, "2026-04-09"),
        ("2026 Labour Day",                       "2026-04-30 10:00", 1, "2026-05-06"),
        ("2026 Labour Day",                       "2026-05-01 09:00", 3, "2026-05-08"),
        ("2026 Dragon Boat",                      "2026-06-18 10:00", 1, "2026-06-22"),
        ("2026 Dragon Boat",                      "2026-06-19 09:00", 3, "2026-06-24"),
        ("2026 Mid-Autumn",                       "2026-09-24 10:00", 1, "2026-09-28"),
        ("2026 Mid-Autumn",                       "2026-09-25 09:00", 3, "2026-09-30"),
        ("2026 National Day",                     "2026-09-30 10:00", 1, "2026-10-08"),
        ("2026 National Day, make-up Sat",        "2026-10-01 09:00", 3, "2026-10-10"),
    ];
    for &(block, from, days, last_day) in cases {
        let expected = format!("{last_day} 24:00 +08:00");
        let due = due_text(from, Period::WorkingDays(days));
        assert_eq!(due, expected, "{block}: {days} WD from {from}");
    }
}

#[test]
fn wd_periods_starting_on_rest_days() {
    let cases = [
        // A Saturday inside National Day; the make-up Saturday is the third working day.
        ("2026-10-03 11:00", 3, "2026-10-10 24:00 +08:00"),
        // An ordinary Sunday.
        ("2026-08-02 23:59", 1, "2026-08-03 24:00 +08:00"),
        // The Saturday before a make-up Sunday: that Sunday counts.
        ("2026-09-19 08:00", 1, "2026-09-20 24:00 +08:00"),
    ];
    for (from, days, expected) in cases {
        assert_eq!(
            due_text(from, Period::WorkingDays(days)),
            expected,
            "{days} WD from {from}"
        );
    }
}

#[test]
fn t1_transfer_3wd_from_monday_before_national_day_ends_8_october() {
    assert_eq!(
        due_text("2026-09-28 10:20", Period::WorkingDays(3)),
        "2026-10-08 24:00 +08:00"
    );
}

#[test]
fn a1_written_opinion_5wd_counts_the_make_up_saturday() {
    assert_eq!(
        due_text("2026-09-29 14:30", Period::WorkingDays(5)),
        "2026-10-12 24:00 +08:00"
    );
}

#[test]
fn a2_written_guidance_3wd_from_tuesday_ends_9_october() {
    assert_eq!(
        due_text("2026-09-29 14:30", Period::WorkingDays(3)),
        "2026-10-09 24:00 +08:00"
    );
}

#[test]
fn s2_15wd_from_wednesday_before_national_day_ends_27_october() {
    assert_eq!(
        due_text("2026-09-30 16:00", Period::WorkingDays(15)),
        "2026-10-27 24:00 +08:00"
    );
}

#[test]
fn s2_same_day_sharing_extended_by_15wd_stays_within_the_limit() {
    let calendar = Calendar::official();
    let policy = PeriodPolicy::default();
    let formed = at("2026-09-30 16:00");

    let same_day = calendar.due(formed, Period::SameDay, &policy).unwrap();
    assert_eq!(format_instant(same_day.at), "2026-09-30 24:00 +08:00");

    let extended = calendar.extend(&same_day, 15, &policy).unwrap();
    assert_eq!(format_instant(extended.at), "2026-10-27 24:00 +08:00");
    let limit = calendar
        .check_limit(formed, Period::WorkingDays(15), &extended, &policy)
        .unwrap();
    assert_eq!(limit.at, extended.at);

    let too_far = calendar.extend(&same_day, 16, &policy).unwrap();
    let error = calendar
        .check_limit(formed, Period::WorkingDays(15), &too_far, &policy)
        .unwrap_err();
    assert_eq!(
        error,
        CalendarError::BeyondLimit {
            due: "2026-10-28 24:00 +08:00".to_owned(),
            limit: Period::WorkingDays(15),
            limit_due: "2026-10-27 24:00 +08:00".to_owned(),
        }
    );
}

#[test]
fn j3_at_once_from_0900_is_due_at_1100() {
    assert_eq!(
        due_text("2026-09-29 09:00", Period::AtOnce),
        "2026-09-29 11:00 +08:00"
    );
}

#[test]
fn at_once_follows_the_organisations_policy() {
    let policy = PeriodPolicy {
        at_once: TimeDelta::minutes(30),
        ..PeriodPolicy::default()
    };
    let due = Calendar::official()
        .due(at("2026-09-29 09:00"), Period::AtOnce, &policy)
        .unwrap();
    assert_eq!(format_instant(due.at), "2026-09-29 09:30 +08:00");
}

#[test]
fn period_policies_give_an_organisation_its_own_policy_and_the_rest_the_districts() {
    let district = PeriodPolicy {
        at_once: TimeDelta::hours(1),
        ..PeriodPolicy::default()
    };
    let policies = PeriodPolicies {
        district,
        organisations: BTreeMap::from([("130304100".to_owned(), policy_ending_at(17, 30))]),
    };
    assert_eq!(policies.for_org("130304100"), &policy_ending_at(17, 30));
    assert_eq!(policies.for_org("bdh-scjg"), &district);
    assert_eq!(
        PeriodPolicies::default().for_org("130304100"),
        &PeriodPolicy::default()
    );
}

#[test]
fn delays_are_read_in_hours_minutes_or_both() {
    for (input, minutes) in [
        ("2h", 120),
        ("90m", 90),
        ("1h30m", 90),
        (" 1H ", 60),
        ("1m", 1),
        ("24h", 1440),
        ("0h45m", 45),
    ] {
        assert_eq!(
            parse_delay(input),
            Ok(TimeDelta::minutes(minutes)),
            "{input}"
        );
    }
    for (delay, text) in [(120, "2h"), (90, "1h30m"), (45, "45m")] {
        assert_eq!(format_delay(TimeDelta::minutes(delay)), text);
        assert_eq!(parse_delay(text), Ok(TimeDelta::minutes(delay)));
    }
}

#[test]
fn bad_delays_are_refused_naming_the_value() {
    for input in [
        "",
        "2",
        "two hours",
        "2 h",
        "-1h",
        "1.5h",
        "0m",
        "0h",
        "24h1m",
        "25h",
        "1h30",
        "h",
        "1hm",
        "99999999999h",
    ] {
        let error = parse_delay(input).unwrap_err();
        assert!(
            matches!(&error, CalendarError::BadDelay { input: named, .. } if named == input),
            "{input:?}: {error:?}"
        );
        assert!(error.to_string().contains(&format!("{input:?}")), "{error}");
    }
}

#[test]
fn ends_of_day_are_read_as_hh_mm_with_24_00_for_midnight() {
    assert_eq!(parse_end_of_day("24:00"), Ok(PeriodPolicy::MIDNIGHT));
    assert_eq!(
        parse_end_of_day("17:30"),
        Ok(NaiveTime::from_hms_opt(17, 30, 0).unwrap())
    );
    assert_eq!(
        parse_end_of_day(" 9:05 "),
        Ok(NaiveTime::from_hms_opt(9, 5, 0).unwrap())
    );
    assert_eq!(format_end_of_day(PeriodPolicy::MIDNIGHT), "24:00");
    assert_eq!(
        format_end_of_day(NaiveTime::from_hms_opt(9, 5, 0).unwrap()),
        "09:05"
    );
    assert_eq!(
        policy_ending_at(17, 30).to_string(),
        "at once 2h, end of day 17:30"
    );
}

#[test]
fn bad_ends_of_day_are_refused_naming_the_value() {
    for input in [
        "", "17", "1730", "17:3", "17:30:00", "25:00", "24:01", "12:60", "00:00", "0:00", "noon",
        "-1:30", "+9:30",
    ] {
        let error = parse_end_of_day(input).unwrap_err();
        assert!(
            matches!(&error, CalendarError::BadEndOfDay { input: named, .. } if named == input),
            "{input:?}: {error:?}"
        );
        assert!(error.to_string().contains(&format!("{input:?}")), "{error}");
    }
    assert!(
        parse_end_of_day("00:00")
            .unwrap_err()
            .to_string()
            .contains("write 24:00")
    );
}

#[test]
fn t1_urgent_24h_runs_through_nights_and_holidays() {
    assert_eq!(
        due_text("2026-09-30 16:45", Period::Hours(24)),
        "2026-10-01 16:45 +08:00"
    );
    assert_eq!(
        due_text("2026-09-30 00:00", Period::Hours(24)),
        "2026-09-30 24:00 +08:00"
    );
}

#[test]
fn wd_period_ends_at_the_organisations_end_of_day() {
    let policy = policy_ending_at(17, 30);
    let calendar = Calendar::official();
    let due = calendar
        .due(at("2026-09-28 10:20"), Period::WorkingDays(3), &policy)
        .unwrap();
    assert_eq!(format_instant(due.at), "2026-10-08 17:30 +08:00");

    // Extending counts from the day the original period ended, not the day after it.
    let extended = calendar.extend(&due, 1, &policy).unwrap();
    assert_eq!(format_instant(extended.at), "2026-10-09 17:30 +08:00");
}

#[test]
fn same_day_after_the_organisations_end_of_day_runs_to_midnight() {
    let calendar = Calendar::official();
    let policy = policy_ending_at(17, 30);
    let before = calendar
        .due(at("2026-09-29 09:00"), Period::SameDay, &policy)
        .unwrap();
    assert_eq!(format_instant(before.at), "2026-09-29 17:30 +08:00");
    let after = calendar
        .due(at("2026-09-29 18:00"), Period::SameDay, &policy)
        .unwrap();
    assert_eq!(format_instant(after.at), "2026-09-29 24:00 +08:00");
}

#[test]
fn instants_in_other_offsets_are_counted_in_beijing_days() {
    // 2026-09-28 20:00 UTC is already Tuesday 04:00 in Beijing: Tuesday is the event day.
    let due = Calendar::official()
        .due(
            at("2026-09-28T20:00:00Z"),
            Period::WorkingDays(3),
            &PeriodPolicy::default(),
        )
        .unwrap();
    assert_eq!(format_instant(due.at), "2026-10-09 24:00 +08:00");
    assert_eq!(due.at.offset(), &BEIJING);
}

#[test]
fn huge_periods_near_the_end_of_time_fail_instead_of_panicking() {
    let far = DateTime::<chrono::Utc>::MAX_UTC.with_timezone(&BEIJING) - TimeDelta::days(2);
    let calendar = Calendar::official();
    for period in [Period::WorkingDays(u16::MAX), Period::Hours(u16::MAX)] {
        let result = calendar.due(far, period, &PeriodPolicy::default());
        assert!(
            matches!(result, Err(CalendarError::OutOfRange { .. })),
            "{period}: {result:?}"
        );
    }
}

#[test]
fn periods_parse_from_their_display_form() {
    for (text, period) in [
        ("5wd", Period::WorkingDays(5)),
        ("24h", Period::Hours(24)),
        ("2h", Period::Hours(2)),
        ("at-once", Period::AtOnce),
        ("same-day", Period::SameDay),
        (" 15WD ", Period::WorkingDays(15)),
    ] {
        assert_eq!(text.parse::<Period>().unwrap(), period, "{text:?}");
        assert_eq!(period.to_string().parse::<Period>().unwrap(), period);
    }
}

#[test]
fn bad_periods_are_rejected_naming_the_input() {
    for input in [
        "5d", "wd", "0wd", "-3wd", "+3wd", "70000h", "5 wd", "soon", "",
    ] {
        let error = input.parse::<Period>().unwrap_err();
        assert!(
            matches!(&error, CalendarError::BadPeriod { input: named, .. } if named == input),
            "{input:?}: {error:?}"
        );
        assert!(error.to_string().contains(&format!("{input:?}")), "{error}");
    }
}

#[test]
fn instants_parse_from_rfc3339_and_beijing_local_forms() {
    let expected = at("2026-09-29T14:30:00+08:00");
    assert_eq!(at("2026-09-29 14:30"), expected);
    assert_eq!(at("2026-09-29T06:30:00Z"), expected);
    assert_eq!(at("2026-09-29 14:30 +08:00"), expected);
    assert_eq!(at("2026-10-08 24:00"), at("2026-10-09 00:00"));
    assert_eq!(
        at(&format_instant(at("2026-10-09 00:00"))),
        at("2026-10-09 00:00")
    );
    assert_eq!(
        from_unix_millis(expected.timestamp_millis()).unwrap(),
        expected
    );
}

#[test]
fn bad_instants_are_rejected_naming_the_input() {
    for input in [
        "tomorrow",
        "2026-09-29",
        "2026-09-29 25:00",
        "2026-09-29 14:30 CST",
        "2026-02-30 10:00",
    ] {
        let error = parse_instant(input).unwrap_err();
        assert_eq!(
            error,
            CalendarError::BadInstant {
                input: input.to_owned()
            }
        );
    }
    assert!(from_unix_millis(i64::MAX).is_err());
}

#[test]
fn instants_are_written_with_24_00_for_midnight() {
    assert_eq!(
        format_instant(at("2026-10-09 00:00")),
        "2026-10-08 24:00 +08:00"
    );
    assert_eq!(
        format_instant(at("2026-10-08 17:30")),
        "2026-10-08 17:30 +08:00"
    );
    assert_eq!(
        format_instant(at("2026-10-08T17:30:05+08:00")),
        "2026-10-08 17:30:05 +08:00"
    );
    assert_eq!(
        format_instant(at("2026-10-08T09:30:05Z")),
        "2026-10-08 17:30:05 +08:00"
    );
}

/// Compares the embedded calendar with the shared snapshot it was transcribed from, day by
/// day, and checks that no year the snapshot calls unpublished is embedded.
#[test]
fn embedded_calendar_matches_shared_cn_calendar_day_by_day() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cn-calendar");
    if !folder.is_dir() {
        eprintln!(
            "skipped: {} is absent, nothing to compare with",
            folder.display()
        );
        return;
    }
    let calendar = Calendar::official();
    let mut listed: BTreeMap<NaiveDate, (bool, String)> = BTreeMap::new();
    for year in 2021..=2027 {
        let text = std::fs::read_to_string(folder.join(format!("{year}.json"))).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let published = file["published"].as_bool().unwrap();
        assert_eq!(calendar.is_published(year), published, "{year}");
        for entry in file["off_days"].as_array().unwrap() {
            let name = entry["name"].as_str().unwrap().to_owned();
            listed.insert(date(entry["date"].as_str().unwrap()), (false, name));
        }
        for entry in file["make_up_workdays"].as_array().unwrap() {
            listed.insert(date(entry["date"].as_str().unwrap()), (true, String::new()));
        }
    }

    let mut checked = 0;
    for day in date("2021-01-01")
        .iter_days()
        .take_while(|d| *d <= date("2026-12-31"))
    {
        let kind = calendar.is_working_day(day);
        let expected = match listed.get(&day) {
            Some((working, name)) => {
                if !working {
                    assert_eq!(&calendar.holiday(day).unwrap().name, name, "{day}");
                }
                *working
            }
            None => !matches!(day.weekday(), Weekday::Sat | Weekday::Sun),
        };
        assert_eq!(kind.is_working(), expected, "{day}");
        assert!(!kind.provisional, "{day}");
        checked += 1;
    }
    assert_eq!(checked, 2191);
}

fn working_days_between(calendar: &Calendar, after: NaiveDate, through: NaiveDate) -> usize {
    after
        .iter_days()
        .skip(1)
        .take_while(|d| *d <= through)
        .filter(|d| calendar.is_working_day(*d).is_working())
        .count()
}

/// Any instant from mid-2020 to the end of 2027, so both unpublished edges are reached.
fn any_instant() -> impl Strategy<Value = DateTime<FixedOffset>> {
    (0i64..(366 * 7 + 184), 0i64..(24 * 60)).prop_map(|(days, minutes)| {
        at("2020-07-01 00:00") + TimeDelta::days(days) + TimeDelta::minutes(minutes)
    })
}

proptest! {
    #[test]
    fn wd_deadline_never_ends_a_rest_day(from in any_instant(), days in 1u16..40) {
        let calendar = Calendar::official();
        let due = calendar.due(from, Period::WorkingDays(days), &PeriodPolicy::default()).unwrap();
        prop_assert_eq!(due.at.time(), NaiveTime::MIN);
        let last_day = due.at.date_naive().pred_opt().unwrap();
        prop_assert!(calendar.is_working_day(last_day).is_working(), "ends {}", last_day);
    }

    #[test]
    fn exactly_n_working_days_lie_after_the_event_day_through_the_due_day(
        from in any_instant(),
        days in 1u16..40,
    ) {
        let calendar = Calendar::official();
        let due = calendar.due(from, Period::WorkingDays(days), &PeriodPolicy::default()).unwrap();
        let last_day = due.at.date_naive().pred_opt().unwrap();
        let counted = working_days_between(&calendar, from.date_naive(), last_day);
        prop_assert_eq!(counted, usize::from(days));
    }

    #[test]
    fn wd_deadline_is_provisional_iff_it_relies_on_an_unpublished_year(
        from in any_instant(),
        days in 1u16..40,
    ) {
        let calendar = Calendar::official();
        let due = calendar.due(from, Period::WorkingDays(days), &PeriodPolicy::default()).unwrap();
        let last_day = due.at.date_naive().pred_opt().unwrap();
        let unpublished = from
            .date_naive()
            .iter_days()
            .skip(1)
            .take_while(|d| *d <= last_day)
            .any(|d| !calendar.is_published(d.year()));
        prop_assert_eq!(due.provisional, unpublished);
    }

    #[test]
    fn extending_by_k_wd_equals_a_period_k_wd_longer(
        from in any_instant(),
        days in 1u16..20,
        extra in 0u16..20,
        early_close in any::<bool>(),
    ) {
        let calendar = Calendar::official();
        let policy = if early_close { policy_ending_at(17, 30) } else { PeriodPolicy::default() };
        let original = calendar.due(from, Period::WorkingDays(days), &policy).unwrap();
        let extended = calendar.extend(&original, extra, &policy).unwrap();
        let longer = calendar.due(from, Period::WorkingDays(days + extra), &policy).unwrap();
        prop_assert_eq!(extended, longer);
    }
}
