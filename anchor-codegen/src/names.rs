//! Rust names for tasks, via heck.

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};

/// The names generated for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskNames {
    /// snake_case, used in method names (`send_email` → `run_send_email`).
    pub snake: String,
    /// SCREAMING_SNAKE_CASE, used for constants; never a keyword.
    pub constant: String,
    /// UpperCamelCase + `Parameters`.
    pub params_type: String,
}

impl TaskNames {
    pub(crate) fn new(task_name: &str) -> Self {
        // Keywords are lower case and methods are always prefixed (`run_type`), so none of
        // these names can be a Rust keyword; the validator already guarantees identifiers.
        TaskNames {
            snake: task_name.to_snake_case(),
            constant: task_name.to_shouty_snake_case(),
            params_type: format!("{}Parameters", task_name.to_upper_camel_case()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rust_conventions_whatever_the_yaml_case() {
        let n = TaskNames::new("deleteOpaqueKey");
        assert_eq!(n.snake, "delete_opaque_key");
        assert_eq!(n.constant, "DELETE_OPAQUE_KEY");
        assert_eq!(n.params_type, "DeleteOpaqueKeyParameters");
        let n = TaskNames::new("import_catalog_failed");
        assert_eq!(n.snake, "import_catalog_failed");
        assert_eq!(n.constant, "IMPORT_CATALOG_FAILED");
        assert_eq!(n.params_type, "ImportCatalogFailedParameters");
        let n = TaskNames::new("SendEmail");
        assert_eq!(n.snake, "send_email");
        assert_eq!(n.params_type, "SendEmailParameters");
    }

    #[test]
    fn keyword_names_still_produce_identifiers() {
        // Methods are prefixed (`run_type`) and constants upper case, so keywords are harmless.
        let n = TaskNames::new("type");
        assert_eq!(n.snake, "type");
        assert_eq!(n.constant, "TYPE");
        assert_eq!(n.params_type, "TypeParameters");
        assert_eq!(TaskNames::new("self").constant, "SELF");
    }
}
