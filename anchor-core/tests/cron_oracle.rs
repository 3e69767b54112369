//! Differential test: our robfig-style matcher against the `cron` crate.
//!
//! The two disagree by design on weekday numbering (robfig: Sunday = 0 or 7; `cron`:
//! Sunday = 1) and on day-of-month/day-of-week (robfig ORs them when both are restricted;
//! `cron` ANDs them). Where they agree — one of the two day fields left as `*`, weekday
//! numbers renumbered — both must produce the same fire times. Random expressions in that
//! common subset are checked against each other, so our matcher is held to an independent
//! implementation for everything but the deliberate differences, which have their own unit
//! tests in `src/cron.rs`.

use std::str::FromStr;

use anchor_core::cron::CronExpr;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

/// One field in both notations: ours, and the `cron` crate's.
#[derive(Debug, Clone)]
struct Field {
    ours: String,
    theirs: String,
}

fn same(text: String) -> Field {
    Field {
        ours: text.clone(),
        theirs: text,
    }
}

/// A field over `min..=max`: `*`, `*/step`, a value, a range, a stepped range or a list.
fn field(min: u32, max: u32) -> impl Strategy<Value = Field> {
    field_mapped(min, max, 0)
}

/// Like [`field`], with every number shifted by `shift` in the `cron` crate's notation.
fn field_mapped(min: u32, max: u32, shift: u32) -> impl Strategy<Value = Field> {
    let value = min..=max;
    prop_oneof![
        Just(same("*".to_string())),
        (2..=(max - min).max(2)).prop_map(|step| same(format!("*/{step}"))),
        value.clone().prop_map(move |v| Field {
            ours: v.to_string(),
            theirs: (v + shift).to_string(),
        }),
        (value.clone(), value.clone()).prop_map(move |(a, b)| {
            let (a, b) = (a.min(b), a.max(b));
            Field {
                ours: format!("{a}-{b}"),
                theirs: format!("{}-{}", a + shift, b + shift),
            }
        }),
        (value.clone(), value.clone(), 1..=3u32).prop_map(move |(a, b, step)| {
            let (a, b) = (a.min(b), a.max(b));
            Field {
                ours: format!("{a}-{b}/{step}"),
                theirs: format!("{}-{}/{step}", a + shift, b + shift),
            }
        }),
        proptest::collection::btree_set(value, 1..4).prop_map(move |set| Field {
            ours: set.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            theirs: set
                .iter()
                .map(|v| (v + shift).to_string())
                .collect::<Vec<_>>()
                .join(","),
        }),
    ]
}

/// A whole expression in the common subset: at most one day field restricted.
fn expression() -> impl Strategy<Value = (String, String)> {
    (
        any::<bool>(),
        field(0, 59),
        field(0, 59),
        field(0, 23),
        field(1, 31),
        field(1, 12),
        field_mapped(0, 6, 1),
        any::<bool>(),
    )
        .prop_map(
            |(with_seconds, sec, min, hour, dom, month, dow, dom_wins)| {
                let star = same("*".to_string());
                let (dom, dow) = if dom_wins { (dom, star) } else { (star, dow) };
                let theirs = format!(
                    "{} {} {} {} {} {}",
                    if with_seconds {
                        sec.theirs.as_str()
                    } else {
                        "0"
                    },
                    min.theirs,
                    hour.theirs,
                    dom.theirs,
                    month.theirs,
                    dow.theirs
                );
                let ours = if with_seconds {
                    format!(
                        "{} {} {} {} {} {}",
                        sec.ours, min.ours, hour.ours, dom.ours, month.ours, dow.ours
                    )
                } else {
                    format!(
                        "{} {} {} {} {}",
                        min.ours, hour.ours, dom.ours, month.ours, dow.ours
                    )
                };
                (ours, theirs)
            },
        )
}

fn start() -> impl Strategy<Value = DateTime<Utc>> {
    // 2020-01-01 .. 2030-01-01, to the second.
    (1_577_836_800i64..1_893_456_000i64).prop_map(|secs| {
        Utc.timestamp_opt(secs, 0)
            .single()
            .expect("timestamps in this range are valid")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_the_cron_crate((ours, theirs) in expression(), from in start()) {
        let reference = cron::Schedule::from_str(&theirs)
            .unwrap_or_else(|err| panic!("oracle rejected {theirs:?}: {err}"));
        let expected: Vec<DateTime<Utc>> = reference.after(&from).take(5).collect();
        match CronExpr::parse(&ours) {
            Ok(expr) => {
                let actual: Vec<DateTime<Utc>> = expr.upcoming(from, None).take(5).collect();
                prop_assert_eq!(actual, expected, "ours {:?} vs cron {:?} after {}", ours, theirs, from);
            }
            // We reject expressions that can never fire (e.g. 31 February); the oracle then
            // finds nothing either.
            Err(err) => prop_assert!(
                expected.is_empty(),
                "we rejected {:?} ({}) but cron fires at {:?}", ours, err, expected
            ),
        }
    }
}
