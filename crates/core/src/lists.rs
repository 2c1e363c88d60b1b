//! Contact lists and privacy: the rules, as pure functions over a loaded [`Roster`].
//!
//! A store loads the owner's roster inside a transaction, calls [`apply`], writes the
//! returned [`Mutation`]s and commits before anyone is told. Keeping every rule here means
//! the SQLite and Postgres stores cannot disagree on what an edit means.
//!
//! Change stamps (for the WLM address book's delta syncs): every committed edit gets a
//! stamp from its owner's counter — `max(now in ms, previous stamp + 1)`, so strictly
//! increasing per owner even within one millisecond or when the clock steps back — and
//! every row it writes carries it ([`Contact::changed_at`], [`Group::changed_at`],
//! [`Roster::settings_changed_at`]). An RL change stamps the *other* user's row with *their*
//! counter. A deleted contact row or group leaves a [`Tombstone`], kept for
//! [`TOMBSTONE_RETENTION`]. A delta since `T` is then: the rows stamped after `T`, plus the
//! tombstones after `T` ([`Store::tombstones`](crate::store::Store::tombstones)).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::{Email, MAX_FRIENDLY_LEN, UserId};

/// One of the five MSN lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum List {
    /// FL: my contacts.
    Forward,
    /// AL: may see me and talk to me.
    Allow,
    /// BL: may not.
    Block,
    /// RL: who has me on their FL (server-maintained).
    Reverse,
    /// PL: added me, not yet decided (MSNP13+).
    Pending,
}

impl List {
    pub const ALL: [List; 5] = [
        List::Forward,
        List::Allow,
        List::Block,
        List::Reverse,
        List::Pending,
    ];

    pub fn bit(self) -> u8 {
        match self {
            List::Forward => 1,
            List::Allow => 2,
            List::Block => 4,
            List::Reverse => 8,
            List::Pending => 16,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            List::Forward => "FL",
            List::Allow => "AL",
            List::Block => "BL",
            List::Reverse => "RL",
            List::Pending => "PL",
        }
    }

    pub fn parse(s: &str) -> Option<List> {
        List::ALL.into_iter().find(|l| l.code() == s)
    }
}

/// A set of lists, as the bit mask LST carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ListMask(pub u8);

impl ListMask {
    pub fn contains(self, l: List) -> bool {
        self.0 & l.bit() != 0
    }
    pub fn with(self, l: List) -> Self {
        ListMask(self.0 | l.bit())
    }
    pub fn without(self, l: List) -> Self {
        ListMask(self.0 & !l.bit())
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// BLP: what happens to people on neither AL nor BL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Privacy {
    /// `BLP AL`: everyone not blocked may see me.
    #[default]
    AllowAll,
    /// `BLP BL`: only people on my AL may see me.
    BlockAll,
}

impl Privacy {
    pub fn code(self) -> &'static str {
        match self {
            Privacy::AllowAll => "AL",
            Privacy::BlockAll => "BL",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AL" => Some(Privacy::AllowAll),
            "BL" => Some(Privacy::BlockAll),
            _ => None,
        }
    }
}

/// GTC: whether the client prompts me when someone adds me.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Gtc {
    #[default]
    Ask,
    NoAsk,
}

impl Gtc {
    pub fn code(self) -> &'static str {
        match self {
            Gtc::Ask => "A",
            Gtc::NoAsk => "N",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "A" => Some(Gtc::Ask),
            "N" => Some(Gtc::NoAsk),
            _ => None,
        }
    }
}

/// May the owner of `privacy`, whose lists hold `viewer` under `mask`, be seen by the viewer?
/// BL wins over everything; AL admits; otherwise BLP decides.
pub fn visible_to(privacy: Privacy, mask_of_viewer: ListMask) -> bool {
    if mask_of_viewer.contains(List::Block) {
        false
    } else if mask_of_viewer.contains(List::Allow) {
        true
    } else {
        privacy == Privacy::AllowAll
    }
}

/// A user-defined group. Number 0 ("Other Contacts") is implicit and never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The legacy numeric id (MSNP7–9).
    pub number: u32,
    /// The id MSNP10+ clients use.
    pub guid: Uuid,
    pub name: String,
    /// Stamp of the edit that last wrote the group (ms, see the module docs); 0 for rows
    /// older than change stamps.
    pub changed_at: i64,
}

/// How the other side of a contact relation treats me: needed to decide whether I may see
/// them, without another lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeerView {
    pub privacy: Privacy,
    /// The peer's lists that hold me.
    pub lists_of_me: ListMask,
}

impl PeerView {
    /// May I see this peer (and talk to them)?
    pub fn lets_me_see(self) -> bool {
        visible_to(self.privacy, self.lists_of_me)
    }
}

/// One entry of my lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub user: UserId,
    pub email: Email,
    /// The contact's own friendly name, as last stored.
    pub friendly_name: String,
    /// A name I gave the contact (SBP MFN), shown instead when set.
    pub nickname: Option<String>,
    pub guid: Uuid,
    pub lists: ListMask,
    /// Group numbers, FL only.
    pub groups: Vec<u32>,
    pub peer: PeerView,
    /// Stamp of the edit that last wrote this row — lists, groups, nickname, GUID — in the
    /// owner's counter (ms, see the module docs); 0 for rows older than change stamps. The
    /// contact's own name and privacy (`friendly_name`, `peer`) are theirs: changing them
    /// does not stamp this row.
    pub changed_at: i64,
}

impl Contact {
    pub fn display_name(&self) -> &str {
        self.nickname.as_deref().unwrap_or(&self.friendly_name)
    }
}

/// Everything about my lists.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Roster {
    pub owner: Option<UserId>,
    /// Bumped by every change; MSNP2–9 clients cache by it.
    pub version: u64,
    pub friendly_name: String,
    pub privacy: Privacy,
    pub gtc: Gtc,
    pub groups: Vec<Group>,
    pub contacts: Vec<Contact>,
    /// PRP phone numbers and flags (PHH, PHW, PHM, MOB, MBE).
    pub properties: Vec<(String, String)>,
    /// The owner's change stamp: that of the last edit that changed anything here (ms, see
    /// the module docs; 0 before the first). Every row and tombstone is stamped at or
    /// before it, so a client that echoes it back has seen everything up to it; a value
    /// above it was never handed out.
    pub stamp: i64,
    /// Stamp of the last edit of the owner's own settings — privacy, GTC, friendly name,
    /// properties (the WLM "Me" contact).
    pub settings_changed_at: i64,
}

impl Roster {
    pub fn contact(&self, email: &Email) -> Option<&Contact> {
        self.contacts.iter().find(|c| &c.email == email)
    }
    pub fn contact_by_guid(&self, guid: Uuid) -> Option<&Contact> {
        self.contacts.iter().find(|c| c.guid == guid)
    }
    pub fn group(&self, r: GroupRef) -> Option<&Group> {
        self.groups.iter().find(|g| match r {
            GroupRef::Number(n) => g.number == n,
            GroupRef::Guid(u) => g.guid == u,
        })
    }
    pub fn on_list(&self, list: List) -> impl Iterator<Item = &Contact> {
        self.contacts.iter().filter(move |c| c.lists.contains(list))
    }
}

/// What a [`Tombstone`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TombstoneKind {
    /// A contact row (the contact left all of the owner's lists).
    Contact,
    /// A group.
    Group,
}

/// A contact row or group that was deleted, kept so delta syncs can report the deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub kind: TombstoneKind,
    /// The deleted row's contact or group GUID.
    pub guid: Uuid,
    /// The contact's sign-in name at deletion (memberships are matched by it); `None` for
    /// groups.
    pub email: Option<Email>,
    /// The stamp of the deleting edit, in the owner's counter (ms).
    pub deleted_at: i64,
}

/// How long tombstones are kept at least. A delta since a stamp older than
/// `now - TOMBSTONE_RETENTION` may miss deletions: answer it with a full sync
/// ([`deltas_reach_back_to`]).
pub const TOMBSTONE_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The oldest `since` (ms) whose deltas are complete at `now_ms`: tombstones newer than it
/// are all still kept.
pub fn deltas_reach_back_to(now_ms: i64) -> i64 {
    now_ms.saturating_sub(TOMBSTONE_RETENTION.as_millis() as i64)
}

/// Milliseconds since the Unix epoch: the clock change stamps are drawn from.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Caps from the MSN service (the official servers used these).
pub const MAX_LIST_LEN: usize = 1000;
pub const MAX_GROUPS: usize = 30;
pub const MAX_GROUP_NAME: usize = 61;

/// A group, as legacy (number) or MSNP10+ (GUID) clients name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupRef {
    Number(u32),
    Guid(Uuid),
}

/// A contact, by sign-in name or by the contact GUID (MSNP10+ FL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContactRef {
    Email(Email),
    Guid(Uuid),
}

/// One list edit, as a client asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListOp {
    /// Put a user on a list; for FL optionally into a group (also adds an FL contact to
    /// one more group).
    Add {
        list: List,
        target: ContactRef,
        group: Option<GroupRef>,
    },
    /// Take a user off a list; for FL with a group, only out of that group.
    Remove {
        list: List,
        target: ContactRef,
        group: Option<GroupRef>,
    },
    AddGroup {
        name: String,
    },
    RemoveGroup {
        group: GroupRef,
    },
    RenameGroup {
        group: GroupRef,
        name: String,
    },
    SetPrivacy(Privacy),
    SetGtc(Gtc),
    SetFriendlyName(String),
    /// SBP MFN: my name for a contact.
    SetNickname {
        contact: Uuid,
        name: String,
    },
    /// PRP PHH/PHW/PHM/MOB/MBE; an empty value clears it.
    SetProperty {
        key: String,
        value: String,
    },
}

/// Why an edit was refused; the NS maps each to its MSNP error code in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ListError {
    #[error("no such user")]
    InvalidUser,
    #[error("already on that list")]
    AlreadyOnList,
    #[error("not on that list")]
    NotOnList,
    #[error("on the opposite list (AL vs BL)")]
    InOppositeList,
    #[error("list is full")]
    ListFull,
    #[error("the reverse and pending lists are kept by the server")]
    ServerList,
    #[error("you cannot add yourself to that list")]
    SelfContact,
    #[error("no such group")]
    InvalidGroup,
    #[error("contact is not in that group")]
    NotInGroup,
    #[error("too many groups")]
    TooManyGroups,
    #[error("a group with that name exists")]
    GroupExists,
    #[error("group name too long or empty")]
    GroupNameInvalid,
    #[error("group 0 cannot be removed")]
    GroupZero,
    #[error("invalid name")]
    InvalidName,
    #[error("invalid property")]
    InvalidProperty,
}

/// What a store writes for an edit. `Contact` rows are the owner's unless said otherwise.
/// Every row written gets the edit's change stamp (its `changed_at` here is ignored); the
/// owner-setting mutations stamp [`Roster::settings_changed_at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Insert or replace the owner's row for `contact.user` (lists, groups, nickname, guid).
    PutContact(Contact),
    /// Remove the owner's row for this user (no lists left), leaving a contact tombstone.
    DeleteContact(UserId),
    /// Set or clear RL on `target`'s row for the owner (creating or deleting that row as
    /// needed, a deletion leaving a tombstone), and bump `target`'s list version and change
    /// stamp: the row is stamped in `target`'s counter.
    SetReverse {
        target: UserId,
        on: bool,
    },
    PutGroup(Group),
    /// Remove the owner's group, leaving a group tombstone.
    DeleteGroup(u32),
    SetPrivacy(Privacy),
    SetGtc(Gtc),
    SetFriendlyName(String),
    SetProperty {
        key: String,
        value: String,
    },
}

/// The answer to a successful edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditOutcome {
    /// The owner's list version after the edit.
    pub version: u64,
    /// The contact as it now is (for Add/Remove/SetNickname), when it still exists or existed.
    pub contact: Option<Contact>,
    /// The group touched by a group edit.
    pub group: Option<Group>,
    /// Someone whose RL changed because of this edit: they are told live.
    pub reverse: Option<(Email, bool)>,
    /// Someone whose view of me changed (AL/BL/BLP edits): their presence of me must be refreshed.
    pub privacy_changed: Vec<Email>,
}

impl EditOutcome {
    /// The outcome of an edit committed with change stamp `stamp`: the contact and group
    /// it wrote (or deleted) carry that stamp, as a reload would show it.
    pub fn stamped(mut self, stamp: i64) -> Self {
        if let Some(c) = &mut self.contact {
            c.changed_at = stamp;
        }
        if let Some(g) = &mut self.group {
            g.changed_at = stamp;
        }
        self
    }
}

/// The checked plan for an edit: write `mutations`, then answer with `outcome`
/// (whose `version` the store fills in after bumping it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub mutations: Vec<Mutation>,
    pub outcome: EditOutcome,
}

/// A user an edit refers to, resolved by the store from the account table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: UserId,
    pub email: Email,
    pub friendly_name: String,
    /// How that user treats me now (their privacy and their lists holding me).
    pub peer: PeerView,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_FRIENDLY_LEN
        && !name.chars().any(|c| c.is_control())
}

fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_GROUP_NAME
        && !name.chars().any(|c| c.is_control())
}

/// Decide an edit. `me` is the owner; `target` is the resolved user for Add/Remove
/// (`None` when the name is unknown). Pure: same input, same plan.
pub fn apply(
    roster: &Roster,
    me: UserId,
    op: &ListOp,
    target: Option<&Target>,
) -> Result<Plan, ListError> {
    let mut plan = Plan {
        mutations: Vec::new(),
        outcome: EditOutcome {
            version: roster.version,
            contact: None,
            group: None,
            reverse: None,
            privacy_changed: Vec::new(),
        },
    };
    match op {
        ListOp::Add {
            list,
            target: tref,
            group,
        } => {
            if matches!(list, List::Reverse | List::Pending) {
                return Err(ListError::ServerList);
            }
            let existing = find(roster, tref);
            let t = match (existing, target) {
                (Some(c), _) => Target {
                    user: c.user,
                    email: c.email.clone(),
                    friendly_name: c.friendly_name.clone(),
                    peer: c.peer,
                },
                (None, Some(t)) => t.clone(),
                (None, None) => return Err(ListError::InvalidUser),
            };
            if t.user == me && *list == List::Forward {
                return Err(ListError::SelfContact);
            }
            let mut contact = existing.cloned().unwrap_or_else(|| Contact {
                user: t.user,
                email: t.email.clone(),
                friendly_name: t.friendly_name.clone(),
                nickname: None,
                guid: Uuid::new_v4(),
                lists: ListMask::default(),
                groups: Vec::new(),
                peer: t.peer,
                // The store stamps what it writes.
                changed_at: 0,
            });
            let group_no = match group {
                Some(g) if *list == List::Forward => match g {
                    GroupRef::Number(0) => None,
                    _ => Some(roster.group(*g).ok_or(ListError::InvalidGroup)?.number),
                },
                Some(_) => return Err(ListError::InvalidGroup),
                None => None,
            };
            if contact.lists.contains(*list) {
                // Already on FL: adding to one more group is allowed, the same group is not.
                match group_no {
                    Some(n) if !contact.groups.contains(&n) => contact.groups.push(n),
                    _ => return Err(ListError::AlreadyOnList),
                }
            } else {
                let opposite = match list {
                    List::Allow => Some(List::Block),
                    List::Block => Some(List::Allow),
                    _ => None,
                };
                if opposite.is_some_and(|o| contact.lists.contains(o)) {
                    return Err(ListError::InOppositeList);
                }
                if roster.on_list(*list).count() >= MAX_LIST_LEN {
                    return Err(ListError::ListFull);
                }
                contact.lists = contact.lists.with(*list);
                if let Some(n) = group_no {
                    contact.groups.push(n);
                }
                match list {
                    List::Forward if t.user != me => {
                        plan.mutations.push(Mutation::SetReverse {
                            target: t.user,
                            on: true,
                        });
                        plan.outcome.reverse = Some((t.email.clone(), true));
                    }
                    List::Allow | List::Block => plan.outcome.privacy_changed.push(t.email.clone()),
                    _ => {}
                }
            }
            plan.mutations.push(Mutation::PutContact(contact.clone()));
            plan.outcome.contact = Some(contact);
        }
        ListOp::Remove {
            list,
            target: tref,
            group,
        } => {
            if matches!(list, List::Reverse | List::Pending) {
                return Err(ListError::ServerList);
            }
            let mut contact = find(roster, tref).cloned().ok_or(ListError::NotOnList)?;
            if !contact.lists.contains(*list) {
                return Err(ListError::NotOnList);
            }
            match group {
                Some(g) if *list == List::Forward && *g != GroupRef::Number(0) => {
                    let n = roster.group(*g).ok_or(ListError::InvalidGroup)?.number;
                    let before = contact.groups.len();
                    contact.groups.retain(|x| *x != n);
                    if contact.groups.len() == before {
                        return Err(ListError::NotInGroup);
                    }
                }
                Some(_) if *list != List::Forward => return Err(ListError::InvalidGroup),
                _ => {
                    contact.lists = contact.lists.without(*list);
                    match list {
                        List::Forward => {
                            contact.groups.clear();
                            plan.mutations.push(Mutation::SetReverse {
                                target: contact.user,
                                on: false,
                            });
                            plan.outcome.reverse = Some((contact.email.clone(), false));
                        }
                        List::Allow | List::Block => {
                            plan.outcome.privacy_changed.push(contact.email.clone())
                        }
                        _ => {}
                    }
                }
            }
            if contact.lists.is_empty() {
                plan.mutations.push(Mutation::DeleteContact(contact.user));
            } else {
                plan.mutations.push(Mutation::PutContact(contact.clone()));
            }
            plan.outcome.contact = Some(contact);
        }
        ListOp::AddGroup { name } => {
            if !valid_group_name(name) {
                return Err(ListError::GroupNameInvalid);
            }
            if roster.groups.len() >= MAX_GROUPS {
                return Err(ListError::TooManyGroups);
            }
            if roster.groups.iter().any(|g| &g.name == name) {
                return Err(ListError::GroupExists);
            }
            let number = roster.groups.iter().map(|g| g.number).max().unwrap_or(0) + 1;
            let g = Group {
                number,
                guid: Uuid::new_v4(),
                name: name.clone(),
                changed_at: 0,
            };
            plan.mutations.push(Mutation::PutGroup(g.clone()));
            plan.outcome.group = Some(g);
        }
        ListOp::RemoveGroup { group } => {
            if *group == GroupRef::Number(0) {
                return Err(ListError::GroupZero);
            }
            let g = roster.group(*group).ok_or(ListError::InvalidGroup)?.clone();
            for c in roster
                .contacts
                .iter()
                .filter(|c| c.groups.contains(&g.number))
            {
                let mut c = c.clone();
                c.groups.retain(|n| *n != g.number);
                plan.mutations.push(Mutation::PutContact(c));
            }
            plan.mutations.push(Mutation::DeleteGroup(g.number));
            plan.outcome.group = Some(g);
        }
        ListOp::RenameGroup { group, name } => {
            if !valid_group_name(name) {
                return Err(ListError::GroupNameInvalid);
            }
            let mut g = roster.group(*group).ok_or(ListError::InvalidGroup)?.clone();
            if roster
                .groups
                .iter()
                .any(|o| &o.name == name && o.number != g.number)
            {
                return Err(ListError::GroupExists);
            }
            g.name = name.clone();
            plan.mutations.push(Mutation::PutGroup(g.clone()));
            plan.outcome.group = Some(g);
        }
        ListOp::SetPrivacy(p) => {
            plan.mutations.push(Mutation::SetPrivacy(*p));
            if *p != roster.privacy {
                // Everyone on neither AL nor BL flips visibility; RL members are the ones
                // who can be watching.
                plan.outcome.privacy_changed = roster
                    .on_list(List::Reverse)
                    .filter(|c| !c.lists.contains(List::Allow) && !c.lists.contains(List::Block))
                    .map(|c| c.email.clone())
                    .collect();
            }
        }
        ListOp::SetGtc(g) => plan.mutations.push(Mutation::SetGtc(*g)),
        ListOp::SetFriendlyName(name) => {
            if !valid_name(name) {
                return Err(ListError::InvalidName);
            }
            plan.mutations.push(Mutation::SetFriendlyName(name.clone()));
        }
        ListOp::SetNickname { contact, name } => {
            if !valid_name(name) {
                return Err(ListError::InvalidName);
            }
            let mut c = roster
                .contact_by_guid(*contact)
                .cloned()
                .ok_or(ListError::InvalidUser)?;
            c.nickname = Some(name.clone());
            plan.mutations.push(Mutation::PutContact(c.clone()));
            plan.outcome.contact = Some(c);
        }
        ListOp::SetProperty { key, value } => {
            if !["PHH", "PHW", "PHM", "MOB", "MBE", "WWE"].contains(&key.as_str())
                || value.chars().count() > 95
                || value.chars().any(|c| c.is_control())
            {
                return Err(ListError::InvalidProperty);
            }
            plan.mutations.push(Mutation::SetProperty {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    Ok(plan)
}

fn find<'a>(roster: &'a Roster, r: &ContactRef) -> Option<&'a Contact> {
    match r {
        ContactRef::Email(e) => roster.contact(e),
        ContactRef::Guid(g) => roster.contact_by_guid(*g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(s: &str) -> Email {
        Email::parse(s).unwrap()
    }

    fn bob() -> Target {
        Target {
            user: UserId(2),
            email: email("bob@example.com"),
            friendly_name: "Bob".into(),
            peer: PeerView::default(),
        }
    }

    fn add(list: List) -> ListOp {
        ListOp::Add {
            list,
            target: ContactRef::Email(email("bob@example.com")),
            group: None,
        }
    }

    fn applied(
        roster: &mut Roster,
        op: &ListOp,
        t: Option<&Target>,
    ) -> Result<EditOutcome, ListError> {
        // A tiny in-memory "store" so the rules can be exercised in sequence.
        let plan = apply(roster, UserId(1), op, t)?;
        for m in plan.mutations {
            match m {
                Mutation::PutContact(c) => {
                    roster.contacts.retain(|x| x.user != c.user);
                    roster.contacts.push(c);
                }
                Mutation::DeleteContact(u) => roster.contacts.retain(|x| x.user != u),
                Mutation::PutGroup(g) => {
                    roster.groups.retain(|x| x.number != g.number);
                    roster.groups.push(g);
                }
                Mutation::DeleteGroup(n) => roster.groups.retain(|x| x.number != n),
                Mutation::SetPrivacy(p) => roster.privacy = p,
                _ => {}
            }
        }
        roster.version += 1;
        Ok(plan.outcome)
    }

    #[test]
    fn add_forward_sets_reverse_and_refuses_duplicates() {
        let mut r = Roster::default();
        let out = applied(&mut r, &add(List::Forward), Some(&bob())).unwrap();
        assert_eq!(out.reverse, Some((email("bob@example.com"), true)));
        assert_eq!(
            applied(&mut r, &add(List::Forward), Some(&bob())),
            Err(ListError::AlreadyOnList)
        );
        assert_eq!(
            apply(&r, UserId(1), &add(List::Reverse), Some(&bob())).unwrap_err(),
            ListError::ServerList
        );
    }

    #[test]
    fn unknown_user_is_invalid() {
        assert_eq!(
            apply(&Roster::default(), UserId(1), &add(List::Forward), None).unwrap_err(),
            ListError::InvalidUser
        );
    }

    #[test]
    fn allow_and_block_are_exclusive() {
        let mut r = Roster::default();
        applied(&mut r, &add(List::Allow), Some(&bob())).unwrap();
        assert_eq!(
            applied(&mut r, &add(List::Block), Some(&bob())),
            Err(ListError::InOppositeList)
        );
        let rem = ListOp::Remove {
            list: List::Allow,
            target: ContactRef::Email(email("bob@example.com")),
            group: None,
        };
        let out = applied(&mut r, &rem, None).unwrap();
        assert_eq!(out.privacy_changed, vec![email("bob@example.com")]);
        assert!(r.contacts.is_empty(), "row with no lists left is deleted");
        applied(&mut r, &add(List::Block), Some(&bob())).unwrap();
    }

    #[test]
    fn groups() {
        let mut r = Roster::default();
        let g = applied(
            &mut r,
            &ListOp::AddGroup {
                name: "Friends".into(),
            },
            None,
        )
        .unwrap()
        .group
        .unwrap();
        assert_eq!(g.number, 1);
        assert_eq!(
            applied(
                &mut r,
                &ListOp::AddGroup {
                    name: "Friends".into()
                },
                None
            ),
            Err(ListError::GroupExists)
        );
        assert_eq!(
            applied(
                &mut r,
                &ListOp::AddGroup {
                    name: "x".repeat(62)
                },
                None
            ),
            Err(ListError::GroupNameInvalid)
        );
        let in_group = ListOp::Add {
            list: List::Forward,
            target: ContactRef::Email(email("bob@example.com")),
            group: Some(GroupRef::Number(1)),
        };
        applied(&mut r, &add(List::Forward), Some(&bob())).unwrap();
        applied(&mut r, &in_group, Some(&bob())).unwrap();
        assert_eq!(r.contacts[0].groups, vec![1]);
        assert_eq!(
            applied(&mut r, &in_group, Some(&bob())),
            Err(ListError::AlreadyOnList)
        );
        assert_eq!(
            applied(
                &mut r,
                &ListOp::RemoveGroup {
                    group: GroupRef::Number(0)
                },
                None
            ),
            Err(ListError::GroupZero)
        );
        applied(
            &mut r,
            &ListOp::RemoveGroup {
                group: GroupRef::Guid(g.guid),
            },
            None,
        )
        .unwrap();
        assert!(r.contacts[0].groups.is_empty() && r.groups.is_empty());
    }

    #[test]
    fn list_and_group_limits() {
        let mut r = Roster::default();
        for i in 0..MAX_LIST_LEN {
            r.contacts.push(Contact {
                user: UserId(100 + i as i64),
                email: email(&format!("c{i}@example.com")),
                friendly_name: "C".into(),
                nickname: None,
                guid: Uuid::new_v4(),
                lists: ListMask(List::Forward.bit()),
                groups: Vec::new(),
                peer: PeerView::default(),
                changed_at: 0,
            });
        }
        assert_eq!(
            apply(&r, UserId(1), &add(List::Forward), Some(&bob())).unwrap_err(),
            ListError::ListFull
        );
        // Other lists have their own room.
        assert!(apply(&r, UserId(1), &add(List::Allow), Some(&bob())).is_ok());
        for n in 1..=MAX_GROUPS as u32 {
            r.groups.push(Group {
                number: n,
                guid: Uuid::new_v4(),
                name: format!("g{n}"),
                changed_at: 0,
            });
        }
        assert_eq!(
            apply(
                &r,
                UserId(1),
                &ListOp::AddGroup {
                    name: "one more".into()
                },
                None
            )
            .unwrap_err(),
            ListError::TooManyGroups
        );
        assert_eq!(
            apply(
                &r,
                UserId(1),
                &ListOp::SetFriendlyName("bad\u{7}name".into()),
                None
            )
            .unwrap_err(),
            ListError::InvalidName
        );
    }

    #[test]
    fn outcome_carries_the_stamp_and_the_horizon_is_the_retention() {
        let mut r = Roster::default();
        let out = applied(&mut r, &add(List::Forward), Some(&bob()))
            .unwrap()
            .stamped(42);
        assert_eq!(out.contact.unwrap().changed_at, 42);
        let g = applied(&mut r, &ListOp::AddGroup { name: "G".into() }, None)
            .unwrap()
            .stamped(43);
        assert_eq!(g.group.unwrap().changed_at, 43);

        let now = now_ms();
        assert!(now > 1_600_000_000_000, "milliseconds since 1970");
        let day = 24 * 60 * 60 * 1000;
        assert_eq!(now - deltas_reach_back_to(now), 30 * day);
        assert_eq!(deltas_reach_back_to(i64::MIN), i64::MIN);
    }

    #[test]
    fn privacy_rules() {
        assert!(visible_to(Privacy::AllowAll, ListMask::default()));
        assert!(!visible_to(Privacy::BlockAll, ListMask::default()));
        assert!(visible_to(Privacy::BlockAll, ListMask(List::Allow.bit())));
        assert!(!visible_to(
            Privacy::AllowAll,
            ListMask(List::Block.bit() | List::Forward.bit())
        ));
    }
}
