//! Domain ⇄ wire conversions, used only at the edge (the server's handlers and the
//! client's calls).
//!
//! Domain → wire is infallible (`From`). Wire → domain is checked (`TryFrom`, error
//! [`InvalidMessage`]): a sign-in name that does not parse, a malformed GUID, an enum value that
//! is unknown or `*_UNSPECIFIED`, a missing required field. The server answers those with
//! `INVALID_ARGUMENT`; the client turns them into `StoreError::Backend`.

use butterfly_core::account::{Account, Email, LegacyMd5, NewAccount, UserId};
use butterfly_core::lists::{
    Contact, ContactRef, EditOutcome, Group, GroupRef, Gtc, List, ListError, ListMask, ListOp,
    PeerView, Privacy, Roster, Tombstone, TombstoneKind,
};
use butterfly_core::oim::{Oim, OimMeta, OimNew, OimRefused};
use butterfly_core::store::StoreError;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::pb::addressbook::v1 as pb;

/// A wire message that does not decode to valid domain values (the `TryFrom` conversions
/// from the [`pb`](crate::pb) types fail with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {detail}")]
pub struct InvalidMessage {
    what: &'static str,
    detail: String,
}

impl InvalidMessage {
    fn new(what: &'static str, detail: impl Into<String>) -> Self {
        InvalidMessage {
            what,
            detail: detail.into(),
        }
    }

    fn missing(what: &'static str) -> Self {
        InvalidMessage::new(what, "missing")
    }
}

impl From<InvalidMessage> for Status {
    fn from(e: InvalidMessage) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

/// A required message field.
pub(crate) fn required<T>(field: Option<T>, what: &'static str) -> Result<T, InvalidMessage> {
    field.ok_or_else(|| InvalidMessage::missing(what))
}

pub(crate) fn email(s: &str) -> Result<Email, InvalidMessage> {
    Email::parse(s).map_err(|e| InvalidMessage::new("sign-in name", e.to_string()))
}

fn guid(s: &str, what: &'static str) -> Result<Uuid, InvalidMessage> {
    Uuid::parse_str(s).map_err(|e| InvalidMessage::new(what, e.to_string()))
}

fn mask(bits: u32, what: &'static str) -> Result<ListMask, InvalidMessage> {
    u8::try_from(bits)
        .map(ListMask)
        .map_err(|_| InvalidMessage::new(what, format!("list mask {bits} is over 255")))
}

// ---------------------------------------------------------------------------------------
// Errors

/// The one place a store error becomes a status (server side).
pub(crate) fn store_error_to_status(e: StoreError) -> Status {
    match e {
        StoreError::DuplicateAccount => Status::already_exists(e.to_string()),
        StoreError::Backend(msg) => Status::internal(msg),
    }
}

/// The one place a status becomes a store error (client side). `ALREADY_EXISTS` is the
/// distinct duplicate-account code; every other failure is a backend failure.
pub(crate) fn status_to_store_error(method: &str, status: &Status) -> StoreError {
    match status.code() {
        Code::AlreadyExists => StoreError::DuplicateAccount,
        code => StoreError::Backend(format!(
            "address book {method}: {code:?}: {}",
            status.message()
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Enums

impl From<List> for pb::List {
    fn from(l: List) -> Self {
        match l {
            List::Forward => pb::List::Forward,
            List::Allow => pb::List::Allow,
            List::Block => pb::List::Block,
            List::Reverse => pb::List::Reverse,
            List::Pending => pb::List::Pending,
        }
    }
}

fn list(v: i32) -> Result<List, InvalidMessage> {
    match pb::List::try_from(v) {
        Ok(pb::List::Forward) => Ok(List::Forward),
        Ok(pb::List::Allow) => Ok(List::Allow),
        Ok(pb::List::Block) => Ok(List::Block),
        Ok(pb::List::Reverse) => Ok(List::Reverse),
        Ok(pb::List::Pending) => Ok(List::Pending),
        Ok(pb::List::Unspecified) | Err(_) => Err(InvalidMessage::new("list", v.to_string())),
    }
}

impl From<Privacy> for pb::Privacy {
    fn from(p: Privacy) -> Self {
        match p {
            Privacy::AllowAll => pb::Privacy::AllowAll,
            Privacy::BlockAll => pb::Privacy::BlockAll,
        }
    }
}

fn privacy(v: i32) -> Result<Privacy, InvalidMessage> {
    match pb::Privacy::try_from(v) {
        Ok(pb::Privacy::AllowAll) => Ok(Privacy::AllowAll),
        Ok(pb::Privacy::BlockAll) => Ok(Privacy::BlockAll),
        Ok(pb::Privacy::Unspecified) | Err(_) => Err(InvalidMessage::new("privacy", v.to_string())),
    }
}

impl From<Gtc> for pb::Gtc {
    fn from(g: Gtc) -> Self {
        match g {
            Gtc::Ask => pb::Gtc::Ask,
            Gtc::NoAsk => pb::Gtc::NoAsk,
        }
    }
}

fn gtc(v: i32) -> Result<Gtc, InvalidMessage> {
    match pb::Gtc::try_from(v) {
        Ok(pb::Gtc::Ask) => Ok(Gtc::Ask),
        Ok(pb::Gtc::NoAsk) => Ok(Gtc::NoAsk),
        Ok(pb::Gtc::Unspecified) | Err(_) => Err(InvalidMessage::new("gtc", v.to_string())),
    }
}

impl From<ListError> for pb::ListError {
    fn from(e: ListError) -> Self {
        match e {
            ListError::InvalidUser => pb::ListError::InvalidUser,
            ListError::AlreadyOnList => pb::ListError::AlreadyOnList,
            ListError::NotOnList => pb::ListError::NotOnList,
            ListError::InOppositeList => pb::ListError::InOppositeList,
            ListError::ListFull => pb::ListError::ListFull,
            ListError::ServerList => pb::ListError::ServerList,
            ListError::SelfContact => pb::ListError::SelfContact,
            ListError::InvalidGroup => pb::ListError::InvalidGroup,
            ListError::NotInGroup => pb::ListError::NotInGroup,
            ListError::TooManyGroups => pb::ListError::TooManyGroups,
            ListError::GroupExists => pb::ListError::GroupExists,
            ListError::GroupNameInvalid => pb::ListError::GroupNameInvalid,
            ListError::GroupZero => pb::ListError::GroupZero,
            ListError::InvalidName => pb::ListError::InvalidName,
            ListError::InvalidProperty => pb::ListError::InvalidProperty,
        }
    }
}

fn list_error(v: i32) -> Result<ListError, InvalidMessage> {
    Ok(match pb::ListError::try_from(v) {
        Ok(pb::ListError::InvalidUser) => ListError::InvalidUser,
        Ok(pb::ListError::AlreadyOnList) => ListError::AlreadyOnList,
        Ok(pb::ListError::NotOnList) => ListError::NotOnList,
        Ok(pb::ListError::InOppositeList) => ListError::InOppositeList,
        Ok(pb::ListError::ListFull) => ListError::ListFull,
        Ok(pb::ListError::ServerList) => ListError::ServerList,
        Ok(pb::ListError::SelfContact) => ListError::SelfContact,
        Ok(pb::ListError::InvalidGroup) => ListError::InvalidGroup,
        Ok(pb::ListError::NotInGroup) => ListError::NotInGroup,
        Ok(pb::ListError::TooManyGroups) => ListError::TooManyGroups,
        Ok(pb::ListError::GroupExists) => ListError::GroupExists,
        Ok(pb::ListError::GroupNameInvalid) => ListError::GroupNameInvalid,
        Ok(pb::ListError::GroupZero) => ListError::GroupZero,
        Ok(pb::ListError::InvalidName) => ListError::InvalidName,
        Ok(pb::ListError::InvalidProperty) => ListError::InvalidProperty,
        Ok(pb::ListError::Unspecified) | Err(_) => {
            return Err(InvalidMessage::new("list error", v.to_string()));
        }
    })
}

// ---------------------------------------------------------------------------------------
// Accounts

impl From<LegacyMd5> for pb::LegacyMd5 {
    fn from(l: LegacyMd5) -> Self {
        pb::LegacyMd5 {
            salt: l.salt,
            hash: l.hash,
        }
    }
}

impl From<pb::LegacyMd5> for LegacyMd5 {
    fn from(l: pb::LegacyMd5) -> Self {
        LegacyMd5 {
            salt: l.salt,
            hash: l.hash,
        }
    }
}

impl From<Account> for pb::Account {
    fn from(a: Account) -> Self {
        pb::Account {
            id: a.id.0,
            email: a.email.into(),
            friendly_name: a.friendly_name,
            password_hash: a.password_hash,
            legacy_md5: a.legacy_md5.map(Into::into),
        }
    }
}

impl TryFrom<pb::Account> for Account {
    type Error = InvalidMessage;
    fn try_from(a: pb::Account) -> Result<Self, InvalidMessage> {
        Ok(Account {
            id: UserId(a.id),
            email: email(&a.email)?,
            friendly_name: a.friendly_name,
            password_hash: a.password_hash,
            legacy_md5: a.legacy_md5.map(Into::into),
        })
    }
}

impl From<NewAccount> for pb::NewAccount {
    fn from(a: NewAccount) -> Self {
        pb::NewAccount {
            email: a.email.into(),
            friendly_name: a.friendly_name,
            password_hash: a.password_hash,
            legacy_md5: a.legacy_md5.map(Into::into),
        }
    }
}

impl TryFrom<pb::NewAccount> for NewAccount {
    type Error = InvalidMessage;
    fn try_from(a: pb::NewAccount) -> Result<Self, InvalidMessage> {
        Ok(NewAccount {
            email: email(&a.email)?,
            friendly_name: a.friendly_name,
            password_hash: a.password_hash,
            legacy_md5: a.legacy_md5.map(Into::into),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Lists

impl From<Group> for pb::Group {
    fn from(g: Group) -> Self {
        pb::Group {
            number: g.number,
            guid: g.guid.to_string(),
            name: g.name,
            changed_at: g.changed_at,
        }
    }
}

impl TryFrom<pb::Group> for Group {
    type Error = InvalidMessage;
    fn try_from(g: pb::Group) -> Result<Self, InvalidMessage> {
        Ok(Group {
            number: g.number,
            guid: guid(&g.guid, "group guid")?,
            name: g.name,
            changed_at: g.changed_at,
        })
    }
}

impl From<PeerView> for pb::PeerView {
    fn from(p: PeerView) -> Self {
        pb::PeerView {
            privacy: pb::Privacy::from(p.privacy).into(),
            lists_of_me: p.lists_of_me.0.into(),
        }
    }
}

impl TryFrom<pb::PeerView> for PeerView {
    type Error = InvalidMessage;
    fn try_from(p: pb::PeerView) -> Result<Self, InvalidMessage> {
        Ok(PeerView {
            privacy: privacy(p.privacy)?,
            lists_of_me: mask(p.lists_of_me, "peer lists")?,
        })
    }
}

impl From<Contact> for pb::Contact {
    fn from(c: Contact) -> Self {
        pb::Contact {
            user: c.user.0,
            email: c.email.into(),
            friendly_name: c.friendly_name,
            nickname: c.nickname,
            guid: c.guid.to_string(),
            lists: c.lists.0.into(),
            groups: c.groups,
            peer: Some(c.peer.into()),
            changed_at: c.changed_at,
        }
    }
}

impl TryFrom<pb::Contact> for Contact {
    type Error = InvalidMessage;
    fn try_from(c: pb::Contact) -> Result<Self, InvalidMessage> {
        Ok(Contact {
            user: UserId(c.user),
            email: email(&c.email)?,
            friendly_name: c.friendly_name,
            nickname: c.nickname,
            guid: guid(&c.guid, "contact guid")?,
            lists: mask(c.lists, "contact lists")?,
            groups: c.groups,
            peer: required(c.peer, "contact peer")?.try_into()?,
            changed_at: c.changed_at,
        })
    }
}

impl From<Roster> for pb::Roster {
    fn from(r: Roster) -> Self {
        pb::Roster {
            owner: r.owner.map(|u| u.0),
            version: r.version,
            friendly_name: r.friendly_name,
            privacy: pb::Privacy::from(r.privacy).into(),
            gtc: pb::Gtc::from(r.gtc).into(),
            groups: r.groups.into_iter().map(Into::into).collect(),
            contacts: r.contacts.into_iter().map(Into::into).collect(),
            properties: r
                .properties
                .into_iter()
                .map(|(key, value)| pb::Property { key, value })
                .collect(),
            stamp: r.stamp,
            settings_changed_at: r.settings_changed_at,
        }
    }
}

impl TryFrom<pb::Roster> for Roster {
    type Error = InvalidMessage;
    fn try_from(r: pb::Roster) -> Result<Self, InvalidMessage> {
        Ok(Roster {
            owner: r.owner.map(UserId),
            version: r.version,
            friendly_name: r.friendly_name,
            privacy: privacy(r.privacy)?,
            gtc: gtc(r.gtc)?,
            groups: r
                .groups
                .into_iter()
                .map(Group::try_from)
                .collect::<Result<_, _>>()?,
            contacts: r
                .contacts
                .into_iter()
                .map(Contact::try_from)
                .collect::<Result<_, _>>()?,
            properties: r.properties.into_iter().map(|p| (p.key, p.value)).collect(),
            stamp: r.stamp,
            settings_changed_at: r.settings_changed_at,
        })
    }
}

impl From<TombstoneKind> for pb::TombstoneKind {
    fn from(k: TombstoneKind) -> Self {
        match k {
            TombstoneKind::Contact => pb::TombstoneKind::Contact,
            TombstoneKind::Group => pb::TombstoneKind::Group,
        }
    }
}

fn tombstone_kind(v: i32) -> Result<TombstoneKind, InvalidMessage> {
    match pb::TombstoneKind::try_from(v) {
        Ok(pb::TombstoneKind::Contact) => Ok(TombstoneKind::Contact),
        Ok(pb::TombstoneKind::Group) => Ok(TombstoneKind::Group),
        Ok(pb::TombstoneKind::Unspecified) | Err(_) => {
            Err(InvalidMessage::new("tombstone kind", v.to_string()))
        }
    }
}

impl From<Tombstone> for pb::Tombstone {
    fn from(t: Tombstone) -> Self {
        pb::Tombstone {
            kind: pb::TombstoneKind::from(t.kind).into(),
            guid: t.guid.to_string(),
            email: t.email.map(Into::into),
            deleted_at: t.deleted_at,
        }
    }
}

impl TryFrom<pb::Tombstone> for Tombstone {
    type Error = InvalidMessage;
    fn try_from(t: pb::Tombstone) -> Result<Self, InvalidMessage> {
        Ok(Tombstone {
            kind: tombstone_kind(t.kind)?,
            guid: guid(&t.guid, "tombstone guid")?,
            email: t.email.as_deref().map(email).transpose()?,
            deleted_at: t.deleted_at,
        })
    }
}

impl From<ContactRef> for pb::ContactRef {
    fn from(r: ContactRef) -> Self {
        use pb::contact_ref::Kind;
        pb::ContactRef {
            kind: Some(match r {
                ContactRef::Email(e) => Kind::Email(e.into()),
                ContactRef::Guid(g) => Kind::Guid(g.to_string()),
            }),
        }
    }
}

impl TryFrom<pb::ContactRef> for ContactRef {
    type Error = InvalidMessage;
    fn try_from(r: pb::ContactRef) -> Result<Self, InvalidMessage> {
        use pb::contact_ref::Kind;
        Ok(match required(r.kind, "contact reference")? {
            Kind::Email(e) => ContactRef::Email(email(&e)?),
            Kind::Guid(g) => ContactRef::Guid(guid(&g, "contact guid")?),
        })
    }
}

impl From<GroupRef> for pb::GroupRef {
    fn from(r: GroupRef) -> Self {
        use pb::group_ref::Kind;
        pb::GroupRef {
            kind: Some(match r {
                GroupRef::Number(n) => Kind::Number(n),
                GroupRef::Guid(g) => Kind::Guid(g.to_string()),
            }),
        }
    }
}

impl TryFrom<pb::GroupRef> for GroupRef {
    type Error = InvalidMessage;
    fn try_from(r: pb::GroupRef) -> Result<Self, InvalidMessage> {
        use pb::group_ref::Kind;
        Ok(match required(r.kind, "group reference")? {
            Kind::Number(n) => GroupRef::Number(n),
            Kind::Guid(g) => GroupRef::Guid(guid(&g, "group guid")?),
        })
    }
}

impl From<ListOp> for pb::ListOp {
    fn from(op: ListOp) -> Self {
        use pb::list_op::{self as o, Op};
        let op = match op {
            ListOp::Add {
                list,
                target,
                group,
            } => Op::Add(o::Add {
                list: pb::List::from(list).into(),
                target: Some(target.into()),
                group: group.map(Into::into),
            }),
            ListOp::Remove {
                list,
                target,
                group,
            } => Op::Remove(o::Remove {
                list: pb::List::from(list).into(),
                target: Some(target.into()),
                group: group.map(Into::into),
            }),
            ListOp::AddGroup { name } => Op::AddGroup(o::AddGroup { name }),
            ListOp::RemoveGroup { group } => Op::RemoveGroup(o::RemoveGroup {
                group: Some(group.into()),
            }),
            ListOp::RenameGroup { group, name } => Op::RenameGroup(o::RenameGroup {
                group: Some(group.into()),
                name,
            }),
            ListOp::SetPrivacy(p) => Op::SetPrivacy(pb::Privacy::from(p).into()),
            ListOp::SetGtc(g) => Op::SetGtc(pb::Gtc::from(g).into()),
            ListOp::SetFriendlyName(name) => Op::SetFriendlyName(name),
            ListOp::SetNickname { contact, name } => Op::SetNickname(o::SetNickname {
                contact: contact.to_string(),
                name,
            }),
            ListOp::SetProperty { key, value } => Op::SetProperty(o::SetProperty { key, value }),
        };
        pb::ListOp { op: Some(op) }
    }
}

impl TryFrom<pb::ListOp> for ListOp {
    type Error = InvalidMessage;
    fn try_from(op: pb::ListOp) -> Result<Self, InvalidMessage> {
        use pb::list_op::Op;
        Ok(match required(op.op, "list op")? {
            Op::Add(a) => ListOp::Add {
                list: list(a.list)?,
                target: required(a.target, "list op target")?.try_into()?,
                group: a.group.map(GroupRef::try_from).transpose()?,
            },
            Op::Remove(r) => ListOp::Remove {
                list: list(r.list)?,
                target: required(r.target, "list op target")?.try_into()?,
                group: r.group.map(GroupRef::try_from).transpose()?,
            },
            Op::AddGroup(g) => ListOp::AddGroup { name: g.name },
            Op::RemoveGroup(g) => ListOp::RemoveGroup {
                group: required(g.group, "list op group")?.try_into()?,
            },
            Op::RenameGroup(g) => ListOp::RenameGroup {
                group: required(g.group, "list op group")?.try_into()?,
                name: g.name,
            },
            Op::SetPrivacy(p) => ListOp::SetPrivacy(privacy(p)?),
            Op::SetGtc(g) => ListOp::SetGtc(gtc(g)?),
            Op::SetFriendlyName(name) => ListOp::SetFriendlyName(name),
            Op::SetNickname(n) => ListOp::SetNickname {
                contact: guid(&n.contact, "nickname contact")?,
                name: n.name,
            },
            Op::SetProperty(p) => ListOp::SetProperty {
                key: p.key,
                value: p.value,
            },
        })
    }
}

impl From<EditOutcome> for pb::EditOutcome {
    fn from(o: EditOutcome) -> Self {
        pb::EditOutcome {
            version: o.version,
            contact: o.contact.map(Into::into),
            group: o.group.map(Into::into),
            reverse: o.reverse.map(|(email, on)| pb::ReverseChange {
                email: email.into(),
                on,
            }),
            privacy_changed: o.privacy_changed.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::EditOutcome> for EditOutcome {
    type Error = InvalidMessage;
    fn try_from(o: pb::EditOutcome) -> Result<Self, InvalidMessage> {
        Ok(EditOutcome {
            version: o.version,
            contact: o.contact.map(Contact::try_from).transpose()?,
            group: o.group.map(Group::try_from).transpose()?,
            reverse: o
                .reverse
                .map(|r| email(&r.email).map(|e| (e, r.on)))
                .transpose()?,
            privacy_changed: o
                .privacy_changed
                .iter()
                .map(|e| email(e))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// An edit's answer: applied or refused (a refusal is an answer, not a failure).
pub(crate) fn edit_response(r: Result<EditOutcome, ListError>) -> pb::EditResponse {
    use pb::edit_response::Result as R;
    pb::EditResponse {
        result: Some(match r {
            Ok(outcome) => R::Outcome(outcome.into()),
            Err(e) => R::Error(pb::ListError::from(e).into()),
        }),
    }
}

pub(crate) fn edit_result(
    r: pb::EditResponse,
) -> Result<Result<EditOutcome, ListError>, InvalidMessage> {
    use pb::edit_response::Result as R;
    Ok(match required(r.result, "edit result")? {
        R::Outcome(o) => Ok(o.try_into()?),
        R::Error(e) => Err(list_error(e)?),
    })
}

// ---------------------------------------------------------------------------------------
// Offline messages

impl From<OimNew> for pb::OimNew {
    fn from(n: OimNew) -> Self {
        pb::OimNew {
            recipient: n.recipient.0,
            sender: n.sender.into(),
            sender_name: n.sender_name,
            run_id: n.run_id.to_string(),
            seq: n.seq,
            text: n.text,
        }
    }
}

impl TryFrom<pb::OimNew> for OimNew {
    type Error = InvalidMessage;

    fn try_from(n: pb::OimNew) -> Result<Self, InvalidMessage> {
        Ok(OimNew {
            recipient: UserId(n.recipient),
            sender: email(&n.sender)?,
            sender_name: n.sender_name,
            run_id: guid(&n.run_id, "OIM run id")?,
            seq: n.seq,
            text: n.text,
        })
    }
}

impl From<OimMeta> for pb::OimMeta {
    fn from(m: OimMeta) -> Self {
        pb::OimMeta {
            id: m.id.to_string(),
            sender: m.sender.into(),
            sender_name: m.sender_name,
            received_at: m.received_at,
            size: m.size,
            read: m.read,
        }
    }
}

impl TryFrom<pb::OimMeta> for OimMeta {
    type Error = InvalidMessage;

    fn try_from(m: pb::OimMeta) -> Result<Self, InvalidMessage> {
        Ok(OimMeta {
            id: guid(&m.id, "OIM id")?,
            sender: email(&m.sender)?,
            sender_name: m.sender_name,
            received_at: m.received_at,
            size: m.size,
            read: m.read,
        })
    }
}

impl From<OimRefused> for pb::OimRefused {
    fn from(r: OimRefused) -> Self {
        match r {
            OimRefused::NoRecipient => pb::OimRefused::NoRecipient,
            OimRefused::TooLarge => pb::OimRefused::TooLarge,
            OimRefused::MailboxFull => pb::OimRefused::MailboxFull,
        }
    }
}

fn oim_refused(v: i32) -> Result<OimRefused, InvalidMessage> {
    match pb::OimRefused::try_from(v) {
        Ok(pb::OimRefused::NoRecipient) => Ok(OimRefused::NoRecipient),
        Ok(pb::OimRefused::TooLarge) => Ok(OimRefused::TooLarge),
        Ok(pb::OimRefused::MailboxFull) => Ok(OimRefused::MailboxFull),
        Ok(pb::OimRefused::Unspecified) | Err(_) => {
            Err(InvalidMessage::new("OIM refusal", v.to_string()))
        }
    }
}

pub(crate) fn oim_store_response(r: Result<OimMeta, OimRefused>) -> pb::OimStoreResponse {
    use pb::oim_store_response::Result as R;
    pb::OimStoreResponse {
        result: Some(match r {
            Ok(meta) => R::Stored(meta.into()),
            Err(e) => R::Refused(pb::OimRefused::from(e).into()),
        }),
    }
}

pub(crate) fn oim_store_result(
    r: pb::OimStoreResponse,
) -> Result<Result<OimMeta, OimRefused>, InvalidMessage> {
    use pb::oim_store_response::Result as R;
    Ok(match required(r.result, "OIM store result")? {
        R::Stored(m) => Ok(m.try_into()?),
        R::Refused(e) => Err(oim_refused(e)?),
    })
}

pub(crate) fn oim_get_response(oim: Option<Oim>) -> pb::OimGetResponse {
    match oim {
        Some(o) => pb::OimGetResponse {
            meta: Some(o.meta.into()),
            run_id: o.run_id.to_string(),
            seq: o.seq,
            text: o.text,
        },
        None => pb::OimGetResponse::default(),
    }
}

pub(crate) fn oim_get_result(r: pb::OimGetResponse) -> Result<Option<Oim>, InvalidMessage> {
    let Some(meta) = r.meta else {
        return Ok(None);
    };
    Ok(Some(Oim {
        meta: meta.try_into()?,
        run_id: guid(&r.run_id, "OIM run id")?,
        seq: r.seq,
        text: r.text,
    }))
}

pub(crate) fn oim_ids(ids: &[String]) -> Result<Vec<Uuid>, InvalidMessage> {
    ids.iter().map(|id| guid(id, "OIM id")).collect()
}

// ---------------------------------------------------------------------------------------
// Roaming profiles

pub(crate) fn profile_to_pb(p: butterfly_core::profile::Profile) -> pb::ProfileGetResponse {
    pb::ProfileGetResponse {
        psm: p.psm,
        psm_changed_at: p.psm_changed_at,
        tile: p.tile.map(|t| pb::Tile {
            mime: t.mime,
            bytes: t.bytes,
            changed_at: t.changed_at,
        }),
    }
}

pub(crate) fn profile_from_pb(p: pb::ProfileGetResponse) -> butterfly_core::profile::Profile {
    butterfly_core::profile::Profile {
        psm: p.psm,
        psm_changed_at: p.psm_changed_at,
        tile: p.tile.map(|t| butterfly_core::profile::Tile {
            mime: t.mime,
            bytes: t.bytes,
            changed_at: t.changed_at,
        }),
    }
}

pub(crate) fn profile_update_to_pb(
    owner: butterfly_core::UserId,
    edit: butterfly_core::profile::ProfileEdit,
) -> pb::ProfileUpdateRequest {
    use butterfly_core::profile::ProfileEdit;
    use pb::profile_update_request::Edit;
    let edit = match edit {
        ProfileEdit::Psm(psm) => Edit::Psm(psm),
        ProfileEdit::Tile(Some((mime, bytes))) => Edit::Tile(pb::Tile {
            mime,
            bytes,
            changed_at: 0,
        }),
        ProfileEdit::Tile(None) => Edit::RemoveTile(true),
    };
    pb::ProfileUpdateRequest {
        owner: owner.0,
        edit: Some(edit),
    }
}

pub(crate) fn profile_edit_from_pb(
    edit: Option<pb::profile_update_request::Edit>,
) -> Option<butterfly_core::profile::ProfileEdit> {
    use butterfly_core::profile::ProfileEdit;
    use pb::profile_update_request::Edit;
    Some(match edit? {
        Edit::Psm(psm) => ProfileEdit::Psm(psm),
        Edit::Tile(t) => ProfileEdit::Tile(Some((t.mime, t.bytes))),
        Edit::RemoveTile(_) => ProfileEdit::Tile(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> Email {
        Email::parse(s).unwrap()
    }

    fn contact() -> Contact {
        Contact {
            user: UserId(7),
            email: e("bob@example.com"),
            friendly_name: "Bob".into(),
            nickname: Some("Bobby".into()),
            guid: Uuid::new_v4(),
            lists: ListMask(List::Forward.bit() | List::Reverse.bit()),
            groups: vec![1, 3],
            peer: PeerView {
                privacy: Privacy::BlockAll,
                lists_of_me: ListMask(List::Allow.bit()),
            },
            changed_at: 1_714_557_600_123,
        }
    }

    #[test]
    fn every_list_error_round_trips() {
        let all = [
            ListError::InvalidUser,
            ListError::AlreadyOnList,
            ListError::NotOnList,
            ListError::InOppositeList,
            ListError::ListFull,
            ListError::ServerList,
            ListError::SelfContact,
            ListError::InvalidGroup,
            ListError::NotInGroup,
            ListError::TooManyGroups,
            ListError::GroupExists,
            ListError::GroupNameInvalid,
            ListError::GroupZero,
            ListError::InvalidName,
            ListError::InvalidProperty,
        ];
        for err in all {
            assert_eq!(edit_result(edit_response(Err(err))), Ok(Err(err)));
        }
    }

    #[test]
    fn every_list_op_round_trips() {
        let g = Uuid::new_v4();
        let ops = vec![
            ListOp::Add {
                list: List::Forward,
                target: ContactRef::Email(e("bob@example.com")),
                group: Some(GroupRef::Number(2)),
            },
            ListOp::Add {
                list: List::Pending,
                target: ContactRef::Guid(g),
                group: None,
            },
            ListOp::Remove {
                list: List::Block,
                target: ContactRef::Guid(g),
                group: Some(GroupRef::Guid(g)),
            },
            ListOp::Remove {
                list: List::Reverse,
                target: ContactRef::Email(e("bob@example.com")),
                group: None,
            },
            ListOp::Add {
                list: List::Allow,
                target: ContactRef::Email(e("bob@example.com")),
                group: None,
            },
            ListOp::AddGroup {
                name: "Friends".into(),
            },
            ListOp::RemoveGroup {
                group: GroupRef::Number(0),
            },
            ListOp::RenameGroup {
                group: GroupRef::Guid(g),
                name: "Work".into(),
            },
            ListOp::SetPrivacy(Privacy::AllowAll),
            ListOp::SetPrivacy(Privacy::BlockAll),
            ListOp::SetGtc(Gtc::Ask),
            ListOp::SetGtc(Gtc::NoAsk),
            ListOp::SetFriendlyName("Alice".into()),
            ListOp::SetNickname {
                contact: g,
                name: "B".into(),
            },
            ListOp::SetProperty {
                key: "PHH".into(),
                value: String::new(),
            },
        ];
        for op in ops {
            assert_eq!(ListOp::try_from(pb::ListOp::from(op.clone())), Ok(op));
        }
    }

    #[test]
    fn roster_and_outcome_round_trip() {
        let roster = Roster {
            owner: Some(UserId(1)),
            version: 42,
            friendly_name: "Alice".into(),
            privacy: Privacy::BlockAll,
            gtc: Gtc::NoAsk,
            groups: vec![Group {
                number: 1,
                guid: Uuid::new_v4(),
                name: "Friends".into(),
                changed_at: 1_714_557_600_100,
            }],
            contacts: vec![contact()],
            properties: vec![("PHH".into(), "123".into()), ("MOB".into(), "Y".into())],
            stamp: 1_714_557_600_124,
            settings_changed_at: 1_714_557_600_050,
        };
        assert_eq!(
            Roster::try_from(pb::Roster::from(roster.clone())),
            Ok(roster)
        );
        assert_eq!(
            Roster::try_from(pb::Roster::from(Roster::default())),
            Ok(Roster::default())
        );
        let outcome = EditOutcome {
            version: 3,
            contact: Some(contact()),
            group: None,
            reverse: Some((e("bob@example.com"), false)),
            privacy_changed: vec![e("carol@example.com")],
        };
        assert_eq!(
            edit_result(edit_response(Ok(outcome.clone()))),
            Ok(Ok(outcome))
        );
    }

    #[test]
    fn tombstones_round_trip_and_kinds_are_checked() {
        let contact = Tombstone {
            kind: TombstoneKind::Contact,
            guid: Uuid::new_v4(),
            email: Some(e("bob@example.com")),
            deleted_at: 1_714_557_600_123,
        };
        let group = Tombstone {
            kind: TombstoneKind::Group,
            guid: Uuid::new_v4(),
            email: None,
            deleted_at: i64::MAX,
        };
        for t in [contact.clone(), group] {
            assert_eq!(Tombstone::try_from(pb::Tombstone::from(t.clone())), Ok(t));
        }
        let mut bad = pb::Tombstone::from(contact);
        bad.kind = pb::TombstoneKind::Unspecified.into();
        assert!(Tombstone::try_from(bad.clone()).is_err());
        bad.kind = 99;
        assert!(Tombstone::try_from(bad.clone()).is_err());
        bad.kind = pb::TombstoneKind::Contact.into();
        bad.email = Some("not an email".into());
        assert!(Tombstone::try_from(bad.clone()).is_err());
        bad.email = None;
        bad.guid = "nope".into();
        assert!(Tombstone::try_from(bad).is_err());
    }

    #[test]
    fn accounts_round_trip() {
        let account = Account {
            id: UserId(9),
            email: e("alice@example.com"),
            friendly_name: "Alice".into(),
            password_hash: "$argon2id$x".into(),
            legacy_md5: Some(LegacyMd5 {
                salt: "1.2".into(),
                hash: "abc".into(),
            }),
        };
        assert_eq!(
            Account::try_from(pb::Account::from(account.clone())),
            Ok(account)
        );
    }

    #[test]
    fn invalid_messages_are_refused() {
        let bad_email = pb::Account {
            email: "not an email".into(),
            ..Default::default()
        };
        assert!(Account::try_from(bad_email).is_err());
        assert!(ListOp::try_from(pb::ListOp { op: None }).is_err());
        let unspecified = pb::ListOp {
            op: Some(pb::list_op::Op::SetPrivacy(0)),
        };
        assert!(ListOp::try_from(unspecified).is_err());
        let unknown = pb::ListOp {
            op: Some(pb::list_op::Op::SetGtc(99)),
        };
        assert!(ListOp::try_from(unknown).is_err());
        let bad_guid = pb::ListOp {
            op: Some(pb::list_op::Op::SetNickname(pb::list_op::SetNickname {
                contact: "nope".into(),
                name: "x".into(),
            })),
        };
        assert!(ListOp::try_from(bad_guid).is_err());
        let mut c = pb::Contact::from(contact());
        c.lists = 256;
        assert!(Contact::try_from(c.clone()).is_err());
        c.lists = 1;
        c.peer = None;
        assert!(Contact::try_from(c).is_err());
        assert!(edit_result(pb::EditResponse { result: None }).is_err());
        assert!(
            edit_result(pb::EditResponse {
                result: Some(pb::edit_response::Result::Error(0)),
            })
            .is_err()
        );
        let status = Status::from(InvalidMessage::missing("x"));
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[test]
    fn store_errors_map_to_distinct_codes() {
        let dup = store_error_to_status(StoreError::DuplicateAccount);
        assert_eq!(dup.code(), Code::AlreadyExists);
        assert!(matches!(
            status_to_store_error("CreateAccount", &dup),
            StoreError::DuplicateAccount
        ));
        let backend = store_error_to_status(StoreError::Backend("disk on fire".into()));
        assert_eq!(backend.code(), Code::Internal);
        match status_to_store_error("Roster", &backend) {
            StoreError::Backend(m) => assert!(m.contains("disk on fire"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
