//! kairan-types: the contracts the homeserver, the records bridge and the admin CLI share,
//! defined once so that they cannot drift apart.
//!
//! - [`room_policy`]: the `jp.kairan.room.policy` state event the homeserver publishes and
//!   the bridge archives by (official, retention class, what happens on expiry, department).
//! - [`csv`]: the staff CSV the CLI reads and the admin API accepts.

pub mod csv;
pub mod room_policy;
