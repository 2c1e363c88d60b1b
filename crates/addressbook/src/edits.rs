//! The edit actions of SharingService and ABService (spec §3.3, §3.5, §3.6): each becomes
//! one or more `ListOp`s through `Store::edit` — the same list rules as the NS's `ADL`,
//! `ADC`, `REM` — and every applied edit is announced on the bus exactly as the NS
//! announces its own (`bus::announce_edit`), so users of every dialect see its effect.
//!
//! Edits are idempotent where clients expect it: WLM mirrors each SOAP edit with an `ADL`
//! or `RML`, and retries; "already so" is success. Refusals carry the errorcode and the
//! faultstring the official service sent (`BadEmailArgument`, `InvalidPassportUser`,
//! `UserDoesNotExist`, `MemberDoesNotExist`, `ContactDoesNotExist`, `GroupAlreadyExists`,
//! `GroupDoesNotExist`, `BadArgumentLength`), HTTP 500 like every fault.

use std::sync::atomic::{AtomicBool, Ordering};

use butterfly_core::account::{Account, Email};
use butterfly_core::bus::{self, UserEvent};
use butterfly_core::ids::{self, Role};
use butterfly_core::lists::{
    ContactRef, EditOutcome, GroupRef, Gtc, List, ListError, ListOp, Privacy,
};
use butterfly_core::store::StoreError;
use uuid::Uuid;

use crate::Deps;
use crate::soap::Fault;
use crate::xml::Element;

/// What an edit answers with: nothing, or the GUID of the contact or group it made.
pub(crate) enum Answer {
    Empty,
    Guid(Uuid),
}

/// The edit actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edit {
    AddMember,
    DeleteMember,
    ContactAdd,
    ContactDelete,
    ContactUpdate,
    GroupAdd,
    GroupUpdate,
    GroupDelete,
    GroupContactAdd,
    GroupContactDelete,
}

impl Edit {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Edit::AddMember => "AddMember",
            Edit::DeleteMember => "DeleteMember",
            Edit::ContactAdd => "ABContactAdd",
            Edit::ContactDelete => "ABContactDelete",
            Edit::ContactUpdate => "ABContactUpdate",
            Edit::GroupAdd => "ABGroupAdd",
            Edit::GroupUpdate => "ABGroupUpdate",
            Edit::GroupDelete => "ABGroupDelete",
            Edit::GroupContactAdd => "ABGroupContactAdd",
            Edit::GroupContactDelete => "ABGroupContactDelete",
        }
    }

    /// The element the answer's GUID is written in, for the edits that return one.
    pub(crate) fn result_name(self) -> Option<&'static str> {
        match self {
            Edit::ContactAdd => Some("ABContactAddResult"),
            Edit::GroupAdd => Some("ABGroupAddResult"),
            Edit::GroupContactAdd => Some("ABGroupContactAddResult"),
            _ => None,
        }
    }
}

/// The children of `el` called `name`.
fn all<'a>(el: Option<&'a Element>, name: &'a str) -> impl Iterator<Item = &'a Element> {
    el.into_iter()
        .flat_map(|e| e.children.iter())
        .filter(move |c| c.name == name)
}

fn guid(text: Option<&str>) -> Option<Uuid> {
    Uuid::try_parse(text?.trim().trim_start_matches('{').trim_end_matches('}')).ok()
}

/// The name WLM shows for contacts in no group; a real group of that name would be
/// confused with it (the official service refused it as existing).
const NO_GROUP: &str = "(No Group)";

/// Carry out `edit` for `owner`. Durable before it returns; announced after. The owner's
/// own sessions are told their lists changed (once, after every applied part, even when a
/// later part is refused), so the NS watches whoever came onto the forward list.
pub(crate) async fn apply(
    deps: &Deps,
    owner: &Account,
    edit: Edit,
    body: &Element,
) -> Result<Answer, Fault> {
    let run = Run {
        deps,
        owner,
        edit,
        changed: AtomicBool::new(false),
    };
    let result = apply_parts(&run, body).await;
    if run.changed.load(Ordering::Relaxed) {
        deps.bus.send(&owner.email, UserEvent::ListsChanged).await;
    }
    result
}

async fn apply_parts(run: &Run<'_>, body: &Element) -> Result<Answer, Fault> {
    let edit = run.edit;
    let answer = match edit {
        Edit::AddMember | Edit::DeleteMember => {
            let add = edit == Edit::AddMember;
            for membership in all(body.child("memberships"), "Membership") {
                let role = membership.text_at(&["MemberRole"]).unwrap_or_default();
                for member in all(membership.child("Members"), "Member") {
                    run.member(role, member, add).await?;
                }
            }
            Answer::Empty
        }
        Edit::ContactAdd => {
            let mut made = None;
            let allow =
                crate::soap::boolean(body.text_at(&["options", "EnableAllowListManagement"]));
            for contact in all(body.child("contacts"), "Contact") {
                let email = run.email(contact.text_at(&["contactInfo", "passportName"]))?;
                let target = ContactRef::Email(email);
                let out = run.op(add(List::Forward, target.clone(), None)).await?;
                if allow {
                    // Not over a block the user set: that stays.
                    match run.attempt(add(List::Allow, target.clone(), None)).await? {
                        Ok(_) | Err(ListError::InOppositeList) => {}
                        Err(e) => return Err(run.list_fault(e, Some(&target))),
                    }
                }
                if made.is_none() {
                    made = match out.and_then(|o| o.contact) {
                        Some(c) => Some(c.guid),
                        // Already on the list: its existing GUID.
                        None => run.contact_guid(&target).await?,
                    };
                }
            }
            made.map_or(Answer::Empty, Answer::Guid)
        }
        Edit::ContactDelete => {
            for contact in all(body.child("contacts"), "Contact") {
                // Unknown contacts: success (the client also sends RML).
                if let Some(id) = guid(contact.text_at(&["contactId"])) {
                    run.op(remove(List::Forward, ContactRef::Guid(id), None))
                        .await?;
                }
            }
            Answer::Empty
        }
        Edit::ContactUpdate => {
            for contact in all(body.child("contacts"), "Contact") {
                run.update(contact).await?;
            }
            Answer::Empty
        }
        Edit::GroupAdd => {
            let name = body
                .text_at(&["groupInfo", "GroupInfo", "name"])
                .ok_or_else(|| Fault::client("ABGroupAdd without a group name"))?;
            run.check_group_name(name)?;
            let out = run
                .op(ListOp::AddGroup {
                    name: name.to_owned(),
                })
                .await?;
            match out.and_then(|o| o.group) {
                Some(g) => Answer::Guid(g.guid),
                None => Answer::Empty,
            }
        }
        Edit::GroupUpdate => {
            for group in all(body.child("groups"), "Group") {
                let (Some(id), Some(name)) = (
                    guid(group.text_at(&["groupId"])),
                    group.text_at(&["groupInfo", "name"]),
                ) else {
                    continue;
                };
                run.check_group_name(name)?;
                run.op(ListOp::RenameGroup {
                    group: GroupRef::Guid(id),
                    name: name.to_owned(),
                })
                .await?;
            }
            Answer::Empty
        }
        Edit::GroupDelete => {
            for id in all(body.find(&["groupFilter", "groupIds"]), "guid") {
                if let Some(id) = guid(Some(&id.text)) {
                    run.op(ListOp::RemoveGroup {
                        group: GroupRef::Guid(id),
                    })
                    .await?;
                }
            }
            Answer::Empty
        }
        Edit::GroupContactAdd | Edit::GroupContactDelete => {
            let groups: Vec<Uuid> = all(body.find(&["groupFilter", "groupIds"]), "guid")
                .filter_map(|g| guid(Some(&g.text)))
                .collect();
            if groups.is_empty() {
                return Err(Fault::client("No group named in groupFilter"));
            }
            let adding = edit == Edit::GroupContactAdd;
            let mut made = None;
            for contact in all(body.child("contacts"), "Contact") {
                let target = match guid(contact.text_at(&["contactId"])) {
                    Some(id) => ContactRef::Guid(id),
                    // Create-and-add: named by address.
                    None => ContactRef::Email(
                        run.email(contact.text_at(&["contactInfo", "passportName"]))?,
                    ),
                };
                for g in &groups {
                    let group = Some(GroupRef::Guid(*g));
                    let op = if adding {
                        add(List::Forward, target.clone(), group)
                    } else {
                        remove(List::Forward, target.clone(), group)
                    };
                    run.op(op).await?;
                }
                if adding && made.is_none() {
                    made = run.contact_guid(&target).await?;
                }
            }
            made.map_or(Answer::Empty, Answer::Guid)
        }
    };
    Ok(answer)
}

fn add(list: List, target: ContactRef, group: Option<GroupRef>) -> ListOp {
    ListOp::Add {
        list,
        target,
        group,
    }
}

fn remove(list: List, target: ContactRef, group: Option<GroupRef>) -> ListOp {
    ListOp::Remove {
        list,
        target,
        group,
    }
}

/// The contact an op is about, for naming it in a fault.
fn subject(op: &ListOp) -> Option<ContactRef> {
    match op {
        ListOp::Add { target, .. } | ListOp::Remove { target, .. } => Some(target.clone()),
        ListOp::SetNickname { contact, .. } => Some(ContactRef::Guid(*contact)),
        _ => None,
    }
}

fn storage(e: StoreError) -> Fault {
    tracing::error!(error = %e, "Store failed during a SOAP edit");
    Fault::server()
}

/// One request's edits.
struct Run<'a> {
    deps: &'a Deps,
    owner: &'a Account,
    edit: Edit,
    /// Whether any part was applied (not refused, not already so).
    changed: AtomicBool,
}

impl Run<'_> {
    fn refused(&self, errorcode: &'static str, why: &str) -> Fault {
        Fault::refused(self.edit.name(), errorcode, why)
    }

    /// An address as the official service checked it (its faultstrings, which clients
    /// show).
    fn email(&self, text: Option<&str>) -> Result<Email, Fault> {
        let text = text.unwrap_or_default().trim();
        let missing = |c: char| {
            self.refused(
                "BadEmailArgument",
                &format!("Malformed email Argument Email missing '{c}' character"),
            )
        };
        let (_, domain) = text.split_once('@').ok_or_else(|| missing('@'))?;
        if !domain.contains('.') {
            return Err(missing('.'));
        }
        Email::parse(text).map_err(|_| self.refused("BadEmailArgument", "Malformed email Argument"))
    }

    fn check_group_name(&self, name: &str) -> Result<(), Fault> {
        if name.trim().eq_ignore_ascii_case(NO_GROUP) {
            return Err(self.list_fault(ListError::GroupExists, None));
        }
        Ok(())
    }

    /// Apply one op through the list rules: `Ok(None)` when it was already so (WLM
    /// retries, and mirrors each edit with `ADL`/`RML`), `Err` when the rules refuse it.
    /// An applied edit is announced before this returns.
    async fn attempt(&self, op: ListOp) -> Result<Result<Option<EditOutcome>, ListError>, Fault> {
        let store = &self.deps.store;
        let out = match store.edit(self.owner.id, op).await.map_err(storage)? {
            Ok(out) => out,
            Err(ListError::AlreadyOnList | ListError::NotOnList | ListError::NotInGroup) => {
                return Ok(Ok(None));
            }
            Err(e) => return Ok(Err(e)),
        };
        self.changed.store(true, Ordering::Relaxed);
        // The roster after the edit: what the people it concerns are told.
        match store.roster(self.owner.id).await {
            Ok(roster) => {
                bus::announce_edit(self.deps.bus.as_ref(), &self.owner.email, &roster, &out).await
            }
            Err(e) => tracing::warn!(error = %e, "Edit stored but not announced"),
        }
        Ok(Ok(Some(out)))
    }

    /// [`Run::attempt`], with a refusal as the fault clients read.
    async fn op(&self, op: ListOp) -> Result<Option<EditOutcome>, Fault> {
        let subject = subject(&op);
        self.attempt(op)
            .await?
            .map_err(|e| self.list_fault(e, subject.as_ref()))
    }

    /// The GUID of the owner's row for `target`, if there is one.
    async fn contact_guid(&self, target: &ContactRef) -> Result<Option<Uuid>, Fault> {
        match target {
            ContactRef::Guid(id) => Ok(Some(*id)),
            ContactRef::Email(email) => {
                let roster = self
                    .deps
                    .store
                    .roster(self.owner.id)
                    .await
                    .map_err(storage)?;
                Ok(roster.contact(email).map(|c| c.guid))
            }
        }
    }

    /// One `Member` of AddMember/DeleteMember, named by `PassportName` (or `Email`) or by
    /// `MembershipId`.
    async fn member(&self, role: &str, member: &Element, add_it: bool) -> Result<(), Fault> {
        let list = match role {
            "Allow" => List::Allow,
            "Block" => List::Block,
            // Reverse is the server's: WLM adds it when accepting someone; nothing to do.
            // Pending is derived (on RL, neither allowed nor blocked), not kept: deleting
            // it changes nothing until the store keeps it.
            "Reverse" | "Pending" => return Ok(()),
            _ => return Err(Fault::client("Unknown member role")),
        };
        let no_member = || self.refused("MemberDoesNotExist", "Member does not exist");
        let name = ["PassportName", "Email"]
            .into_iter()
            .find_map(|n| member.text_at(&[n]).filter(|t| !t.is_empty()));
        let target = match name {
            Some(name) => {
                let email = self.email(Some(name))?;
                // No such account: nobody to delete (one to add is refused by the rules).
                if !add_it
                    && (self.deps.store.account_by_email(&email).await)
                        .map_err(storage)?
                        .is_none()
                {
                    return Err(no_member());
                }
                ContactRef::Email(email)
            }
            None => {
                let id = member.text_at(&["MembershipId"]).unwrap_or_default();
                let (user, _) = ids::parse_membership_id(id)
                    .filter(|(_, r)| *r == role_of(list))
                    .ok_or_else(no_member)?;
                match self.deps.store.account_by_id(user).await.map_err(storage)? {
                    Some(a) => ContactRef::Email(a.email),
                    None => return Err(no_member()),
                }
            }
        };
        if !add_it {
            // Not on that role: already so.
            return self.op(remove(list, target, None)).await.map(drop);
        }
        match self.attempt(add(list, target.clone(), None)).await? {
            Ok(_) => Ok(()),
            // Allowing someone blocked (or blocking someone allowed) moves them.
            Err(ListError::InOppositeList) => {
                let opposite = if list == List::Allow {
                    List::Block
                } else {
                    List::Allow
                };
                self.op(remove(opposite, target.clone(), None)).await?;
                self.op(add(list, target, None)).await.map(drop)
            }
            Err(e) => Err(self.list_fault(e, Some(&target))),
        }
    }

    /// ABContactUpdate: the Me contact's settings and name, or a contact's nickname.
    /// `propertiesChanged` (space-separated), when given, says which fields to apply; other
    /// fields a client sends along may be stale.
    async fn update(&self, contact: &Element) -> Result<(), Fault> {
        let info = contact.child("contactInfo");
        let id = guid(contact.text_at(&["contactId"]));
        let listed = contact
            .text_at(&["propertiesChanged"])
            .filter(|p| !p.is_empty());
        let changed = |property: &str| {
            listed.is_none_or(|p| {
                p.split_whitespace()
                    .any(|x| x.eq_ignore_ascii_case(property))
            })
        };
        let annotations: Vec<(&str, &str)> = if changed("Annotation") {
            all(info.and_then(|i| i.child("annotations")), "Annotation")
                .map(|a| {
                    (
                        a.text_at(&["Name"]).unwrap_or_default(),
                        a.text_at(&["Value"]).unwrap_or_default(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let is_me = info.and_then(|i| i.text_at(&["contactType"])) == Some("Me")
            || id == Some(crate::me_contact_id(self.owner.id));
        if is_me {
            for (name, value) in annotations {
                // 1 and 2 as in BLP AL/BL and GTC A/N; 0 or empty: no setting.
                let op = match (name, value) {
                    ("MSN.IM.BLP", "1") => ListOp::SetPrivacy(Privacy::AllowAll),
                    ("MSN.IM.BLP", "2") => ListOp::SetPrivacy(Privacy::BlockAll),
                    ("MSN.IM.GTC", "1") => ListOp::SetGtc(Gtc::Ask),
                    ("MSN.IM.GTC", "2") => ListOp::SetGtc(Gtc::NoAsk),
                    // MPOP, roaming, MBEA, profile stamps: accepted, not kept yet.
                    _ => continue,
                };
                self.op(op).await?;
            }
            let name = info.and_then(|i| i.text_at(&["displayName"]));
            if let Some(name) = name.filter(|n| !n.is_empty() && changed("DisplayName")) {
                self.op(ListOp::SetFriendlyName(name.to_owned())).await?;
            }
            return Ok(());
        }
        let roster = self
            .deps
            .store
            .roster(self.owner.id)
            .await
            .map_err(storage)?;
        let Some(id) = id.filter(|id| roster.contact_by_guid(*id).is_some()) else {
            return Err(self.list_fault(ListError::InvalidUser, None));
        };
        for (name, value) in annotations {
            // An empty nickname would clear it, which the list rules do not do: ignored.
            if name == "AB.NickName" && !value.is_empty() {
                self.op(ListOp::SetNickname {
                    contact: id,
                    name: value.to_owned(),
                })
                .await?;
            }
        }
        // Other properties (IsMessengerUser, names, phones …): accepted, not kept.
        Ok(())
    }

    /// The fault clients read for a refusal; `subject` is the contact the edit named.
    fn list_fault(&self, e: ListError, subject: Option<&ContactRef>) -> Fault {
        let sign_in_name;
        let (code, why) = match e {
            ListError::InvalidUser | ListError::SelfContact => match subject {
                Some(ContactRef::Email(_))
                    if matches!(self.edit, Edit::AddMember | Edit::DeleteMember) =>
                {
                    ("UserDoesNotExist", "User does not exist")
                }
                Some(ContactRef::Email(email)) => {
                    sign_in_name =
                        format!("The Passport user specified is invalid SignInName: {email}");
                    ("InvalidPassportUser", sign_in_name.as_str())
                }
                _ => ("ContactDoesNotExist", "Contact Does Not Exist"),
            },
            ListError::ListFull => ("QuotaLimitReached", "The list is full"),
            ListError::InvalidGroup | ListError::GroupZero => {
                ("GroupDoesNotExist", "Group does not exist")
            }
            ListError::TooManyGroups => ("QuotaLimitReached", "Too many groups"),
            ListError::GroupExists => ("GroupAlreadyExists", "Group Already Exists"),
            ListError::GroupNameInvalid => (
                "BadArgumentLength",
                "Argument Exceeded Allowed Length GroupName exceeded length",
            ),
            ListError::InvalidName => ("BadArgumentLength", "The name is empty or too long"),
            ListError::InOppositeList | ListError::ServerList | ListError::InvalidProperty => {
                ("BadArgument", "Not a change a client may make")
            }
            // `attempt` answers these as success.
            ListError::AlreadyOnList | ListError::NotOnList | ListError::NotInGroup => {
                ("BadArgument", "No change")
            }
        };
        self.refused(code, why)
    }
}

fn role_of(list: List) -> Role {
    if list == List::Block {
        Role::Block
    } else {
        Role::Allow
    }
}
