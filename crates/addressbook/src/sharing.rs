//! SharingService `FindMembership` (spec §3.2): who is on the owner's allow, block,
//! reverse and pending lists, as the Messenger service's memberships. The forward list is
//! not a membership; it is the address book itself (`abservice.rs`).

use butterfly_core::ids::{self, Role};
use butterfly_core::lists::{Contact, List};

use crate::Snapshot;
use crate::soap::ZERO_TIME;
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
                w.leaf("LastChange", &ab.now);
                w.leaf("Deleted", "false");
            });
        });
        owner_namespace(w, ab);
    });
}

fn membership(w: &mut XmlWriter, ab: &Snapshot, role: Role, list: List, name: &str) {
    w.el("Membership", |w| {
        w.leaf("MemberRole", name);
        let members: Vec<(&Contact, i32)> = ab
            .roster
            .on_list(list)
            .filter_map(|c| match ids::membership_id(c.user, role) {
                Some(id) => Some((c, id)),
                None => {
                    // Only past ~268 million accounts: an Int32 cannot name the member.
                    tracing::error!(
                        member = c.user.0,
                        role = name,
                        "Membership id overflows Int32; member left out"
                    );
                    None
                }
            })
            .collect();
        if members.is_empty() {
            w.empty("Members");
        } else {
            w.el("Members", |w| {
                for (contact, id) in members {
                    member(w, ab, contact, id);
                }
            });
        }
        w.leaf("MembershipIsComplete", "true");
    });
}

fn member(w: &mut XmlWriter, ab: &Snapshot, c: &Contact, membership_id: i32) {
    w.el_attrs("Member", &[("xsi:type", "PassportMember")], |w| {
        w.leaf("MembershipId", membership_id);
        w.leaf("Type", "Passport");
        w.leaf("State", "Accepted");
        w.leaf("Deleted", "false");
        w.leaf("LastChanged", &ab.now);
        // The store keeps no join date.
        w.leaf("JoinedDate", ZERO_TIME);
        w.leaf("ExpirationDate", ZERO_TIME);
        w.empty("Changes");
        w.leaf("PassportName", &c.email);
        w.leaf("IsPassportNameHidden", "false");
        w.leaf("PassportId", 0);
        w.leaf("CID", ids::cid(c.user));
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
        w.leaf("LastChange", &ab.now);
    });
}
