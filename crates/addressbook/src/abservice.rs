//! ABService `ABFindAll` (MSNP13–15) and `ABFindContactsPaged` (MSNP16–18), spec §3.4:
//! the owner's groups, the forward-list contacts, the `Me` contact that carries the
//! owner's settings, and the address book's own record. The paged form capitalises the
//! container names and adds the circle ticket (spec §8).

use butterfly_core::Email;
use butterfly_core::ids;
use butterfly_core::lists::{Contact, Group, Gtc, List, Privacy, Tombstone, TombstoneKind};
use butterfly_core::tickets::Tickets;

use crate::soap::{self, ZERO_TIME};
use crate::xml::XmlWriter;
use crate::{Snapshot, me_contact_id};

/// `groupType` of every user-made group.
const GROUP_TYPE: &str = "c8529ce2-6ead-434d-881f-341e17db3ff8";

/// Which of the two actions is answered: they differ only in container names and in
/// what the paged form adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    FindAll,
    Paged,
}

impl Form {
    fn names(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Form::FindAll => ("ABFindAllResult", "groups", "contacts", "ab"),
            Form::Paged => ("ABFindContactsPagedResult", "Groups", "Contacts", "Ab"),
        }
    }
}

/// The content of `ABFindAllResponse` / `ABFindContactsPagedResponse`.
pub(crate) fn find(w: &mut XmlWriter, ab: &Snapshot, form: Form, tickets: &dyn Tickets) {
    let (result, groups, contacts, record) = form.names();
    w.el(result, |w| {
        // A delta answer holds what changed after the client's stamp: changed rows, and
        // deleted ones marked `fDeleted` (a contact that left the forward list is deleted
        // from the address book even if it is still on another list).
        let changed_groups: Vec<&Group> = ab
            .roster
            .groups
            .iter()
            .filter(|g| ab.shows(g.changed_at))
            .collect();
        let deleted_groups: Vec<&Tombstone> = deleted(ab, TombstoneKind::Group).collect();
        if changed_groups.is_empty() && deleted_groups.is_empty() {
            w.empty(groups);
        } else {
            w.el(groups, |w| {
                for g in changed_groups {
                    group(w, g);
                }
                for t in deleted_groups {
                    deleted_group(w, t);
                }
            });
        }
        w.el(contacts, |w| {
            for c in ab.roster.contacts.iter().filter(|c| ab.shows(c.changed_at)) {
                if c.lists.contains(List::Forward) {
                    contact(w, ab, c);
                } else if ab.since.is_some() {
                    deleted_contact(w, c.guid, &c.email, c.changed_at);
                }
            }
            for t in deleted(ab, TombstoneKind::Contact) {
                if let Some(email) = &t.email {
                    deleted_contact(w, t.guid, email, t.deleted_at);
                }
            }
            if ab.shows(ab.roster.settings_changed_at) {
                me(w, ab);
            }
        });
        if form == Form::Paged {
            w.el("CircleResult", |w| {
                w.leaf("CircleTicket", circle_ticket(ab, tickets));
            });
        }
        w.el(record, |w| address_book(w, ab, form));
    });
}

/// The tombstones of `kind` in a delta answer.
fn deleted(ab: &Snapshot, kind: TombstoneKind) -> impl Iterator<Item = &Tombstone> {
    ab.deleted
        .iter()
        .map(|(t, _)| t)
        .filter(move |t| t.kind == kind)
}

fn deleted_group(w: &mut XmlWriter, t: &Tombstone) {
    w.el("Group", |w| {
        w.leaf("groupId", t.guid);
        w.el("groupInfo", |w| {
            w.leaf("groupType", GROUP_TYPE);
        });
        w.empty("propertiesChanged");
        w.leaf("fDeleted", "true");
        w.leaf("lastChange", soap::stamp_text(t.deleted_at));
    });
}

/// A contact gone from the address book, as a delta names it: its id and address.
fn deleted_contact(w: &mut XmlWriter, guid: uuid::Uuid, email: &Email, at: i64) {
    w.el("Contact", |w| {
        w.leaf("contactId", guid);
        w.el("contactInfo", |w| {
            w.leaf("contactType", "Regular");
            w.leaf("passportName", email);
        });
        w.empty("propertiesChanged");
        w.leaf("fDeleted", "true");
        w.leaf("lastChange", soap::stamp_text(at));
    });
}

fn group(w: &mut XmlWriter, g: &Group) {
    w.el("Group", |w| {
        w.leaf("groupId", g.guid);
        w.el("groupInfo", |w| {
            w.el("annotations", |w| annotation(w, "MSN.IM.Display", "1"));
            w.leaf("groupType", GROUP_TYPE);
            w.leaf("name", &g.name);
            w.leaf("IsNotMobileVisible", "false");
            w.leaf("IsPrivate", "false");
            w.leaf("IsFavorite", "false");
        });
        w.empty("propertiesChanged");
        w.leaf("fDeleted", "false");
        w.leaf("lastChange", soap::stamp_text(g.changed_at));
    });
}

/// One forward-list contact, under the GUID MSNP10–12 clients see as `C=`.
fn contact(w: &mut XmlWriter, ab: &Snapshot, c: &Contact) {
    w.el("Contact", |w| {
        w.leaf("contactId", c.guid);
        w.el("contactInfo", |w| {
            // The owner's own name for the contact (SBP MFN); the shown name is theirs.
            if let Some(nick) = &c.nickname {
                w.el("annotations", |w| annotation(w, "AB.NickName", nick));
            }
            w.leaf("contactType", "Regular");
            w.leaf("quickName", &c.friendly_name);
            w.leaf("passportName", &c.email);
            w.leaf("IsPassportNameHidden", "false");
            w.leaf("displayName", &c.friendly_name);
            w.leaf("puid", 0);
            let groups: Vec<_> = c
                .groups
                .iter()
                .filter_map(|n| ab.roster.groups.iter().find(|g| g.number == *n))
                .collect();
            if !groups.is_empty() {
                w.el("groupIds", |w| {
                    for g in groups {
                        w.leaf("guid", g.guid);
                    }
                });
            }
            w.leaf("CID", ids::cid(c.user));
            w.leaf("IsNotMobileVisible", "false");
            w.leaf("isMobileIMEnabled", "false");
            // Clients set the FL bit of their initial ADL from this.
            w.leaf("isMessengerUser", "true");
            constant_tail(w);
        });
        w.empty("propertiesChanged");
        w.leaf("fDeleted", "false");
        w.leaf("lastChange", soap::stamp_text(c.changed_at));
    });
}

/// The owner as a contact of type `Me`: clients read the owner's name and settings
/// (privacy, prompt-on-add) only from it.
fn me(w: &mut XmlWriter, ab: &Snapshot) {
    let roster = &ab.roster;
    w.el("Contact", |w| {
        w.leaf("contactId", me_contact_id(ab.owner.id));
        w.el("contactInfo", |w| {
            w.el("annotations", |w| {
                annotation(w, "MSN.IM.MBEA", "0");
                let gtc = match roster.gtc {
                    Gtc::Ask => "1",
                    Gtc::NoAsk => "2",
                };
                annotation(w, "MSN.IM.GTC", gtc);
                let blp = match roster.privacy {
                    Privacy::AllowAll => "1",
                    Privacy::BlockAll => "2",
                };
                annotation(w, "MSN.IM.BLP", blp);
                annotation(w, "MSN.IM.MPOP", "1");
                annotation(w, "MSN.IM.RoamLiveProperties", "1");
            });
            w.leaf("contactType", "Me");
            w.leaf("quickName", &roster.friendly_name);
            w.leaf("passportName", &ab.owner.email);
            w.leaf("IsPassportNameHidden", "false");
            w.leaf("displayName", &roster.friendly_name);
            w.leaf("puid", 0);
            w.leaf("CID", ids::cid(ab.owner.id));
            w.leaf("isMessengerUser", "false");
            constant_tail(w);
        });
        w.empty("propertiesChanged");
        w.leaf("fDeleted", "false");
        w.leaf("lastChange", soap::stamp_text(roster.settings_changed_at));
    });
}

/// The `contactInfo` fields no client decides anything by.
fn constant_tail(w: &mut XmlWriter) {
    w.leaf("isFavorite", "false");
    w.leaf("isSmtp", "false");
    w.leaf("hasSpace", "false");
    w.leaf("spotWatchState", "NoDevice");
    w.leaf("birthdate", ZERO_TIME);
    w.leaf("primaryEmailType", "ContactEmailPersonal");
    w.leaf("PrimaryLocation", "ContactLocationPersonal");
    w.leaf("PrimaryPhone", "ContactPhonePersonal");
    w.leaf("IsPrivate", "false");
    w.leaf("Gender", "Unspecified");
    w.leaf("TimeZone", "None");
}

fn annotation(w: &mut XmlWriter, name: &str, value: &str) {
    w.el("Annotation", |w| {
        w.leaf("Name", name);
        w.leaf("Value", value);
    });
}

/// The address book's own record (`ab` / `Ab`).
fn address_book(w: &mut XmlWriter, ab: &Snapshot, form: Form) {
    w.leaf("abId", uuid::Uuid::nil());
    w.el("abInfo", |w| {
        w.leaf("ownerPuid", 0);
        w.leaf("OwnerCID", ids::cid(ab.owner.id));
        w.leaf("ownerEmail", &ab.owner.email);
        w.leaf("fDefault", "true");
        w.leaf("joinedNamespace", "false");
        w.leaf("IsBot", "false");
        w.leaf("IsParentManaged", "false");
        w.leaf("SubscribeExternalPartner", "false");
        w.leaf("NotifyExternalPartner", "false");
        w.leaf("AddressBookType", "Individual");
        if form == Form::Paged {
            w.leaf("AccountTierLastChanged", ZERO_TIME);
            w.leaf("ProfileVersion", 0);
        }
    });
    // The owner's stamp: what the client sends back to ask for the next delta.
    w.leaf("lastChange", &ab.stamp);
    w.leaf("DynamicItemLastChanged", ZERO_TIME);
    // The store keeps no creation date.
    w.leaf("createDate", ZERO_TIME);
    w.empty("propertiesChanged");
}

/// The circles ticket of `CircleResult` (spec §8), for a user in no circle: the
/// `SignedTicket` of [`msnp::circle`], signed with [`Tickets::circle_signature`] so the NS
/// can check what a client presents in `USR SHA A`. Returned as text; the writer escapes
/// it.
pub(crate) fn circle_ticket(ab: &Snapshot, tickets: &dyn Tickets) -> String {
    let data = msnp::circle::ticket_data(ids::cid(ab.owner.id));
    msnp::circle::signed_ticket(&data, &tickets.circle_signature(&data))
}
