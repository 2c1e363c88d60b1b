//! The edit actions of SharingService and ABService (spec §3.3, §3.5, §3.6): each becomes
//! one or more `ListOp`s through `Store::edit` — the same list rules as the NS's `ADL`,
//! `ADC`, `REM` — and every applied edit is announced on the bus exactly as the NS
//! announces its own (`bus::announce_edit`), so users of every dialect see its effect.
//!
//! Edits are idempotent where clients expect it: WLM mirrors each SOAP edit with an `ADL`
//! or `RML`, and retries; "already so" is success.

use butterfly_core::account::{Account, Email};
use butterfly_core::bus;
use butterfly_core::ids::{self, Role};
use butterfly_core::lists::{
    ContactRef, EditOutcome, GroupRef, Gtc, List, ListError, ListOp, Privacy,
};
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

/// Carry out `edit` for `owner`. Durable before it returns; announced after.
pub(crate) async fn apply(
    deps: &Deps,
    owner: &Account,
    edit: Edit,
    body: &Element,
) -> Result<Answer, Fault> {
    let mut run = Run { deps, owner, edit };
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
                let target = ContactRef::Email(email.clone());
                let out = run.add(List::Forward, target.clone(), None).await?;
                if allow {
                    // Not over a block the user set: that stays.
                    run.add_unless_opposite(List::Allow, target).await?;
                }
                made = made.or(out.and_then(|o| o.contact).map(|c| c.guid));
                if made.is_none() {
                    made = run.contact_guid(&email).await?;
                }
            }
            made.map_or(Answer::Empty, Answer::Guid)
        }
        Edit::ContactDelete => {
            for contact in all(body.child("contacts"), "Contact") {
                // Unknown contacts: success (the client also sends RML).
                if let Some(id) = guid(contact.text_at(&["contactId"])) {
                    run.remove(List::Forward, ContactRef::Guid(id), None)
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
                    let out = if edit == Edit::GroupContactAdd {
                        run.add(List::Forward, target.clone(), group).await?
                    } else {
                        run.remove(List::Forward, target.clone(), group).await?
                    };
                    made = made.or(out.and_then(|o| o.contact).map(|c| c.guid));
                }
            }
            made.map_or(Answer::Empty, Answer::Guid)
        }
    };
    Ok(answer)
}

/// One request's edits.
struct Run<'a> {
    deps: &'a Deps,
    owner: &'a Account,
    edit: Edit,
}

impl Run<'_> {
    fn refused(&self, errorcode: &'static str, why: &str) -> Fault {
        Fault::refused(self.edit.name(), errorcode, why)
    }

    fn email(&self, text: Option<&str>) -> Result<Email, Fault> {
        let text = text.unwrap_or_default().trim();
        if !text.contains('@') || !text.contains('.') {
            return Err(self.refused("BadEmailArgument", "The address is not an e-mail address"));
        }
        Email::parse(text).map_err(|_| self.refused("BadEmailArgument", "The address is invalid"))
    }

    /// Apply one op; `None` when it was already so (idempotent). Announced at once.
    async fn op(&mut self, op: ListOp) -> Result<Option<EditOutcome>, Fault> {
        let store = &self.deps.store;
        let out = match store.edit(self.owner.id, op).await {
            Ok(Ok(out)) => out,
            Ok(Err(ListError::AlreadyOnList | ListError::NotOnList)) => return Ok(None),
            Ok(Err(e)) => return Err(self.list_fault(e)),
            Err(e) => {
                tracing::error!(error = %e, "Store failed during a SOAP edit");
                return Err(Fault::server());
            }
        };
        // The roster after the edit: what the people it concerns are told.
        if let Ok(roster) = store.roster(self.owner.id).await {
            bus::announce_edit(self.deps.bus.as_ref(), &self.owner.email, &roster, &out).await;
        }
        Ok(Some(out))
    }

    async fn add(
        &mut self,
        list: List,
        target: ContactRef,
        group: Option<GroupRef>,
    ) -> Result<Option<EditOutcome>, Fault> {
        self.op(ListOp::Add {
            list,
            target,
            group,
        })
        .await
    }

    /// Add to AL or BL; on the other one already, leave it.
    async fn add_unless_opposite(&mut self, list: List, target: ContactRef) -> Result<(), Fault> {
        match self.add(list, target, None).await {
            Ok(_) => Ok(()),
            Err(f) if f.errorcode() == Some("InOppositeList") => Ok(()),
            Err(f) => Err(f),
        }
    }

    async fn remove(
        &mut self,
        list: List,
        target: ContactRef,
        group: Option<GroupRef>,
    ) -> Result<Option<EditOutcome>, Fault> {
        self.op(ListOp::Remove {
            list,
            target,
            group,
        })
        .await
    }

    async fn contact_guid(&self, email: &Email) -> Result<Option<Uuid>, Fault> {
        match self.deps.store.roster(self.owner.id).await {
            Ok(r) => Ok(r.contact(email).map(|c| c.guid)),
            Err(_) => Err(Fault::server()),
        }
    }

    /// One `Member` of AddMember/DeleteMember.
    async fn member(&mut self, role: &str, member: &Element, add: bool) -> Result<(), Fault> {
        let list = match role {
            "Allow" => List::Allow,
            "Block" => List::Block,
            // Reverse is the server's; Pending is not kept yet: accepted, nothing to do.
            "Reverse" | "Pending" => return Ok(()),
            _ => return Err(Fault::client("Unknown member role")),
        };
        let target = match member
            .text_at(&["PassportName"])
            .filter(|t| !t.trim().is_empty())
        {
            Some(name) => ContactRef::Email(self.email(Some(name))?),
            None => {
                let id = member.text_at(&["MembershipId"]).unwrap_or_default();
                match ids::parse_membership_id(id) {
                    Some((user, r)) if r == role_of(list) => {
                        match self.deps.store.account_by_id(user).await {
                            Ok(Some(a)) => ContactRef::Email(a.email),
                            Ok(None) => return Ok(()),
                            Err(_) => return Err(Fault::server()),
                        }
                    }
                    _ => return Err(self.refused("MemberDoesNotExist", "No such membership")),
                }
            }
        };
        if add {
            // Allowing someone blocked (or blocking someone allowed) moves them.
            let opposite = if list == List::Allow {
                List::Block
            } else {
                List::Allow
            };
            match self.add(list, target.clone(), None).await {
                Ok(_) => Ok(()),
                Err(f) if f.errorcode() == Some("InOppositeList") => {
                    self.remove(opposite, target.clone(), None).await?;
                    self.add(list, target, None).await.map(drop)
                }
                Err(f) => Err(f),
            }
        } else {
            self.remove(list, target, None).await.map(drop)
        }
    }

    /// ABContactUpdate: the Me contact's settings and name, or a contact's nickname.
    async fn update(&mut self, contact: &Element) -> Result<(), Fault> {
        let info = contact.child("contactInfo");
        let annotations: Vec<(&str, &str)> =
            all(info.and_then(|i| i.child("annotations")), "Annotation")
                .map(|a| {
                    (
                        a.text_at(&["Name"]).unwrap_or_default(),
                        a.text_at(&["Value"]).unwrap_or_default(),
                    )
                })
                .collect();
        let is_me = info.and_then(|i| i.text_at(&["contactType"])) == Some("Me");
        if is_me {
            for (name, value) in annotations {
                match (name, value.trim()) {
                    ("MSN.IM.BLP", "1") => {
                        self.setting(ListOp::SetPrivacy(Privacy::AllowAll)).await?
                    }
                    ("MSN.IM.BLP", "2") => {
                        self.setting(ListOp::SetPrivacy(Privacy::BlockAll)).await?
                    }
                    ("MSN.IM.GTC", "1") => self.setting(ListOp::SetGtc(Gtc::Ask)).await?,
                    ("MSN.IM.GTC", "2") => self.setting(ListOp::SetGtc(Gtc::NoAsk)).await?,
                    // MPOP, roaming, MBEA, profile stamps: accepted, not kept yet.
                    _ => {}
                }
            }
            if let Some(name) = info
                .and_then(|i| i.text_at(&["displayName"]))
                .filter(|n| !n.is_empty())
            {
                self.setting(ListOp::SetFriendlyName(name.to_owned()))
                    .await?;
            }
            return Ok(());
        }
        let Some(id) = guid(contact.text_at(&["contactId"])) else {
            return Err(self.refused("ContactDoesNotExist", "No such contact"));
        };
        for (name, value) in annotations {
            if name == "AB.NickName" {
                self.op(ListOp::SetNickname {
                    contact: id,
                    name: value.to_owned(),
                })
                .await?;
            }
        }
        Ok(())
    }

    /// A setting already in force is success.
    async fn setting(&mut self, op: ListOp) -> Result<(), Fault> {
        self.op(op).await.map(drop)
    }

    fn list_fault(&self, e: ListError) -> Fault {
        let (code, why) = match e {
            ListError::InvalidUser => ("InvalidPassportUser", "No such account"),
            ListError::InOppositeList => ("InOppositeList", "On the opposite list"),
            ListError::ListFull => ("QuotaLimitReached", "The list is full"),
            ListError::SelfContact => ("InvalidPassportUser", "One's own account"),
            ListError::InvalidGroup | ListError::NotInGroup | ListError::GroupZero => {
                ("GroupDoesNotExist", "No such group")
            }
            ListError::TooManyGroups => ("QuotaLimitReached", "Too many groups"),
            ListError::GroupExists => ("GroupAlreadyExists", "A group of that name exists"),
            ListError::GroupNameInvalid => ("BadArgumentLength", "The group name is too long"),
            ListError::InvalidName => ("BadArgumentLength", "The name is invalid"),
            ListError::ServerList | ListError::InvalidProperty => {
                ("BadArgument", "Not a change a client may make")
            }
            // `op` answers these as success before asking for a fault.
            ListError::AlreadyOnList | ListError::NotOnList => ("BadArgument", "No change"),
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
