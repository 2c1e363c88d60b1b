//! SharingService `FindMembership` (spec §3.2): who is on the owner's allow, block,
//! reverse and pending lists, as the Messenger service's memberships. The forward list is
//! not a membership; it is the address book itself (`abservice.rs`).

use butterfly_core::account::{Email, UserId};
use butterfly_core::ids::{self, Role};
use butterfly_core::lists::{List, ListMask, TombstoneKind};

use crate::Snapshot;
use crate::soap::{self, ZERO_TIME};
use crate::xml::XmlWriter;

/// The roles in the order they are written, with the list each one shows.
const ROLES: [(Role, List, &str); 4] = [
    (Role::Allow, List::Allow, "Allow"),
    (Role::Block, List::Block, "Block"),
    (Role::Reverse, List::Reverse, "Reverse"),
    (Role::Pending, List::Pending, "Pending"),
];

/// The content of `FindMembershipResponse`: only the Messenger service (clients read the
/// first `Service`, or each one by its type), all four roles even when empty.
pub(crate) fn find_membership(w: &mut XmlWriter, ab: &Snapshot) {
    w.el("FindMembershipResult", |w| {
        w.el("Services", |w| {
            w.el("Service", |w| {
                w.el("Memberships", |w| {
                    for (role, list, name) in ROLES {
                        membership(w, ab, role, list, name);
                    }
                });
                w.el("Info", |w| {
                    w.el("Handle", |w| {
                        w.leaf("Id", 1);
                        w.leaf("Type", "Messenger");
                        w.empty("ForeignId");
                    });
                    w.leaf("InverseRequired", "false");
                    w.leaf("AuthorizationCriteria", "Everyone");
                    w.leaf("IsBot", "false");
                });
                w.empty("Changes");
                w.leaf("LastChange", &ab.stamp);
                w.leaf("Deleted", "false");
            });
        });
        owner_namespace(w, ab);
    });
}

/// One member of a role as written: who, their membership id, whether this answer
/// removes them from the role, and when that changed.
struct Entry<'a> {
    email: &'a Email,
    user: Option<UserId>,
    deleted: bool,
    at: i64,
}

/// Whether a contact with `lists` holds `role`. Pending is derived, not stored: someone
/// who has the owner on their forward list (RL) whom the owner has neither allowed nor
/// blocked — the "X added you" the client asks about. Allowing or blocking decides it.
fn in_role(role: Role, list: List, lists: ListMask) -> bool {
    match role {
        Role::Pending => {
            lists.contains(List::Reverse)
                && !lists.contains(List::Allow)
                && !lists.contains(List::Block)
        }
        _ => lists.contains(list),
    }
}

fn membership(w: &mut XmlWriter, ab: &Snapshot, role: Role, list: List, name: &str) {
    // A full answer lists the role's members. A delta answer lists the rows changed since
    // the client's stamp — in the role, or (the store keeps one stamp per row, not per
    // role) marked deleted from it, which a client ignores for someone it did not list
    // there — and the contacts deleted outright.
    let mut entries: Vec<Entry<'_>> = ab
        .roster
        .contacts
        .iter()
        .filter(|c| ab.shows(c.changed_at))
        .filter(|c| ab.since.is_some() || in_role(role, list, c.lists))
        .map(|c| Entry {
            email: &c.email,
            user: Some(c.user),
            deleted: !in_role(role, list, c.lists),
            at: c.changed_at,
        })
        .collect();
    for (t, user) in &ab.deleted {
        if let (TombstoneKind::Contact, Some(email)) = (t.kind, &t.email) {
            entries.push(Entry {
                email,
                user: *user,
                deleted: true,
                at: t.deleted_at,
            });
        }
    }
    w.el("Membership", |w| {
        w.leaf("MemberRole", name);
        if entries.is_empty() {
            w.empty("Members");
        } else {
            w.el("Members", |w| {
                for e in &entries {
                    member(w, e, role, name);
                }
            });
        }
        w.leaf("MembershipIsComplete", "true");
    });
}

fn member(w: &mut XmlWriter, e: &Entry<'_>, role: Role, role_name: &str) {
    // An account deleted since is named by address only (id 0).
    let id = match e.user.map(|u| (u, ids::membership_id(u, role))) {
        Some((_, Some(id))) => id,
        Some((u, None)) => {
            // Only past ~268 million accounts: an Int32 cannot name the member.
            tracing::error!(
                member = u.0,
                role = role_name,
                "Membership id overflows Int32; member left out"
            );
            return;
        }
        None => 0,
    };
    w.el_attrs("Member", &[("xsi:type", "PassportMember")], |w| {
        w.leaf("MembershipId", id);
        w.leaf("Type", "Passport");
        w.leaf("State", "Accepted");
        w.leaf("Deleted", if e.deleted { "true" } else { "false" });
        w.leaf("LastChanged", soap::stamp_text(e.at));
        // The store keeps no join date.
        w.leaf("JoinedDate", ZERO_TIME);
        w.leaf("ExpirationDate", ZERO_TIME);
        w.empty("Changes");
        w.leaf("PassportName", e.email);
        w.leaf("IsPassportNameHidden", "false");
        w.leaf("PassportId", 0);
        w.leaf("CID", e.user.map_or(0, ids::cid));
        w.empty("PassportChanges");
        w.leaf("LookedupByCID", "false");
    });
}

fn owner_namespace(w: &mut XmlWriter, ab: &Snapshot) {
    w.el("OwnerNamespace", |w| {
        w.el("Info", |w| {
            w.el("Handle", |w| {
                w.leaf("Id", uuid::Uuid::nil());
                w.leaf("IsPassportNameHidden", "false");
                w.leaf("CID", 0);
            });
            w.leaf("CreatorPuid", 0);
            w.leaf("CreatorCID", ids::cid(ab.owner.id));
            w.leaf("CreatorPassportName", &ab.owner.email);
            w.el("CircleAttributes", |w| {
                w.leaf("IsPresenceEnabled", "false");
                w.leaf("Domain", "WindowsLive");
            });
            w.leaf("MessengerApplicationServiceCreated", "false");
        });
        w.empty("Changes");
        // The store keeps no creation date.
        w.leaf("CreateDate", ZERO_TIME);
        w.leaf("LastChange", &ab.stamp);
    });
}
