//! Properties of cron parsing and scheduling over random input: parsing never panics, and
//! the fire times of any valid expression are strictly increasing, strictly after the start,
//! and each one is the next fire time after the previous one.

use anchor_core::cron::{parse_timezone, CronExpr};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

const ITEMS: &[&str] = &[
    "*", "?", "0", "1", "5", "7", "15", "29", "30", "31", "59", "*/5", "*/7", "1-5", "2/3", "MON",
    "sun", "FRI-SAT", "JAN", "feb", "1,15", "0-6/2", "60", "-", "/", ",", "L", "",
];

fn expression() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(ITEMS), 0..8)
        .prop_map(|items| items.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parsing_random_text_never_panics(text in "\\PC{0,40}") {
        let _ = CronExpr::parse(&text);
    }

    #[test]
    fn fire_times_are_ordered_and_consistent(
        expr in expression(),
        start in 0i64..4_000_000_000,
        zone in proptest::sample::select(&["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"][..]),
    ) {
        let Ok(parsed) = CronExpr::parse(&expr) else { return Ok(()) };
        let tz = parse_timezone(zone).ok();
        let start: DateTime<Utc> = Utc.timestamp_opt(start, 0).single().expect("in range");
        let mut previous = start;
        for time in parsed.upcoming(start, tz).take(5) {
            prop_assert!(time > previous, "{expr}: {time} not after {previous}");
            // Nothing fires in between: the next time after (time - 1s) is time itself.
            prop_assert_eq!(parsed.next_after(time - Duration::seconds(1), tz), Some(time));
            previous = time;
        }
    }
}
