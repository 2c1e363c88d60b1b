//! Which roles one `butterfly serve` process runs (`--target`).

use std::fmt;

/// One of the four services of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    NsGateway,
    Switchboard,
    Passport,
    AddressBook,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::NsGateway,
        Role::Switchboard,
        Role::Passport,
        Role::AddressBook,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::NsGateway => "ns-gateway",
            Role::Switchboard => "switchboard",
            Role::Passport => "passport",
            Role::AddressBook => "addressbook",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The roles of this process; `all` (the default) is every role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    bits: u8,
    /// Named as `all` rather than listed: the embedded composition.
    all: bool,
}

impl Roles {
    /// Parse `--target`: `all`, or a comma-separated list of role names.
    pub fn parse(target: &str) -> Result<Roles, String> {
        let mut roles = Roles {
            bits: 0,
            all: false,
        };
        for name in target.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if name == "all" {
                roles.all = true;
                roles.bits = 0b1111;
                continue;
            }
            let role = Role::ALL
                .into_iter()
                .find(|r| r.name() == name)
                .ok_or_else(|| {
                    format!(
                        "--target: unknown role '{name}' (roles: all, ns-gateway, switchboard, passport, addressbook)"
                    )
                })?;
            roles.bits |= 1 << role as u8;
        }
        if roles.bits == 0 {
            return Err("--target names no role".into());
        }
        Ok(roles)
    }

    pub fn has(self, role: Role) -> bool {
        self.bits & (1 << role as u8) != 0
    }

    /// `all`: every role in one process, talking in-process (no gRPC listener).
    pub fn is_all(self) -> bool {
        self.all
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.has(*r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_all() {
        let r = Roles::parse("ns-gateway, switchboard").unwrap();
        assert!(r.has(Role::NsGateway) && r.has(Role::Switchboard));
        assert!(!r.has(Role::Passport) && !r.is_all());
        let all = Roles::parse("all").unwrap();
        assert!(all.is_all() && Role::ALL.iter().all(|x| all.has(*x)));
        assert_eq!(
            Roles::parse("gateway").unwrap_err(),
            "--target: unknown role 'gateway' (roles: all, ns-gateway, switchboard, passport, addressbook)"
        );
        assert!(Roles::parse(" , ").is_err());
    }
}
