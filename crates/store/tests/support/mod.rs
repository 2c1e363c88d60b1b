//! Small helpers shared by the store test binaries (`mod support;` in each). The behaviour
//! suite itself is `butterfly_store::conformance`; these serve the backend-specific tests.

// Each test binary compiles its own copy and uses only some of it.
#![allow(dead_code)]

pub(crate) const FL: u8 = 1;
pub(crate) const RL: u8 = 8;

// The account and list helpers of the behaviour suite, for backend-specific tests too.
pub(crate) use butterfly_store::conformance::{add, email, lists, ok, remove, user};

/// Rows no list holds, which the API cannot show: contacts with an empty mask, and group
/// memberships of contacts not on FL. The same SQL in both dialects.
pub(crate) const ORPHANS: &str = "SELECT (SELECT COUNT(*) FROM contacts WHERE lists = 0) \
     + (SELECT COUNT(*) FROM contact_groups g \
        JOIN contacts c ON c.owner = g.owner AND c.contact = g.contact \
        WHERE (c.lists & 1) = 0)";
