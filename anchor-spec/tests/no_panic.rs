//! No input panics the parser or the validator: random bytes, random YAML-ish text and
//! mutations of the fixtures all produce diagnostics (or a model), never a panic.

use std::path::Path;

use proptest::prelude::*;

fn fixture_texts() -> Vec<String> {
    let mut texts = Vec::new();
    for kind in ["valid", "invalid"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(kind);
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .expect("fixture directory")
            .map(|e| e.expect("entry").path())
            .collect();
        paths.sort();
        for path in paths {
            texts.push(std::fs::read_to_string(path).expect("fixture"));
        }
    }
    texts
}

/// Checks a text and asserts what every outcome must satisfy.
fn check_never_panics(text: &str) {
    let outcome = anchor_spec::check("fuzz.yaml", text);
    assert_eq!(outcome.spec.is_some(), !outcome.has_errors());
    for d in &outcome.diagnostics {
        assert!(d.line >= 1 && d.column >= 1);
        let _ = d.render();
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Pieces that YAML and tasks.yaml are made of, so random text reaches deep into the
/// validator rather than failing at the first character.
const TOKENS: &[&str] = &[
    "tasks:",
    "\n",
    "\n  ",
    "\n    ",
    "\n      ",
    "- ",
    "name: ",
    "A",
    "b_c",
    "parameters:",
    "type: ",
    "object",
    "integer",
    "string",
    "array",
    "properties:",
    "required: [",
    "]",
    "items:",
    "default: ",
    "enum: [",
    "retryPolicy:",
    "interval: ",
    "1m,2m",
    "max_retries: ",
    "-1",
    "3",
    "always_retry_on_failure: ",
    "true",
    "cronjob:",
    "cronExpression: ",
    "\"0 0 * * *\"",
    "timezone: ",
    "UTC",
    "events:",
    "onFailed: ",
    "timeout: ",
    "maxRescues: ",
    "queue: ",
    "priority: ",
    "emails",
    "Emails!",
    "5m",
    "99999999999999999999h",
    "300000y",
    "{",
    "}",
    ",",
    ":",
    "&a ",
    "*a",
    "'",
    "\"",
    "#",
    "---",
    "!!str ",
    "? ",
    "|",
    ">",
    "\t",
    "taskID",
    "format: ",
    "int32",
];

proptest! {
    // 256 cases keep CI fast; set PROPTEST_CASES to run more locally.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_never_panics(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_yaml_like_text(tokens in proptest::collection::vec(0..TOKENS.len(), 0..120)) {
        let text: String = tokens.into_iter().map(|i| TOKENS[i]).collect();
        check_never_panics(&text);
    }

    #[test]
    fn mutated_fixtures(
        index in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, 0..TOKENS.len()), 1..8),
    ) {
        let fixtures = fixture_texts();
        let mut text: Vec<char> = fixtures[index.index(fixtures.len())].chars().collect();
        for (at, op, token) in edits {
            let pos = if text.is_empty() { 0 } else { at.index(text.len()) };
            match op {
                0 if !text.is_empty() => { text.remove(pos); }
                1 => text.splice(pos..pos, TOKENS[token].chars()).for_each(drop),
                2 if !text.is_empty() => text[pos] = ' ',
                _ => text.truncate(pos),
            }
        }
        check_never_panics(&text.into_iter().collect::<String>());
    }
}
