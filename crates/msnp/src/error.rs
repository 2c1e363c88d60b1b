//! MSNP numeric errors. A server answers a refused command with `NNN TrID`.

/// The error codes Butterfly sends (NS.md §7). The numeric value is the wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    Syntax = 200,
    InvalidParameter = 201,
    InvalidNetwork = 204,
    InvalidUser = 205,
    DomainMissing = 206,
    AlreadyLoggedIn = 207,
    InvalidUsername = 208,
    InvalidFriendlyName = 209,
    ListFull = 210,
    AlreadyOnList = 215,
    NotOnList = 216,
    NotOnline = 217,
    AlreadyInMode = 218,
    InOppositeList = 219,
    TooManyGroups = 223,
    InvalidGroup = 224,
    NotInGroup = 225,
    GroupNameExists = 228,
    GroupNameTooLong = 229,
    GroupZero = 230,
    AdlEmptyDomain = 240,
    AdlInvalid = 241,
    SwitchboardFailed = 280,
    TransferFailed = 281,
    FieldMissing = 300,
    NotLoggedIn = 302,
    InternalError = 500,
    DatabaseError = 501,
    CommandDisabled = 502,
    ChallengeFailed = 540,
    ServerBusy = 600,
    ServerUnavailable = 601,
    GoingDown = 604,
    TooRapid = 713,
    NotExpected = 715,
    AuthFailed = 911,
    NotAllowedWhenOffline = 913,
    /// MSNP18: a circle the user is not a member of.
    InvalidCircle = 933,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        self as u16
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}
