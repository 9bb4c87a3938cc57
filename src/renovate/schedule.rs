//! Five-field cron schedules (Vixie cron syntax and day matching) and maintenance windows:
//! a window opens at each schedule time in its IANA time zone and stays open for a duration.
//!
//! Why not a cron crate: the common ones (`cron`, `croner`'s default, `saffron`) are built on
//! chrono, and the API promises exactly five fields, which a small parser can check and
//! explain precisely; jiff does the part that is hard to get right (time zones and DST).
//!
//! Daylight-saving rules (jiff's "compatible" disambiguation, the same as most crons): a
//! schedule time that does not exist (skipped by a spring-forward gap) opens the window at
//! the instant the clock jumps past it — 02:30 in a gap from 02:00 to 03:00 opens at 03:30;
//! a time that happens twice (fall-back fold) opens it once, at the first.

use crate::api::MaintenanceWindow;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use std::fmt;

/// How far the search for the previous or next schedule time goes: eight years covers
/// `29 2 *` (February 29th) in every leap-year cycle, with room to spare.
const SEARCH_DAYS: i64 = 8 * 366 + 7;

/// A schedule or window that cannot be used, with the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid schedule `{schedule}`: {reason}")]
    Schedule { schedule: String, reason: String },
    #[error("unknown time zone `{0}`: use an IANA name such as Europe/Berlin or UTC")]
    TimeZone(String),
    #[error("invalid window duration: {0}")]
    Duration(String),
}

/// A parsed five-field schedule: minute hour day-of-month month day-of-week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether the day-of-month / day-of-week field starts with `*`: Vixie cron then
    /// requires both to match; when both are restricted, either one is enough.
    days_star: bool,
    weekdays_star: bool,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: FieldSpec = FieldSpec {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
// 7 is Sunday too, as in Vixie cron; it is folded onto 0 after parsing.
const WEEKDAY: FieldSpec = FieldSpec {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Schedule {
    /// Parses `minute hour day-of-month month day-of-week`: `*`, numbers, names (`jan`,
    /// `sat`), lists `1,15`, ranges `1-5`, steps `*/15` and `0-30/10`.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let error = |reason: String| ScheduleError::Schedule {
            schedule: text.to_owned(),
            reason,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(error(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        }
        let minutes = parse_field(fields[0], &MINUTE).map_err(error)?;
        let hours = parse_field(fields[1], &HOUR).map_err(error)?;
        let days = parse_field(fields[2], &DAY).map_err(error)?;
        let months = parse_field(fields[3], &MONTH).map_err(error)?;
        let mut weekdays = parse_field(fields[4], &WEEKDAY).map_err(error)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Self {
            text: text.to_owned(),
            minutes,
            // The masks fit their types: parse_field only sets bits min..=max.
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_star: fields[2].starts_with('*'),
            weekdays_star: fields[4].starts_with('*'),
        })
    }

    /// Whether the schedule fires on this date (Vixie's day-of-month/day-of-week rule).
    fn matches_date(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.days_star || self.weekdays_star {
            day && weekday
        } else {
            day || weekday
        }
    }

    /// The instants the schedule fires on `date` in `tz`.
    fn instants_on(&self, date: Date, tz: &TimeZone) -> Vec<Timestamp> {
        if !self.matches_date(date) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
            for minute in (0..60).filter(|m| self.minutes & (1u64 << m) != 0) {
                let Ok(time) = Time::new(hour, minute, 0, 0) else {
                    continue;
                };
                let civil = DateTime::from_parts(date, time);
                if let Ok(zoned) = tz.to_ambiguous_zoned(civil).compatible() {
                    out.push(zoned.timestamp());
                }
            }
        }
        out
    }

    /// The latest time the schedule fires at or before `at`.
    pub fn previous(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = at.to_zoned(tz.clone()).date().tomorrow().ok()?;
        (0..SEARCH_DAYS)
            .filter_map(|back| start.checked_sub(back.days()).ok())
            .find_map(|date| {
                self.instants_on(date, tz)
                    .into_iter()
                    .filter(|t| *t <= at)
                    .max()
            })
    }

    /// The earliest time the schedule fires strictly after `at`.
    pub fn next(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = at.to_zoned(tz.clone()).date().yesterday().ok()?;
        (0..SEARCH_DAYS)
            .filter_map(|ahead| start.checked_add(ahead.days()).ok())
            .find_map(|date| {
                self.instants_on(date, tz)
                    .into_iter()
                    .filter(|t| *t > at)
                    .min()
            })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses one field into a bit mask of the values it allows.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, String> {
    let mut mask = 0u64;
    for item in text.split(',') {
        let bad = |reason: &str| format!("{} `{item}`: {reason}", spec.name);
        if item.is_empty() {
            return Err(bad("empty list item"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| bad("the step after `/` must be a number"))?;
                if step == 0 {
                    return Err(bad("a step of 0 never advances"));
                }
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((low, high)) = range.split_once('-') {
            let (low, high) = (value(low, spec)?, value(high, spec)?);
            if low > high {
                return Err(bad("the range runs backwards"));
            }
            (low, high)
        } else {
            let low = value(range, spec)?;
            // `5/15` means from 5 to the end, every 15 (as in most crons).
            (low, if item.contains('/') { spec.max } else { low })
        };
        let mut v = low;
        while v <= high {
            mask |= 1 << v;
            // A huge step (`*/4000000000`) must end the loop, not overflow.
            match v.checked_add(step) {
                Some(next) => v = next,
                None => break,
            }
        }
    }
    Ok(mask)
}

fn value(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = spec.names.iter().position(|name| *name == lower) {
        // Month names count from 1, weekday names from 0 (Sunday).
        return Ok(index as u32 + spec.min);
    }
    let number: u32 = text.parse().map_err(|_| {
        let hint = if spec.names.is_empty() {
            String::new()
        } else {
            format!(" or a name such as `{}`", spec.names[0])
        };
        if ["?", "l", "w"].iter().any(|c| lower.contains(c)) || lower.contains('#') {
            format!(
                "{} `{text}`: the cron extensions `?`, `L`, `W` and `#` are not supported; \
                 use numbers{hint}",
                spec.name
            )
        } else {
            format!("{} `{text}`: expected a number{hint}", spec.name)
        }
    })?;
    if number < spec.min || number > spec.max {
        return Err(format!(
            "{} `{number}` is outside {}-{}",
            spec.name, spec.min, spec.max
        ));
    }
    Ok(number)
}

/// A maintenance window ready to answer "is it open at t" and "when does it open next".
#[derive(Debug, Clone)]
pub struct Window {
    pub schedule: Schedule,
    pub duration: SignedDuration,
    pub tz: TimeZone,
}

/// Where a window stands at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Open since `opened`, until `closes`.
    Open {
        opened: Timestamp,
        closes: Timestamp,
    },
    /// Closed; opens next at `opens` (`None` if the schedule never fires again).
    Closed { opens: Option<Timestamp> },
}

impl Window {
    /// Builds a window from the API type, with the time zone from jiff's database (the
    /// system's, else the copy bundled into the binary).
    pub fn from_spec(spec: &MaintenanceWindow) -> Result<Self, ScheduleError> {
        let tz = jiff::tz::db()
            .get(&spec.timezone)
            .map_err(|_| ScheduleError::TimeZone(spec.timezone.clone()))?;
        Self::new(&spec.schedule, spec.duration.as_str(), tz)
    }

    /// Builds a window from its parts; `duration` is a Go duration (`2h`, `90m`).
    pub fn new(schedule: &str, duration: &str, tz: TimeZone) -> Result<Self, ScheduleError> {
        let schedule = Schedule::parse(schedule)?;
        let duration = crate::api::GoDuration::from(duration)
            .to_std()
            .map_err(|err| ScheduleError::Duration(err.to_string()))?;
        let duration = SignedDuration::try_from(duration)
            .map_err(|err| ScheduleError::Duration(err.to_string()))?;
        if duration.is_zero() {
            return Err(ScheduleError::Duration(
                "a window of length 0 is never open".into(),
            ));
        }
        Ok(Self {
            schedule,
            duration,
            tz,
        })
    }

    /// Whether the window is open at `at`: the window that opened at the latest schedule
    /// time at or before `at` lasts `duration` (an earlier one cannot outlast it).
    pub fn state(&self, at: Timestamp) -> WindowState {
        if let Some(opened) = self.schedule.previous(at, &self.tz)
            && let Ok(closes) = opened.checked_add(self.duration)
            && at < closes
        {
            return WindowState::Open { opened, closes };
        }
        WindowState::Closed {
            opens: self.schedule.next(at, &self.tz),
        }
    }

    /// The first instant at or after `at` when the window is open.
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        match self.state(at) {
            WindowState::Open { .. } => Some(at),
            WindowState::Closed { opens } => opens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    fn tz(name: &str) -> TimeZone {
        jiff::tz::db()
            .get(name)
            .unwrap_or_else(|err| panic!("{name}: {err}"))
    }

    fn schedule(text: &str) -> Schedule {
        Schedule::parse(text).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn parses_lists_ranges_steps_and_names() {
        let s = schedule("*/15 1-3,22 * jan-mar,DEC mon-fri");
        assert_eq!(s.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(s.hours, 1 << 1 | 1 << 2 | 1 << 3 | 1 << 22);
        assert_eq!(s.months, 1 << 1 | 1 << 2 | 1 << 3 | 1 << 12);
        assert_eq!(s.weekdays, 0b0111110);
        assert_eq!(schedule("0 0 * * 7").weekdays, 1, "7 is Sunday");
        assert_eq!(schedule("0 0 * * 5-7").weekdays, 1 | 1 << 5 | 1 << 6);
        assert_eq!(schedule("5/20 * * * *").minutes, 1 << 5 | 1 << 25 | 1 << 45);
        assert_eq!(
            schedule("0-30/10 * * * *").minutes,
            1 | 1 << 10 | 1 << 20 | 1 << 30
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour_with_the_field_named() {
        for (text, expected) in [
            ("0 3 * *", "expected 5 fields"),
            ("0 0 3 * * 6", "expected 5 fields"),
            ("60 * * * *", "minute `60` is outside 0-59"),
            ("* 24 * * *", "hour `24` is outside 0-23"),
            ("* * 0 * *", "day of month `0` is outside 1-31"),
            ("* * * 13 *", "month `13` is outside 1-12"),
            ("* * * * 8", "day of week `8` is outside 0-7"),
            ("*/0 * * * *", "a step of 0"),
            ("5-1 * * * *", "runs backwards"),
            ("* * L * *", "not supported"),
            ("* * * * 5#2", "not supported"),
            ("* * ? * *", "not supported"),
            ("a * * * *", "minute `a`: expected a number"),
            ("* * * foo *", "expected a number or a name such as `jan`"),
            ("1,,2 * * * *", "empty list item"),
        ] {
            let err = Schedule::parse(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains(text), "the schedule is quoted: {err}");
        }
    }

    #[test]
    fn day_of_month_and_day_of_week_follow_vixie_cron() {
        // Both restricted: either matches (the 13th, or any Friday).
        let either = schedule("0 0 13 * 5");
        assert!(either.matches_date(jiff::civil::date(2026, 11, 13)), "13th");
        assert!(
            either.matches_date(jiff::civil::date(2026, 11, 20)),
            "a Friday"
        );
        assert!(!either.matches_date(jiff::civil::date(2026, 11, 19)));
        // One is `*`: both must match.
        let fridays = schedule("0 0 * * fri");
        assert!(!fridays.matches_date(jiff::civil::date(2026, 11, 13 + 6)));
        assert!(fridays.matches_date(jiff::civil::date(2026, 11, 20)));
        let step_star = schedule("0 0 */2 * 5");
        assert!(
            !step_star.matches_date(jiff::civil::date(2026, 11, 20)),
            "`*/2` counts as `*`: the 20th is even, so not in 1,3,5…"
        );
        assert!(step_star.matches_date(jiff::civil::date(2026, 11, 27)));
    }

    #[test]
    fn window_across_midnight() {
        // Saturdays 23:00 for 3h in UTC: open Saturday 23:30 and Sunday 01:59, closed 02:00.
        let window = Window::new("0 23 * * sat", "3h", TimeZone::UTC).expect("valid");
        let opened = ts("2026-11-21T23:00:00Z");
        let closes = ts("2026-11-22T02:00:00Z");
        for at in [
            "2026-11-21T23:00:00Z",
            "2026-11-21T23:30:00Z",
            "2026-11-22T01:59:59Z",
        ] {
            assert_eq!(
                window.state(ts(at)),
                WindowState::Open { opened, closes },
                "{at}"
            );
        }
        let next = Some(ts("2026-11-28T23:00:00Z"));
        assert_eq!(
            window.state(ts("2026-11-22T02:00:00Z")),
            WindowState::Closed { opens: next }
        );
        assert_eq!(
            window.state(ts("2026-11-21T22:59:59Z")),
            WindowState::Closed {
                opens: Some(opened)
            }
        );
        assert_eq!(
            window.next_open(ts("2026-11-22T00:00:00Z")),
            Some(ts("2026-11-22T00:00:00Z"))
        );
    }

    #[test]
    fn window_in_a_zone_across_a_dst_change() {
        let berlin = tz("Europe/Berlin");
        // Daily 02:30 Berlin time for 1h. On 2026-03-29 clocks jump 02:00 → 03:00 CEST, so
        // 02:30 does not exist: the window opens when the clock passes it, at 03:30 CEST
        // (01:30 UTC). The day before, 02:30 CET is 01:30 UTC; the day after, 02:30 CEST is
        // 00:30 UTC.
        let window = Window::new("30 2 * * *", "1h", berlin.clone()).expect("valid");
        assert_eq!(
            window.schedule.next(ts("2026-03-28T12:00:00Z"), &berlin),
            Some(ts("2026-03-29T01:30:00Z"))
        );
        assert_eq!(
            window.schedule.next(ts("2026-03-29T02:00:00Z"), &berlin),
            Some(ts("2026-03-30T00:30:00Z"))
        );
        assert!(matches!(
            window.state(ts("2026-03-28T01:45:00Z")),
            WindowState::Open { .. }
        ));
        assert!(matches!(
            window.state(ts("2026-03-29T02:29:00Z")),
            WindowState::Open { .. }
        ));
        assert!(matches!(
            window.state(ts("2026-03-29T02:31:00Z")),
            WindowState::Closed { .. }
        ));
        assert!(matches!(
            window.state(ts("2026-03-30T00:45:00Z")),
            WindowState::Open { .. }
        ));
        // Fall back on 2026-10-25: 02:30 happens twice; the window opens once, at the first
        // (02:30 CEST = 00:30 UTC), and is closed an hour later although 02:30 CET follows.
        let opened = ts("2026-10-25T00:30:00Z");
        assert_eq!(
            window.state(ts("2026-10-25T01:00:00Z")),
            WindowState::Open {
                opened,
                closes: ts("2026-10-25T01:30:00Z")
            }
        );
        assert_eq!(
            window.state(ts("2026-10-25T01:45:00Z")),
            WindowState::Closed {
                opens: Some(ts("2026-10-26T01:30:00Z"))
            }
        );
    }

    #[test]
    fn window_opening_in_local_time_not_utc() {
        // 03:00 in New York (EST, UTC-5 in November) is 08:00 UTC.
        let window = Window::new("0 3 * * *", "2h", tz("America/New_York")).expect("valid");
        assert_eq!(
            window.next_open(ts("2026-11-23T07:00:00Z")),
            Some(ts("2026-11-23T08:00:00Z"))
        );
        assert!(matches!(
            window.state(ts("2026-11-23T09:59:00Z")),
            WindowState::Open { .. }
        ));
    }

    #[test]
    fn the_local_day_decides_not_the_utc_day() {
        // Saturday 01:00 in Tokyo (UTC+9) is Friday 16:00 UTC.
        let window = Window::new("0 1 * * sat", "90m", tz("Asia/Tokyo")).expect("valid");
        assert_eq!(
            window.next_open(ts("2026-11-23T00:00:00Z")),
            Some(ts("2026-11-27T16:00:00Z"))
        );
        assert!(matches!(
            window.state(ts("2026-11-27T17:29:00Z")),
            WindowState::Open { .. }
        ));
        assert!(matches!(
            window.state(ts("2026-11-28T16:30:00Z")),
            WindowState::Closed { .. }
        ));
    }

    #[test]
    fn a_window_longer_than_its_period_is_always_open() {
        let window = Window::new("0 * * * *", "2h", TimeZone::UTC).expect("valid");
        for at in [
            "2026-11-23T00:00:00Z",
            "2026-11-23T00:59:59Z",
            "2026-11-23T13:37:00Z",
        ] {
            assert!(
                matches!(window.state(ts(at)), WindowState::Open { .. }),
                "{at}"
            );
        }
        let zero = Window::new("0 * * * *", "0s", TimeZone::UTC).expect_err("zero");
        assert!(zero.to_string().contains("never open"), "{zero}");
    }

    #[test]
    fn rare_schedules_are_found_and_impossible_ones_end() {
        // February 29th at noon: the next one after 2026 is in 2028.
        let leap = Window::new("0 12 29 2 *", "1h", TimeZone::UTC).expect("valid");
        assert_eq!(
            leap.next_open(ts("2026-03-01T00:00:00Z")),
            Some(ts("2028-02-29T12:00:00Z"))
        );
        assert_eq!(
            leap.schedule
                .previous(ts("2026-03-01T00:00:00Z"), &TimeZone::UTC),
            Some(ts("2024-02-29T12:00:00Z"))
        );
        // February 31st never comes.
        let never = Window::new("0 0 31 2 *", "1h", TimeZone::UTC).expect("valid");
        assert_eq!(never.next_open(ts("2026-01-01T00:00:00Z")), None);
    }

    proptest::proptest! {
        /// Whatever a user writes, parsing and evaluating returns (never panics or spins).
        #[test]
        fn any_schedule_text_is_parsed_or_refused(
            fields in proptest::collection::vec(
                proptest::prop_oneof![
                    "\\*", "\\*/[0-9]{1,2}", "[0-9]{1,2}", "[0-9]{1,2}-[0-9]{1,2}(/[0-9])?",
                    "[0-9]{1,2},[0-9]{1,2}", "(mon|fri|sat|jan|feb|dec)", "[0-9*/,a-zA-Z?#-]{1,12}",
                ],
                5,
            ),
            seconds in 0i64..4_000_000_000,
        ) {
            if let Ok(schedule) = Schedule::parse(&fields.join(" ")) {
                let at = Timestamp::from_second(seconds).expect("in range");
                if let Some(previous) = schedule.previous(at, &TimeZone::UTC) {
                    proptest::prop_assert!(previous <= at);
                }
                if let Some(next) = schedule.next(at, &TimeZone::UTC) {
                    proptest::prop_assert!(next > at);
                }
            }
        }
    }

    #[test]
    fn huge_steps_do_not_overflow() {
        assert_eq!(schedule("*/4294967295 * * * *").minutes, 1);
        assert!(Schedule::parse("*/4294967296 * * * *").is_err());
    }

    #[test]
    fn time_zones_are_bundled_for_images_without_zoneinfo() {
        // A distroless image has no /usr/share/zoneinfo; the copy built into the binary
        // must know the zones users write.
        let bundled = jiff::tz::TimeZoneDatabase::bundled();
        for name in ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"] {
            assert!(bundled.get(name).is_ok(), "{name} is bundled");
        }
    }

    #[test]
    fn window_spec_errors_name_the_problem() {
        let spec = |timezone: &str, duration: &str| MaintenanceWindow {
            schedule: "0 3 * * 6".into(),
            duration: duration.into(),
            timezone: timezone.into(),
        };
        assert!(Window::from_spec(&spec("Europe/Berlin", "2h")).is_ok());
        let err = Window::from_spec(&spec("Mars/Olympus", "2h")).expect_err("unknown zone");
        assert!(err.to_string().contains("Mars/Olympus"), "{err}");
        let err = Window::from_spec(&spec("UTC", "soon")).expect_err("bad duration");
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
