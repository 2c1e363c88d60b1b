//! Presence: what the people who watch a user are shown.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A status as CHG/NLN carry it. `Hidden` (HDN) is shown to others as offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    Online,
    Busy,
    Idle,
    BeRightBack,
    Away,
    OnThePhone,
    OutToLunch,
    Hidden,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Online,
        Status::Busy,
        Status::Idle,
        Status::BeRightBack,
        Status::Away,
        Status::OnThePhone,
        Status::OutToLunch,
        Status::Hidden,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Status::Online => "NLN",
            Status::Busy => "BSY",
            Status::Idle => "IDL",
            Status::BeRightBack => "BRB",
            Status::Away => "AWY",
            Status::OnThePhone => "PHN",
            Status::OutToLunch => "LUN",
            Status::Hidden => "HDN",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.code() == s)
    }
}

/// One signed-in user's presence, as published to watchers. Snapshots, not deltas:
/// a watcher compares with the previous snapshot to decide what to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub status: Status,
    /// Raw (not URL-encoded) friendly name.
    pub friendly_name: String,
    /// Capability flags as the client wrote them (`caps` or `caps:capsex`).
    pub caps: String,
    /// URL-decoded MSNObject XML, if any.
    pub msnobj: Option<String>,
    /// The UUX document (PSM, current media), MSNP11+.
    pub personal: Option<Bytes>,
    /// The dialect of the user's session; the switchboard formats JOI/IRO with it.
    pub dialect: u8,
    /// The machine this presence was published from (MSNP16+, several sign-ins at once).
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
}

/// One signed-in machine of an MSNP16+ user: what the user's other machines are shown of
/// it (`<PrivateEndpointData>`). Its status is the presence's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The machine GUID, lower case, without braces.
    pub guid: String,
    /// `EpName`: what the user calls this machine.
    pub name: String,
    /// `Idle`: the machine reports its user away from it.
    pub idle: bool,
    /// `ClientType` as the client wrote it (1: Messenger on a PC).
    pub client_type: String,
}

impl Presence {
    /// Visible to watchers as online (everything but HDN).
    pub fn is_visible(&self) -> bool {
        self.status != Status::Hidden
    }
}
