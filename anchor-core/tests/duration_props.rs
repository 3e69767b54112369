//! `parse_duration` over random input: it never panics, however large the numbers, and what
//! it accepts is a positive duration.

use std::time::Duration;

use anchor_core::parse_duration;
use proptest::prelude::*;

const UNITS: &[&str] = &[
    "ns", "us", "µs", "ms", "s", "sec", "m", "min", "h", "hr", "d", "w", "M", "y", "parsecs", "",
];

/// A number: up to 25 digits (far past u64), sometimes with a fraction.
fn number() -> impl Strategy<Value = String> {
    (
        "[0-9]{1,25}",
        proptest::option::of("[0-9]{0,22}"),
        prop_oneof![Just(""), Just(" ")],
    )
        .prop_map(|(int, frac, space)| match frac {
            Some(frac) => format!("{int}.{frac}{space}"),
            None => format!("{int}{space}"),
        })
}

fn duration_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (
            number(),
            proptest::sample::select(UNITS),
            prop_oneof![Just(""), Just(" ")],
        ),
        1..5,
    )
    .prop_map(|parts| {
        parts
            .into_iter()
            .map(|(n, unit, sep)| format!("{n}{unit}{sep}"))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn huge_and_odd_durations_never_panic(text in duration_text()) {
        if let Ok(d) = parse_duration(&text) {
            prop_assert!(d > Duration::ZERO, "{text:?} parsed to zero");
        }
    }

    #[test]
    fn random_text_never_panics(text in "\\PC{0,40}") {
        let _ = parse_duration(&text);
    }
}

/// Sums that carry past `u64::MAX` seconds (the sub-second parts add up to a whole second on
/// top of the largest whole-second count) are errors, not an overflow panic.
#[test]
fn carries_past_the_largest_duration_are_errors() {
    for text in [
        "18446744073709551615s 1000000000ns",
        "18446744073709551615s1000ms",
        "18446744073709551615s 1000000us",
        "18446744073709551615s 500ms 500ms",
        "99999999999999999999h",
        "584942417356y",
    ] {
        let result = std::panic::catch_unwind(|| parse_duration(text));
        let Ok(result) = result else {
            panic!("parse_duration({text:?}) panicked");
        };
        assert!(result.is_err(), "{text:?} parsed to {result:?}");
    }
}
