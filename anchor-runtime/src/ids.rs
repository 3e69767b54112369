//! [`TaskId`] and [`ScheduleId`]: the ids of task rows and of cron schedules, as distinct
//! types so that one can never be passed where the other is meant.

use std::error::Error as StdError;
use std::fmt;

use serde::{Deserialize, Serialize};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// Defines an id type over a 64-bit column: conversions from and to `i64`, `Display` as the
/// bare number, serde as a number, and `ToSql`/`FromSql` as `bigint`.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            /// The id with this number (as stored in the database).
            pub const fn new(number: i64) -> $name {
                $name(number)
            }

            /// The number, as stored in the database.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl From<i64> for $name {
            fn from(number: i64) -> $name {
                $name(number)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut bytes::BytesMut,
            ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
                self.0.to_sql(ty, out)
            }

            fn accepts(ty: &Type) -> bool {
                <i64 as ToSql>::accepts(ty)
            }

            to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<$name, Box<dyn StdError + Sync + Send>> {
                i64::from_sql(ty, raw).map($name)
            }

            fn accepts(ty: &Type) -> bool {
                <i64 as FromSql>::accepts(ty)
            }
        }
    };
}

id_type!(
    /// The id of a task row (64-bit: a busy system overflows 32 bits).
    ///
    /// ```
    /// use anchor_runtime::TaskId;
    /// let id = TaskId::new(42);
    /// assert_eq!(id.get(), 42);
    /// assert_eq!(id.to_string(), "42");
    /// assert_eq!(serde_json::to_string(&id).unwrap(), "42");
    /// ```
    TaskId
);

id_type!(
    /// The id of a cron schedule (a row of `cron_schedules`), as
    /// [`Client::schedule`](crate::Client::schedule) returns it. Not a [`TaskId`]: a
    /// schedule's occurrences are tasks with ids of their own.
    ScheduleId
);
