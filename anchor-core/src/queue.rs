//! Queue names and priorities: the rules tasks.yaml, enqueue overrides, worker settings
//! and the CLI share.

/// The longest queue name, in characters: PostgreSQL's identifier length.
pub const MAX_QUEUE_NAME_LEN: usize = 63;

/// The lowest priority (runs last); 0 is the highest and the default.
pub const LOWEST_PRIORITY: i16 = 9;

/// A character a queue name may contain.
pub fn is_queue_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

/// What is wrong with `name` as a queue name, if anything. A queue name is 1 to
/// [`MAX_QUEUE_NAME_LEN`] lowercase ASCII letters, digits, `_` and `-`, starting with a
/// letter; lowercase only, so `Emails` and `emails` cannot become two queues.
///
/// ```
/// assert_eq!(anchor_core::queue_name_problem("emails"), None);
/// assert!(anchor_core::queue_name_problem("Emails").is_some());
/// ```
pub fn queue_name_problem(name: &str) -> Option<String> {
    let count = name.chars().count();
    if count == 0 {
        return Some("it is empty".to_string());
    }
    if count > MAX_QUEUE_NAME_LEN {
        return Some(format!(
            "it has {count} characters, more than the limit of {MAX_QUEUE_NAME_LEN}"
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_queue_char(*c)) {
        return Some(if bad.is_whitespace() {
            "a space is not allowed".to_string()
        } else {
            format!("`{}` is not allowed", bad.escape_debug())
        });
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some("it must start with a letter".to_string());
    }
    None
}

/// The rule [`queue_name_problem`] checks, in words, for error messages.
pub const QUEUE_NAME_RULE: &str = "a queue name is 1 to 63 lowercase ASCII letters, digits, \
    `_` and `-`, starting with a letter";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        for good in ["default", "emails", "bulk_mail", "q-2", "a"] {
            assert_eq!(queue_name_problem(good), None, "{good}");
        }
        for bad in ["", "Emails", "bulk mail", "_x", "2fa", "é", &"a".repeat(64)] {
            assert!(queue_name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(QUEUE_NAME_RULE.contains(&MAX_QUEUE_NAME_LEN.to_string()));
    }
}
