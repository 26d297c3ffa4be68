//! UTC calendar windows: days, ISO weeks (Monday to Sunday), real months and years, each
//! optionally several units long.
//!
//! A window of `count` units starts at a multiple of `count` units counted from the Unix epoch's
//! own unit (1970-01-01, the ISO week of 1969-12-29, January 1970, the year 1970), so three-month
//! windows are the calendar quarters and two-week windows alternate from that first Monday.
//!
//! Dates use the proleptic Gregorian calendar through two conversions between a day number and a
//! civil date (the classic era-of-400-years method). The Redis script carries the same arithmetic.

/// A calendar unit a fixed window can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CalendarUnit {
    Day,
    Week,
    Month,
    Year,
}

const SECS_PER_DAY: i64 = 86_400;

/// 1970-01-01 was a Thursday: the ISO week holding it began three days earlier.
const FIRST_MONDAY: i64 = -3;

impl CalendarUnit {
    /// The length sliding windows, token buckets and headers use: 30-day months and 365-day years,
    /// as envoyproxy/ratelimit counts them.
    pub const fn nominal_secs(self) -> u64 {
        match self {
            CalendarUnit::Day => 86_400,
            CalendarUnit::Week => 7 * 86_400,
            CalendarUnit::Month => 30 * 86_400,
            CalendarUnit::Year => 365 * 86_400,
        }
    }

    /// A one-letter code for counter keys and the Redis script.
    pub const fn code(self) -> char {
        match self {
            CalendarUnit::Day => 'D',
            CalendarUnit::Week => 'W',
            CalendarUnit::Month => 'M',
            CalendarUnit::Year => 'Y',
        }
    }
}

/// The window of `count` units containing `now_secs`, as `(start, end)` seconds since the epoch.
pub fn window_at(unit: CalendarUnit, count: u32, now_secs: u64) -> (u64, u64) {
    let n = i64::from(count.max(1));
    let day = i64::try_from(now_secs / 86_400).unwrap_or(i64::MAX / 2);
    let (start_day, end_day) = match unit {
        CalendarUnit::Day => {
            let s = floor_multiple(day, n);
            (s, s + n)
        }
        CalendarUnit::Week => {
            let week = (day - FIRST_MONDAY).div_euclid(7);
            let s = floor_multiple(week, n);
            (FIRST_MONDAY + s * 7, FIRST_MONDAY + (s + n) * 7)
        }
        CalendarUnit::Month => {
            let (y, m, _) = civil_from_days(day);
            let index = (y - 1970) * 12 + i64::from(m) - 1;
            let s = floor_multiple(index, n);
            (month_start(s), month_start(s + n))
        }
        CalendarUnit::Year => {
            let (y, _, _) = civil_from_days(day);
            let s = floor_multiple(y - 1970, n);
            (
                days_from_civil(1970 + s, 1, 1),
                days_from_civil(1970 + s + n, 1, 1),
            )
        }
    };
    (secs(start_day), secs(end_day))
}

/// The first day of the month `index` months after January 1970.
fn month_start(index: i64) -> i64 {
    days_from_civil(
        1970 + index.div_euclid(12),
        (index.rem_euclid(12) + 1) as u32,
        1,
    )
}

fn floor_multiple(x: i64, n: i64) -> i64 {
    x - x.rem_euclid(n)
}

fn secs(day: i64) -> u64 {
    u64::try_from(day.saturating_mul(SECS_PER_DAY)).unwrap_or(0)
}

/// Day number (days since 1970-01-01) of a civil date; `month` is 1..=12.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Count from March 1st, so the leap day is the last day of the counted year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date `(year, month 1..=12, day 1..=31)` of a day number.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Seconds since the epoch of a UTC date and time.
    fn at(y: i64, mo: u32, d: u32, h: u64) -> u64 {
        days_from_civil(y, mo, d) as u64 * 86_400 + h * 3600
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2026, 11, 23), 20_780);
    }

    #[test]
    fn months_are_real_months() {
        // February 2028 is a leap February.
        let (s, e) = window_at(CalendarUnit::Month, 1, at(2028, 2, 15, 12));
        assert_eq!((s, e), (at(2028, 2, 1, 0), at(2028, 3, 1, 0)));
        assert_eq!(e - s, 29 * 86_400);
        // The last second of a month belongs to it; the next starts the next.
        let (s, _) = window_at(CalendarUnit::Month, 1, at(2026, 12, 1, 0) - 1);
        assert_eq!(s, at(2026, 11, 1, 0));
        let (s, e) = window_at(CalendarUnit::Month, 1, at(2026, 12, 1, 0));
        assert_eq!((s, e), (at(2026, 12, 1, 0), at(2027, 1, 1, 0)));
    }

    #[test]
    fn quarters_and_years() {
        let (s, e) = window_at(CalendarUnit::Month, 3, at(2026, 5, 20, 0));
        assert_eq!((s, e), (at(2026, 4, 1, 0), at(2026, 7, 1, 0)));
        let (s, e) = window_at(CalendarUnit::Year, 1, at(2024, 12, 31, 23));
        assert_eq!((s, e), (at(2024, 1, 1, 0), at(2025, 1, 1, 0)));
        assert_eq!(e - s, 366 * 86_400);
    }

    #[test]
    fn iso_weeks_start_on_monday() {
        // Sunday 2026-11-22 belongs to the week that began Monday 2026-11-16.
        let (s, e) = window_at(CalendarUnit::Week, 1, at(2026, 11, 22, 23));
        assert_eq!((s, e), (at(2026, 11, 16, 0), at(2026, 11, 23, 0)));
        let (s, _) = window_at(CalendarUnit::Week, 1, at(2026, 11, 23, 0));
        assert_eq!(s, at(2026, 11, 23, 0));
    }

    #[test]
    fn days() {
        let (s, e) = window_at(CalendarUnit::Day, 1, at(2026, 11, 23, 13));
        assert_eq!((s, e), (at(2026, 11, 23, 0), at(2026, 11, 24, 0)));
    }

    proptest! {
        #[test]
        fn civil_round_trips(days in -800_000i64..800_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn windows_contain_now_and_tile(
            unit in prop_oneof![
                Just(CalendarUnit::Day),
                Just(CalendarUnit::Week),
                Just(CalendarUnit::Month),
                Just(CalendarUnit::Year),
            ],
            count in 1u32..5,
            now in 100_000_000u64..4_000_000_000,
        ) {
            let (s, e) = window_at(unit, count, now);
            prop_assert!(s <= now && now < e);
            // The next window starts where this one ends, and the previous ends where it starts.
            prop_assert_eq!(window_at(unit, count, e).0, e);
            if s > 0 {
                prop_assert_eq!(window_at(unit, count, s - 1).1, s);
            }
        }
    }
}
