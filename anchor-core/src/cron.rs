//! Cron expressions with the semantics of the Go scheduler whose cron syntax the
//! task-definition format (`tasks.yaml`) follows: robfig/cron, which follows Vixie cron.
//!
//! * 5 fields (`minute hour day-of-month month day-of-week`, seconds = 0) or 6 fields with
//!   seconds first (`second minute hour day-of-month month day-of-week`).
//! * Each field is a comma list of items; an item is `*`, a value, a range `a-b`, optionally
//!   followed by a step (`*/5`, `1-10/2`, `5/15` = `5-max/15`). `?` means `*` in the
//!   day-of-month and day-of-week fields.
//! * Months may be written `JAN`–`DEC`, weekdays `SUN`–`SAT` (case-insensitive). Sunday is
//!   `0` or `7`.
//! * When both day-of-month and day-of-week are restricted, a day matching *either* fires
//!   (`0 0 1 * MON` = the 1st of each month and every Monday); when one of them is `*` (or
//!   `?`, without a step larger than 1) the other alone decides. This is robfig's rule: a field
//!   counts as unrestricted when one of its items is `*`/`?` with step 1.
//! * The descriptors `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`)
//!   and `@hourly` are accepted.
//!
//! Fire times are computed on the wall clock of a time zone (UTC unless one is given) and
//! returned in UTC. Around daylight-saving changes a wall-clock time that does not exist (the
//! hour skipped in spring) does not fire, and a wall-clock time that occurs twice (the hour
//! repeated in autumn) fires once, at its first occurrence.
//!
//! ```
//! use anchor_core::cron::CronExpr;
//! use chrono::{TimeZone, Utc};
//!
//! let expr = CronExpr::parse("0 9 * * MON-FRI").unwrap();
//! let after = Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap(); // a Friday
//! let next = expr.next_after(after, None).unwrap();
//! assert_eq!(next, Utc.with_ymd_and_hms(2024, 3, 4, 9, 0, 0).unwrap()); // Monday 09:00
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::offset::LocalResult;
use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// One of the fields of a cron expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CronField {
    /// Seconds (0-59), only in 6-field expressions.
    Second,
    /// Minutes (0-59).
    Minute,
    /// Hours (0-23).
    Hour,
    /// Day of the month (1-31).
    DayOfMonth,
    /// Month (1-12 or JAN-DEC).
    Month,
    /// Day of the week (0-7 or SUN-SAT; 0 and 7 are Sunday).
    DayOfWeek,
}

impl CronField {
    /// The field's name as users read it in messages.
    pub fn name(self) -> &'static str {
        match self {
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        }
    }

    fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Second | CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 7),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            CronField::Month => &[
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ],
            CronField::DayOfWeek => &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
            _ => &[],
        }
    }

    /// The value the first name stands for (`JAN` = 1, `SUN` = 0).
    fn name_base(self) -> u32 {
        match self {
            CronField::Month => 1,
            _ => 0,
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cron expression that could not be parsed.
///
/// `offset` and `len` locate the offending text as a byte range of the expression, so a caller
/// can point at the exact column (the validator does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CronError {
    /// What is wrong, phrased so a user can fix it.
    pub message: String,
    /// The field the problem is in, when it is in one field.
    pub field: Option<CronField>,
    /// Byte offset of the offending text within the expression.
    pub offset: usize,
    /// Byte length of the offending text (0 when it points between characters).
    pub len: usize,
}

/// A parsed cron expression. Parse with [`CronExpr::parse`] (or `str::parse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    source: String,
    has_seconds: bool,
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days_of_month: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    days_of_week: u8,
    dom_unrestricted: bool,
    dow_unrestricted: bool,
}

/// How many years ahead a search looks before concluding an expression has no further fire
/// time. Every satisfiable expression fires at least every 8 years (29 February skips at most
/// one leap year, e.g. 2096 → 2104), so this bound never hides a real fire time.
const SEARCH_YEARS: i32 = 10;

impl CronExpr {
    /// Parses a 5-field or 6-field expression (see the module docs for the syntax).
    ///
    /// ```
    /// use anchor_core::cron::{CronExpr, CronField};
    /// assert!(CronExpr::parse("*/30 * * * * *").is_ok());
    /// let err = CronExpr::parse("0 25 * * *").unwrap_err();
    /// assert_eq!(err.field, Some(CronField::Hour));
    /// assert_eq!(err.offset, 2);
    /// ```
    pub fn parse(expression: &str) -> Result<CronExpr, CronError> {
        let lead = expression.len() - expression.trim_start().len();
        let text = expression.trim();
        if text.is_empty() {
            return Err(CronError {
                message: "the cron expression is empty; write 5 fields (minute hour day-of-month month day-of-week), e.g. `0 * * * *`".into(),
                field: None,
                offset: 0,
                len: 0,
            });
        }
        if let Some(rest) = text.strip_prefix('@') {
            return Self::parse_descriptor(expression, rest, lead);
        }
        if text.starts_with("TZ=") || text.starts_with("CRON_TZ=") {
            let len = text.find(char::is_whitespace).unwrap_or(text.len());
            return Err(CronError {
                message: "a time zone prefix is not supported inside the expression; set `cronjob.timezone` (or `anchor cron --timezone`) instead".into(),
                field: None,
                offset: lead,
                len,
            });
        }
        // Split on whitespace, remembering where each field starts so errors can point at it.
        let mut parts: Vec<(usize, &str)> = Vec::new();
        let mut start: Option<usize> = None;
        for (i, c) in expression.char_indices() {
            if c.is_whitespace() {
                if let Some(s) = start.take() {
                    parts.push((s, &expression[s..i]));
                }
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(s) = start {
            parts.push((s, &expression[s..]));
        }
        let fields: &[CronField] = match parts.len() {
            5 => &[
                CronField::Minute,
                CronField::Hour,
                CronField::DayOfMonth,
                CronField::Month,
                CronField::DayOfWeek,
            ],
            6 => &[
                CronField::Second,
                CronField::Minute,
                CronField::Hour,
                CronField::DayOfMonth,
                CronField::Month,
                CronField::DayOfWeek,
            ],
            n => {
                let hint = if n == 7 {
                    " (a year field is not supported)"
                } else {
                    ""
                };
                return Err(CronError {
                    message: format!(
                        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 fields (second minute hour day-of-month month day-of-week), found {n}{hint}"
                    ),
                    field: None,
                    offset: lead,
                    len: text.len(),
                });
            }
        };
        let mut expr = CronExpr {
            source: text.to_string(),
            has_seconds: parts.len() == 6,
            seconds: 1,
            minutes: 0,
            hours: 0,
            days_of_month: 0,
            months: 0,
            days_of_week: 0,
            dom_unrestricted: false,
            dow_unrestricted: false,
        };
        for (&field, &(offset, part)) in fields.iter().zip(&parts) {
            let (bits, unrestricted) = parse_field(field, part, offset)?;
            match field {
                CronField::Second => expr.seconds = bits,
                CronField::Minute => expr.minutes = bits,
                CronField::Hour => expr.hours = bits as u32,
                CronField::DayOfMonth => {
                    expr.days_of_month = bits as u32;
                    expr.dom_unrestricted = unrestricted;
                }
                CronField::Month => expr.months = bits as u16,
                CronField::DayOfWeek => {
                    // Sunday is both 0 and 7; fold 7 onto 0.
                    let folded = (bits & 0x7f) | ((bits >> 7) & 1);
                    expr.days_of_week = folded as u8;
                    expr.dow_unrestricted = unrestricted;
                }
            }
        }
        if !expr.can_fire() {
            let dom = parts[parts.len() - 3];
            return Err(CronError {
                message: format!(
                    "the expression never fires: no month it allows has the day(s) of month `{}`",
                    dom.1
                ),
                field: Some(CronField::DayOfMonth),
                offset: dom.0,
                len: dom.1.len(),
            });
        }
        Ok(expr)
    }

    fn parse_descriptor(expression: &str, rest: &str, lead: usize) -> Result<CronExpr, CronError> {
        let word = rest.split_whitespace().next().unwrap_or("");
        let equivalent = match word.to_ascii_lowercase().as_str() {
            "yearly" | "annually" => "0 0 0 1 1 *",
            "monthly" => "0 0 0 1 * *",
            "weekly" => "0 0 0 * * 0",
            "daily" | "midnight" => "0 0 0 * * *",
            "hourly" => "0 0 * * * *",
            "every" => {
                return Err(CronError {
                    message: "`@every` is not supported; write the interval as fields, e.g. `*/5 * * * *` for every 5 minutes or `*/30 * * * * *` for every 30 seconds".into(),
                    field: None,
                    offset: lead,
                    len: expression.trim().len(),
                })
            }
            _ => {
                return Err(CronError {
                    message: format!(
                        "unknown descriptor `@{word}`; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
                    ),
                    field: None,
                    offset: lead,
                    len: word.len() + 1,
                })
            }
        };
        if rest.trim() != word {
            return Err(CronError {
                message: format!("`@{word}` takes no further fields"),
                field: None,
                offset: lead,
                len: expression.trim().len(),
            });
        }
        let mut expr = CronExpr::parse(equivalent)?;
        expr.source = expression.trim().to_string();
        Ok(expr)
    }

    /// The expression as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True for a 6-field expression (seconds first).
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    /// Whether any calendar day can ever match (rejects e.g. `0 0 30 2 *`).
    fn can_fire(&self) -> bool {
        if !self.dow_unrestricted {
            // A restricted weekday list ORs with (or, with `*` in day-of-month, ANDs with
            // every day): every month contains every weekday, so some day always matches.
            return self.days_of_week != 0;
        }
        const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12u32).any(|month| {
            self.months & (1 << month) != 0
                && (1..=LONGEST[month as usize - 1]).any(|day| self.days_of_month & (1 << day) != 0)
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_unrestricted || self.dow_unrestricted {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first wall-clock time at or after `start` that matches, searching a bounded number
    /// of years ahead.
    fn next_naive_at_or_after(&self, start: NaiveDateTime) -> Option<NaiveDateTime> {
        let limit = start.year().checked_add(SEARCH_YEARS)?;
        let mut date = start.date();
        let mut time = start.time();
        loop {
            if date.year() > limit {
                return None;
            }
            if self.months & (1 << date.month()) == 0 {
                date = match next_bit(self.months as u64, date.month() + 1, 12) {
                    Some(month) => NaiveDate::from_ymd_opt(date.year(), month, 1)?,
                    None => NaiveDate::from_ymd_opt(
                        date.year().checked_add(1)?,
                        next_bit(self.months as u64, 1, 12)?,
                        1,
                    )?,
                };
                time = NaiveTime::MIN;
                continue;
            }
            if !self.day_matches(date) {
                date = date.succ_opt()?;
                time = NaiveTime::MIN;
                continue;
            }
            let Some(hour) = next_bit(self.hours as u64, time.hour(), 23) else {
                date = date.succ_opt()?;
                time = NaiveTime::MIN;
                continue;
            };
            if hour != time.hour() {
                time = NaiveTime::from_hms_opt(hour, 0, 0)?;
            }
            let Some(minute) = next_bit(self.minutes, time.minute(), 59) else {
                // No matching minute left in this hour: go to the start of the next hour.
                match time.hour() {
                    23 => {
                        date = date.succ_opt()?;
                        time = NaiveTime::MIN;
                    }
                    h => time = NaiveTime::from_hms_opt(h + 1, 0, 0)?,
                }
                continue;
            };
            if minute != time.minute() {
                time = NaiveTime::from_hms_opt(time.hour(), minute, 0)?;
            }
            let Some(second) = next_bit(self.seconds, time.second(), 59) else {
                let (next, wrapped) =
                    time.overflowing_add_signed(Duration::seconds(60 - i64::from(time.second())));
                if wrapped != 0 {
                    date = date.succ_opt()?;
                }
                time = next;
                continue;
            };
            return NaiveTime::from_hms_opt(time.hour(), time.minute(), second)
                .map(|t| date.and_time(t));
        }
    }

    /// The first fire time strictly after `after`, computed on the wall clock of `tz` (UTC when
    /// `None`) and returned in UTC. `None` when the expression has no fire time within the
    /// search horizon (which only happens near the end of chrono's supported range).
    ///
    /// ```
    /// use anchor_core::cron::CronExpr;
    /// use chrono::{TimeZone, Utc};
    /// let expr = CronExpr::parse("0 0 2 * * *").unwrap(); // 02:00 daily
    /// let after = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    /// let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    /// // 02:00 in Berlin (UTC+1 in winter) is 01:00 UTC.
    /// assert_eq!(expr.next_after(after, Some(berlin)), Some(Utc.with_ymd_and_hms(2024, 1, 1, 1, 0, 0).unwrap()));
    /// ```
    pub fn next_after(&self, after: DateTime<Utc>, tz: Option<Tz>) -> Option<DateTime<Utc>> {
        match tz {
            None => self.next_after_in(after, &Utc),
            Some(tz) => self.next_after_in(after, &tz),
        }
    }

    fn next_after_in<Z: TimeZone>(&self, after: DateTime<Utc>, zone: &Z) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(zone).naive_local();
        // Truncate to whole seconds, then step one second: the result is strictly after `after`.
        let mut candidate = local
            .with_nanosecond(0)?
            .checked_add_signed(Duration::seconds(1))?;
        loop {
            let wall = self.next_naive_at_or_after(candidate)?;
            match zone.from_local_datetime(&wall) {
                LocalResult::Single(t) => {
                    let t = t.with_timezone(&Utc);
                    if t > after {
                        return Some(t);
                    }
                }
                // A repeated wall-clock time fires once, at its first occurrence. When `after`
                // is already past that occurrence this time is done; look further.
                LocalResult::Ambiguous(first, _) => {
                    let t = first.with_timezone(&Utc);
                    if t > after {
                        return Some(t);
                    }
                }
                // A wall-clock time skipped by a DST change does not fire.
                LocalResult::None => {}
            }
            candidate = wall.checked_add_signed(Duration::seconds(1))?;
        }
    }

    /// The fire times strictly after `after`, in order (see [`CronExpr::next_after`]).
    ///
    /// ```
    /// use anchor_core::cron::CronExpr;
    /// use chrono::{TimeZone, Utc};
    /// let expr = CronExpr::parse("*/20 * * * *").unwrap();
    /// let after = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    /// let times: Vec<_> = expr.upcoming(after, None).take(3).map(|t| t.to_rfc3339()).collect();
    /// assert_eq!(times, ["2024-01-01T00:20:00+00:00", "2024-01-01T00:40:00+00:00", "2024-01-01T01:00:00+00:00"]);
    /// ```
    pub fn upcoming(&self, after: DateTime<Utc>, tz: Option<Tz>) -> Upcoming<'_> {
        Upcoming {
            expr: self,
            tz,
            last: Some(after),
        }
    }
}

impl FromStr for CronExpr {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronExpr::parse(s)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The iterator returned by [`CronExpr::upcoming`].
#[derive(Debug, Clone)]
pub struct Upcoming<'a> {
    expr: &'a CronExpr,
    tz: Option<Tz>,
    last: Option<DateTime<Utc>>,
}

impl Iterator for Upcoming<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.expr.next_after(self.last?, self.tz);
        self.last = next;
        next
    }
}

/// A cron expression together with the time zone whose wall clock it runs on: what a
/// `cronjob` block describes and what the runtime's scheduler evaluates.
///
/// ```
/// use anchor_core::cron::Schedule;
/// use chrono::{TimeZone, Utc};
/// let schedule = Schedule::new("0 9 * * *", Some("Europe/Berlin")).unwrap();
/// let after = Utc.with_ymd_and_hms(2024, 7, 1, 0, 0, 0).unwrap();
/// // 09:00 in Berlin in summer (UTC+2) is 07:00 UTC.
/// assert_eq!(schedule.next_after(after), Some(Utc.with_ymd_and_hms(2024, 7, 1, 7, 0, 0).unwrap()));
/// assert!(Schedule::new("0 9 * * *", Some("Europe/Berln")).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    expr: CronExpr,
    timezone: Option<Tz>,
}

/// Why a [`Schedule`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is invalid.
    #[error("invalid cron expression: {0}")]
    Expression(#[from] CronError),
    /// The time zone is unknown.
    #[error(transparent)]
    Timezone(#[from] TimezoneError),
}

impl Schedule {
    /// Parses an expression and an optional IANA time zone name (UTC when `None`).
    pub fn new(expression: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        Ok(Schedule {
            expr: CronExpr::parse(expression)?,
            timezone: timezone.map(parse_timezone).transpose()?,
        })
    }

    /// The expression.
    pub fn expr(&self) -> &CronExpr {
        &self.expr
    }

    /// The time zone, `None` for UTC.
    pub fn timezone(&self) -> Option<Tz> {
        self.timezone
    }

    /// The first fire time strictly after `after` (see [`CronExpr::next_after`]).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.expr.next_after(after, self.timezone)
    }

    /// The fire times strictly after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>) -> Upcoming<'_> {
        self.expr.upcoming(after, self.timezone)
    }
}

/// A time zone name that is not in the IANA database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone `{name}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_else(|| "; use an IANA name such as `UTC`, `Europe/Berlin` or `America/New_York`".into()))]
pub struct TimezoneError {
    /// The name that was given.
    pub name: String,
    /// The closest known name, when one is close.
    pub suggestion: Option<String>,
}

/// Parses an IANA time zone name (`Europe/Berlin`), suggesting the closest name when it is
/// misspelt.
///
/// ```
/// assert!(anchor_core::cron::parse_timezone("Europe/Berlin").is_ok());
/// let err = anchor_core::cron::parse_timezone("europe/berlin").unwrap_err();
/// assert_eq!(err.suggestion.as_deref(), Some("Europe/Berlin"));
/// ```
pub fn parse_timezone(name: &str) -> Result<Tz, TimezoneError> {
    if let Ok(tz) = name.parse::<Tz>() {
        return Ok(tz);
    }
    let lower = name.to_ascii_lowercase();
    let suggestion = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| tz.name())
        .map(|candidate| {
            (
                strsim::jaro_winkler(&lower, &candidate.to_ascii_lowercase()),
                candidate,
            )
        })
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate.to_string());
    Err(TimezoneError {
        name: name.to_string(),
        suggestion,
    })
}

/// The lowest set bit of `mask` in `from..=max`.
fn next_bit(mask: u64, from: u32, max: u32) -> Option<u32> {
    if from > max {
        return None;
    }
    let shifted = mask >> from;
    if shifted == 0 {
        return None;
    }
    let bit = from + shifted.trailing_zeros();
    (bit <= max).then_some(bit)
}

/// Parses one field into a bit set, and whether it counts as unrestricted (`*`/`?`, step 1).
fn parse_field(field: CronField, text: &str, offset: usize) -> Result<(u64, bool), CronError> {
    let mut bits = 0u64;
    let mut unrestricted = false;
    let mut item_offset = offset;
    for item in text.split(',') {
        let (item_bits, item_star) = parse_item(field, item, item_offset)?;
        bits |= item_bits;
        unrestricted |= item_star;
        item_offset += item.len() + 1;
    }
    Ok((bits, unrestricted))
}

fn parse_item(field: CronField, item: &str, offset: usize) -> Result<(u64, bool), CronError> {
    let err = |message: String, at: usize, len: usize| CronError {
        message,
        field: Some(field),
        offset: at,
        len,
    };
    let (min, max) = field.bounds();
    if item.is_empty() {
        return Err(err(
            format!("empty item in the {field} field; remove the extra comma"),
            offset,
            0,
        ));
    }
    let (range, step_text) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    let step = match step_text {
        None => 1,
        Some(step) => {
            let at = offset + range.len() + 1;
            match step.parse::<u32>() {
                Ok(0) => {
                    return Err(err(
                        format!("the step in `{item}` must be at least 1"),
                        at,
                        step.len(),
                    ))
                }
                Ok(n) => n,
                Err(_) => {
                    return Err(err(
                        format!("the step `{step}` in `{item}` is not a positive number"),
                        at,
                        step.len(),
                    ))
                }
            }
        }
    };
    let star = range == "*" || range == "?";
    if range == "?" && !matches!(field, CronField::DayOfMonth | CronField::DayOfWeek) {
        return Err(err(
            format!("`?` is only allowed in the day-of-month and day-of-week fields; use `*` in the {field} field"),
            offset,
            1,
        ));
    }
    // Sunday may be written 7, but a `*` or `N/step` runs to Saturday (6), as in robfig, so
    // `MON/2` is Mon, Wed, Fri and never Sunday.
    let implicit_max = if field == CronField::DayOfWeek {
        6
    } else {
        max
    };
    let (start, end) = if star {
        (min, implicit_max)
    } else if let Some((low, high)) = range.split_once('-') {
        let start = parse_value(field, low, offset)?;
        let end = parse_value(field, high, offset + low.len() + 1)?;
        if start > end {
            return Err(err(
                format!(
                    "the range `{range}` runs backwards ({start} is after {end}); ranges do not wrap around, so write two ranges, e.g. `{start}-{max},{min}-{end}`"
                ),
                offset,
                range.len(),
            ));
        }
        (start, end)
    } else {
        let value = parse_value(field, range, offset)?;
        // `N/step` means `N-max/step` (robfig); a plain `N` is just `N`.
        (
            value,
            if step_text.is_some() {
                implicit_max.max(value)
            } else {
                value
            },
        )
    };
    let mut bits = 0u64;
    let mut value = start;
    while value <= end {
        bits |= 1 << value;
        value = value.saturating_add(step);
    }
    Ok((bits, star && step == 1))
}

fn parse_value(field: CronField, text: &str, offset: usize) -> Result<u32, CronError> {
    let (min, max) = field.bounds();
    let err = |message: String| CronError {
        message,
        field: Some(field),
        offset,
        len: text.len(),
    };
    if text.is_empty() {
        return Err(err(format!("a value is missing in the {field} field")));
    }
    if let Ok(value) = text.parse::<u32>() {
        if value < min || value > max {
            let extra = match field {
                CronField::DayOfWeek => " (0 and 7 are Sunday)",
                _ => "",
            };
            return Err(err(format!(
                "{value} is out of range for the {field} field; allowed: {min}-{max}{extra}"
            )));
        }
        return Ok(value);
    }
    let lower = text.to_ascii_lowercase();
    if let Some(index) = field.names().iter().position(|name| *name == lower) {
        return Ok(index as u32 + field.name_base());
    }
    let allowed = match field {
        CronField::Month => format!("{min}-{max} or JAN-DEC"),
        CronField::DayOfWeek => format!("{min}-{max} (0 and 7 are Sunday) or SUN-SAT"),
        _ => format!("{min}-{max}"),
    };
    Err(err(format!(
        "`{text}` is not a valid value for the {field} field; allowed: {allowed}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str) -> String {
        CronExpr::parse(expr)
            .unwrap()
            .next_after(utc(after), None)
            .unwrap()
            .to_rfc3339()
    }

    fn next_n(expr: &str, after: &str, tz: Option<&str>, n: usize) -> Vec<String> {
        let tz = tz.map(|name| parse_timezone(name).unwrap());
        CronExpr::parse(expr)
            .unwrap()
            .upcoming(utc(after), tz)
            .take(n)
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn five_fields_fire_on_the_minute() {
        assert_eq!(
            next("* * * * *", "2024-01-01T00:00:00Z"),
            "2024-01-01T00:01:00+00:00"
        );
        assert_eq!(
            next("* * * * *", "2024-01-01T00:00:30Z"),
            "2024-01-01T00:01:00+00:00"
        );
        assert_eq!(
            next("0 * * * *", "2024-01-01T00:00:00Z"),
            "2024-01-01T01:00:00+00:00"
        );
    }

    #[test]
    fn six_fields_have_seconds_first() {
        assert_eq!(
            next("*/30 * * * * *", "2024-01-01T00:00:00Z"),
            "2024-01-01T00:00:30+00:00"
        );
        assert_eq!(
            next("0 0 2 * * *", "2024-01-01T02:00:00Z"),
            "2024-01-02T02:00:00+00:00"
        );
        assert_eq!(
            next("0 0 */6 * * *", "2024-01-01T05:59:59Z"),
            "2024-01-01T06:00:00+00:00"
        );
        assert!(CronExpr::parse("0 0 2 * * *").unwrap().has_seconds());
        assert!(!CronExpr::parse("0 2 * * *").unwrap().has_seconds());
    }

    #[test]
    fn strictly_after_with_subsecond_input() {
        let expr = CronExpr::parse("* * * * * *").unwrap();
        let after = utc("2024-01-01T00:00:00.250Z");
        assert_eq!(
            expr.next_after(after, None).unwrap(),
            utc("2024-01-01T00:00:01Z")
        );
    }

    #[test]
    fn sunday_is_zero_or_seven() {
        // 2024-03-03 is a Sunday.
        assert_eq!(
            next("0 0 * * 0", "2024-03-01T00:00:00Z"),
            "2024-03-03T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 7", "2024-03-01T00:00:00Z"),
            "2024-03-03T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * SUN", "2024-03-01T00:00:00Z"),
            "2024-03-03T00:00:00+00:00"
        );
        assert_eq!(
            CronExpr::parse("0 0 * * 0").unwrap().days_of_week,
            CronExpr::parse("0 0 * * 7").unwrap().days_of_week
        );
        // 5-7 is Friday, Saturday, Sunday.
        assert_eq!(
            next_n("0 0 * * 5-7", "2024-03-01T00:00:00Z", None, 3),
            [
                "2024-03-02T00:00:00+00:00",
                "2024-03-03T00:00:00+00:00",
                "2024-03-08T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn weekday_and_month_names_are_case_insensitive() {
        assert_eq!(
            CronExpr::parse("0 9 * * mon-FRI").unwrap().days_of_week,
            CronExpr::parse("0 9 * * 1-5").unwrap().days_of_week
        );
        assert_eq!(
            next("0 0 1 jan,Jul *", "2024-02-01T00:00:00Z"),
            "2024-07-01T00:00:00+00:00"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_restricted() {
        // The 15th of each month OR every Monday. 2024-03-11 is a Monday.
        assert_eq!(
            next_n("0 0 15 * MON", "2024-03-09T00:00:00Z", None, 3),
            [
                "2024-03-11T00:00:00+00:00",
                "2024-03-15T00:00:00+00:00",
                "2024-03-18T00:00:00+00:00"
            ]
        );
        // With `*` (or `?`) in one field the other alone decides (AND with "every day").
        assert_eq!(
            next("0 0 15 * *", "2024-03-09T00:00:00Z"),
            "2024-03-15T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 ? * MON", "2024-03-09T00:00:00Z"),
            "2024-03-11T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 0 15 * ?", "2024-03-09T00:00:00Z"),
            "2024-03-15T00:00:00+00:00"
        );
        // robfig: `*/2` is not a star, so both fields are restricted and OR applies.
        assert_eq!(
            next_n("0 0 */10 * MON", "2024-03-09T00:00:00Z", None, 3),
            [
                "2024-03-11T00:00:00+00:00",
                "2024-03-18T00:00:00+00:00",
                "2024-03-21T00:00:00+00:00"
            ]
        );
        // `*/1` is still a star: Mondays only.
        assert_eq!(
            next("0 0 */1 * MON", "2024-03-09T00:00:00Z"),
            "2024-03-11T00:00:00+00:00"
        );
    }

    #[test]
    fn ranges_steps_and_lists() {
        assert_eq!(
            next_n("1-10/3 * * * *", "2024-01-01T00:00:00Z", None, 5),
            [
                "2024-01-01T00:01:00+00:00",
                "2024-01-01T00:04:00+00:00",
                "2024-01-01T00:07:00+00:00",
                "2024-01-01T00:10:00+00:00",
                "2024-01-01T01:01:00+00:00"
            ]
        );
        // `N/step` means `N-max/step`.
        assert_eq!(
            next_n("5/20 * * * *", "2024-01-01T00:00:00Z", None, 3),
            [
                "2024-01-01T00:05:00+00:00",
                "2024-01-01T00:25:00+00:00",
                "2024-01-01T00:45:00+00:00"
            ]
        );
        assert_eq!(
            next_n("0 8,12,18 * * *", "2024-01-01T09:00:00Z", None, 3),
            [
                "2024-01-01T12:00:00+00:00",
                "2024-01-01T18:00:00+00:00",
                "2024-01-02T08:00:00+00:00"
            ]
        );
    }

    #[test]
    fn month_ends_and_leap_years() {
        // The 31st skips months without one.
        assert_eq!(
            next_n("0 0 31 * *", "2024-01-31T00:00:00Z", None, 3),
            [
                "2024-03-31T00:00:00+00:00",
                "2024-05-31T00:00:00+00:00",
                "2024-07-31T00:00:00+00:00"
            ]
        );
        // 29 February only in leap years; 2100 is not one.
        assert_eq!(
            next("0 0 29 2 *", "2024-03-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 29 2 *", "2096-03-01T00:00:00Z"),
            "2104-02-29T00:00:00+00:00"
        );
        // Year rollover.
        assert_eq!(
            next("0 0 1 1 *", "2024-12-31T23:59:59Z"),
            "2025-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("59 23 31 12 *", "2024-06-01T00:00:00Z"),
            "2024-12-31T23:59:00+00:00"
        );
    }

    #[test]
    fn descriptors() {
        assert_eq!(
            next("@daily", "2024-01-01T10:00:00Z"),
            "2024-01-02T00:00:00+00:00"
        );
        assert_eq!(
            next("@hourly", "2024-01-01T10:00:00Z"),
            "2024-01-01T11:00:00+00:00"
        );
        assert_eq!(
            next("@weekly", "2024-03-01T10:00:00Z"),
            "2024-03-03T00:00:00+00:00"
        );
        assert_eq!(
            next("@monthly", "2024-03-01T10:00:00Z"),
            "2024-04-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@yearly", "2024-03-01T10:00:00Z"),
            "2025-01-01T00:00:00+00:00"
        );
        assert!(CronExpr::parse("@every 5m").is_err());
        assert!(CronExpr::parse("@sometimes").is_err());
    }

    #[test]
    fn timezones_shift_the_wall_clock() {
        // 09:00 in New York during winter (UTC-5) and summer (UTC-4).
        assert_eq!(
            next_n(
                "0 9 * * *",
                "2024-01-10T00:00:00Z",
                Some("America/New_York"),
                1
            ),
            ["2024-01-10T14:00:00+00:00"]
        );
        assert_eq!(
            next_n(
                "0 9 * * *",
                "2024-07-10T00:00:00Z",
                Some("America/New_York"),
                1
            ),
            ["2024-07-10T13:00:00+00:00"]
        );
    }

    #[test]
    fn spring_forward_skips_the_missing_hour() {
        // 2024-03-10 02:00 local does not exist in New York (clocks jump 02:00 → 03:00).
        assert_eq!(
            next_n(
                "30 2 * * *",
                "2024-03-09T12:00:00Z",
                Some("America/New_York"),
                2
            ),
            ["2024-03-11T06:30:00+00:00", "2024-03-12T06:30:00+00:00"]
        );
        // Hourly jobs continue across the gap without a duplicate.
        assert_eq!(
            next_n(
                "0 * * * *",
                "2024-03-10T05:30:00Z",
                Some("America/New_York"),
                3
            ),
            [
                "2024-03-10T06:00:00+00:00",
                "2024-03-10T07:00:00+00:00",
                "2024-03-10T08:00:00+00:00"
            ]
        );
    }

    #[test]
    fn fall_back_fires_a_repeated_time_once() {
        // 2024-11-03 01:00-02:00 local happens twice in New York (EDT, then EST).
        assert_eq!(
            next_n(
                "30 1 * * *",
                "2024-11-02T12:00:00Z",
                Some("America/New_York"),
                2
            ),
            ["2024-11-03T05:30:00+00:00", "2024-11-04T06:30:00+00:00"]
        );
        // Every 30 minutes: 00:30 EDT, 01:00 EDT, 01:30 EDT, then (the repeated hour is
        // skipped) 02:00 EST.
        assert_eq!(
            next_n(
                "*/30 * * * *",
                "2024-11-03T04:00:00Z",
                Some("America/New_York"),
                4
            ),
            [
                "2024-11-03T04:30:00+00:00",
                "2024-11-03T05:00:00+00:00",
                "2024-11-03T05:30:00+00:00",
                "2024-11-03T07:00:00+00:00"
            ]
        );
        // Asked from inside the second pass of the repeated hour, the next time is 02:00 EST.
        assert_eq!(
            next_n(
                "*/30 * * * *",
                "2024-11-03T06:10:00Z",
                Some("America/New_York"),
                1
            ),
            ["2024-11-03T07:00:00+00:00"]
        );
    }

    /// Cases from robfig/cron v3's own `TestNext` and `TestActivation` tables (times there are
    /// local; UTC here), so `anchor cron` agrees with the Go scheduler whose semantics
    /// `tasks.yaml` follows.
    #[test]
    fn agrees_with_robfig_next_table() {
        let cases = [
            (
                "2012-07-09T14:45:00Z",
                "0 0/15 * * * *",
                "2012-07-09T15:00:00+00:00",
            ),
            (
                "2012-07-09T14:59:00Z",
                "0 0/15 * * * *",
                "2012-07-09T15:00:00+00:00",
            ),
            (
                "2012-07-09T14:59:59Z",
                "0 0/15 * * * *",
                "2012-07-09T15:00:00+00:00",
            ),
            (
                "2012-07-09T15:45:00Z",
                "0 20-35/15 * * * *",
                "2012-07-09T16:20:00+00:00",
            ),
            (
                "2012-07-09T23:46:00Z",
                "0 */15 * * * *",
                "2012-07-10T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:45:00Z",
                "0 20-35/15 * * * *",
                "2012-07-10T00:20:00+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "15/35 20-35/15 * * * *",
                "2012-07-10T00:20:15+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "15/35 20-35/15 1/2 * * *",
                "2012-07-10T01:20:15+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "15/35 20-35/15 10-12 * * *",
                "2012-07-10T10:20:15+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "15/35 20-35/15 1/2 */2 * *",
                "2012-07-11T01:20:15+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "15/35 20-35/15 * 9-20 * *",
                "2012-07-10T00:20:15+00:00",
            ),
            (
                "2012-07-09T23:35:51Z",
                "15/35 20-35/15 * 9-20 Jul *",
                "2012-07-10T00:20:15+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 0 9 Apr-Oct ?",
                "2012-08-09T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 0 */5 Apr,Aug,Oct Mon",
                "2012-08-01T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 0 */5 Oct Mon",
                "2012-10-01T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 0 * Feb Mon",
                "2013-02-04T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 0 * Feb Mon/2",
                "2013-02-01T00:00:00+00:00",
            ),
            (
                "2012-12-31T23:59:45Z",
                "0 * * * * *",
                "2013-01-01T00:00:00+00:00",
            ),
            (
                "2012-07-09T23:35:00Z",
                "0 0 0 29 Feb ?",
                "2016-02-29T00:00:00+00:00",
            ),
        ];
        for (after, expr, expected) in cases {
            assert_eq!(next(expr, after), expected, "{expr} after {after}");
        }
        // Activation: DOM/DOW interaction (2012-07-15 is a Sunday).
        let fires_at = |expr: &str, at: &str| {
            let at = utc(at);
            CronExpr::parse(expr)
                .unwrap()
                .next_after(at - Duration::seconds(1), None)
                == Some(at)
        };
        assert!(fires_at("* * 1,15 * Sun", "2012-07-15T00:00:00Z"));
        assert!(fires_at("* * 1,15 * Sun", "2012-06-15T00:00:00Z"));
        assert!(fires_at("* * 1,15 * Sun", "2012-08-01T00:00:00Z"));
        assert!(fires_at("* * */10 * Sun", "2012-07-15T00:00:00Z"));
        assert!(!fires_at("* * * * Mon", "2012-07-15T00:00:00Z"));
        assert!(!fires_at("* * 1,15 * *", "2012-07-09T00:00:00Z"));
        assert!(fires_at("* * 1,15 * *", "2012-07-15T00:00:00Z"));
        assert!(fires_at("* * */2 * Sun", "2012-07-15T00:00:00Z"));
        assert!(fires_at("30 08 ? Jul Sun", "2012-07-15T08:30:00Z"));
        assert!(!fires_at("30 08 ? Jul Sun", "2012-07-16T08:30:00Z"));
        assert!(fires_at("5/15 * * * *", "2012-07-09T15:50:00Z"));
        // `MON/2` is Monday, Wednesday, Friday: never Sunday.
        assert_eq!(
            CronExpr::parse("0 0 * * MON/2").unwrap().days_of_week,
            0b0010_1010
        );
    }

    /// robfig's time-zone cases (America/New_York, America/Sao_Paulo). Where robfig fires a
    /// repeated autumn hour twice, anchor fires it once (the documented difference).
    #[test]
    fn agrees_with_robfig_time_zone_table() {
        let cases = [
            (
                "2012-03-11T00:00:00-05:00",
                "0 30 2 11 Mar ?",
                "2013-03-11T02:30:00-04:00",
            ),
            (
                "2012-03-11T00:00:00-05:00",
                "0 0 * * * ?",
                "2012-03-11T01:00:00-05:00",
            ),
            (
                "2012-03-11T01:00:00-05:00",
                "0 0 * * * ?",
                "2012-03-11T03:00:00-04:00",
            ),
            (
                "2012-03-11T03:00:00-04:00",
                "0 0 * * * ?",
                "2012-03-11T04:00:00-04:00",
            ),
            (
                "2012-03-11T00:00:00-05:00",
                "0 0 1 * * ?",
                "2012-03-11T01:00:00-05:00",
            ),
            (
                "2012-03-11T01:00:00-05:00",
                "0 0 1 * * ?",
                "2012-03-12T01:00:00-04:00",
            ),
            (
                "2012-03-11T00:00:00-05:00",
                "0 0 2 * * ?",
                "2012-03-12T02:00:00-04:00",
            ),
            (
                "2012-11-04T00:00:00-04:00",
                "0 30 2 04 Nov ?",
                "2012-11-04T02:30:00-05:00",
            ),
            (
                "2012-11-04T00:00:00-04:00",
                "0 0 * * * ?",
                "2012-11-04T01:00:00-04:00",
            ),
            (
                "2012-11-04T00:00:00-04:00",
                "0 0 1 * * ?",
                "2012-11-04T01:00:00-04:00",
            ),
            (
                "2012-11-04T00:00:00-04:00",
                "0 0 2 * * ?",
                "2012-11-04T02:00:00-05:00",
            ),
            (
                "2012-11-04T02:00:00-05:00",
                "0 0 2 * * ?",
                "2012-11-05T02:00:00-05:00",
            ),
            (
                "2012-11-04T00:00:00-04:00",
                "0 0 3 * * ?",
                "2012-11-04T03:00:00-05:00",
            ),
            (
                "2012-11-04T00:00:00-04:00",
                "0 0 3 3 * ?",
                "2012-12-03T03:00:00-05:00",
            ),
            // robfig: 01:00 EDT then 01:00 EST; anchor: the repeated 01:00 fires once.
            (
                "2012-11-04T01:00:00-04:00",
                "0 0 * * * ?",
                "2012-11-04T02:00:00-05:00",
            ),
            (
                "2012-11-04T01:00:00-04:00",
                "0 0 1 * * ?",
                "2012-11-05T01:00:00-05:00",
            ),
        ];
        let new_york = parse_timezone("America/New_York").unwrap();
        for (after, expr, expected) in cases {
            let got = CronExpr::parse(expr)
                .unwrap()
                .next_after(utc(after), Some(new_york));
            assert_eq!(got, Some(utc(expected)), "{expr} after {after}");
        }
        // Midnight does not exist on some DST days in São Paulo (robfig issue 157).
        let sao_paulo = parse_timezone("America/Sao_Paulo").unwrap();
        let got = CronExpr::parse("0 0 9 10 * ?")
            .unwrap()
            .next_after(utc("2018-10-17T05:00:00-04:00"), Some(sao_paulo));
        assert_eq!(got, Some(utc("2018-11-10T06:00:00-05:00")));
        let got = CronExpr::parse("0 0 9 22 * ?")
            .unwrap()
            .next_after(utc("2018-02-14T05:00:00-05:00"), Some(sao_paulo));
        assert_eq!(got, Some(utc("2018-02-22T07:00:00-05:00")));
    }

    #[test]
    fn errors_point_at_the_field() {
        let cases: &[(&str, Option<CronField>, usize, &str)] = &[
            ("0 25 * * *", Some(CronField::Hour), 2, "out of range"),
            ("60 * * * * *", Some(CronField::Second), 0, "out of range"),
            (
                "* * * * 8",
                Some(CronField::DayOfWeek),
                8,
                "0 and 7 are Sunday",
            ),
            ("* * 0 * *", Some(CronField::DayOfMonth), 4, "allowed: 1-31"),
            ("* * * 13 *", Some(CronField::Month), 6, "allowed: 1-12"),
            ("* * * FOO *", Some(CronField::Month), 6, "JAN-DEC"),
            ("* * * * MONDAY", Some(CronField::DayOfWeek), 8, "SUN-SAT"),
            ("*/0 * * * *", Some(CronField::Minute), 2, "at least 1"),
            ("1,,2 * * * *", Some(CronField::Minute), 2, "empty item"),
            (
                "0 0 * * FRI-MON",
                Some(CronField::DayOfWeek),
                8,
                "runs backwards",
            ),
            ("? * * * *", Some(CronField::Minute), 0, "only allowed"),
            ("* * * *", None, 0, "found 4"),
            ("0 0 0 1 1 * 2024", None, 0, "year field"),
            ("", None, 0, "empty"),
            ("0 0 30 2 *", Some(CronField::DayOfMonth), 4, "never fires"),
            ("TZ=UTC 0 * * * *", None, 0, "cronjob.timezone"),
            (
                "99999999999 * * * *",
                Some(CronField::Minute),
                0,
                "not a valid value",
            ),
        ];
        for (expr, field, offset, needle) in cases {
            let err = CronExpr::parse(expr).expect_err(expr);
            assert_eq!(err.field, *field, "{expr}: {err}");
            assert_eq!(err.offset, *offset, "{expr}: {err}");
            assert!(err.message.contains(needle), "{expr}: {err}");
        }
    }

    #[test]
    fn huge_steps_do_not_overflow() {
        let expr = CronExpr::parse("1/4294967295 * * * *").unwrap();
        assert_eq!(expr.minutes, 1 << 1);
        assert!(CronExpr::parse("*/4294967296 * * * *").is_err());
    }

    #[test]
    fn timezone_names() {
        assert!(parse_timezone("UTC").is_ok());
        assert!(parse_timezone("America/New_York").is_ok());
        let err = parse_timezone("America/New_Yrok").unwrap_err();
        assert_eq!(err.suggestion.as_deref(), Some("America/New_York"));
        assert!(parse_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn far_future_ends_without_panicking() {
        let expr = CronExpr::parse("* * * * *").unwrap();
        assert!(expr.next_after(DateTime::<Utc>::MAX_UTC, None).is_none());
    }
}
