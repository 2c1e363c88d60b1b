//! The SYN answer: the whole roster, in the form each dialect expects (NS.md §2.2).

use butterfly_core::lists::{List, Roster};
use msnp::frame::Frame;
use msnp::reply::{self, LstEntry};
use msnp::text;

/// Group 0 as MSNP7–9 clients know it.
const OTHER_CONTACTS: &str = "Other Contacts";

/// The lines answering `SYN tr …`. MSNP10+ clients cache by two timestamps; we derive
/// them from the list version so they change exactly when the lists do.
pub(crate) fn syn(dialect: u8, tr: u32, roster: &Roster) -> Vec<Frame> {
    let ver = roster.version;
    let mut out = Vec::new();
    if dialect < 8 {
        out.push(Frame::new(b"SYN").arg(tr).arg(ver));
        if dialect >= 7 {
            let total = roster.groups.len() + 1;
            out.push(Frame::new(b"LSG").args([
                tr.to_string(),
                ver.to_string(),
                "1".into(),
                total.to_string(),
                "0".into(),
                text::encode(OTHER_CONTACTS),
                "0".into(),
            ]));
            for (i, g) in roster.groups.iter().enumerate() {
                out.push(Frame::new(b"LSG").args([
                    tr.to_string(),
                    ver.to_string(),
                    (i + 2).to_string(),
                    total.to_string(),
                    g.number.to_string(),
                    text::encode(&g.name),
                    "0".into(),
                ]));
            }
        }
        for list in [List::Forward, List::Allow, List::Block, List::Reverse] {
            let members: Vec<_> = roster.on_list(list).collect();
            if members.is_empty() {
                out.push(Frame::new(b"LST").args([
                    tr.to_string(),
                    list.code().into(),
                    ver.to_string(),
                    "0".into(),
                    "0".into(),
                ]));
            }
            for (i, c) in members.iter().enumerate() {
                let mut f = Frame::new(b"LST").args([
                    tr.to_string(),
                    list.code().into(),
                    ver.to_string(),
                    (i + 1).to_string(),
                    members.len().to_string(),
                    c.email.to_string(),
                    text::encode(c.display_name()),
                ]);
                if dialect >= 7 && list == List::Forward {
                    let groups: Vec<String> = c.groups.iter().map(u32::to_string).collect();
                    f = f.arg(if groups.is_empty() {
                        "0".into()
                    } else {
                        groups.join(",")
                    });
                }
                out.push(f);
            }
        }
        out.push(Frame::new(b"GTC").arg(tr).arg(ver).arg(roster.gtc.code()));
        out.push(
            Frame::new(b"BLP")
                .arg(tr)
                .arg(ver)
                .arg(roster.privacy.code()),
        );
        return out;
    }

    let contacts: Vec<_> = roster
        .contacts
        .iter()
        .filter(|c| !c.lists.is_empty())
        .collect();
    if dialect < 10 {
        out.push(
            Frame::new(b"SYN")
                .arg(tr)
                .arg(ver)
                .arg(contacts.len())
                .arg(roster.groups.len() + 1),
        );
    } else {
        let stamp = timestamp(ver);
        out.push(
            Frame::new(b"SYN")
                .arg(tr)
                .arg(&stamp)
                .arg(&stamp)
                .arg(contacts.len())
                .arg(roster.groups.len()),
        );
    }
    out.push(Frame::new(b"GTC").arg(roster.gtc.code()));
    out.push(Frame::new(b"BLP").arg(roster.privacy.code()));
    if dialect >= 10 {
        out.push(
            Frame::new(b"PRP")
                .arg("MFN")
                .arg(text::encode(&roster.friendly_name)),
        );
    }
    for (k, v) in &roster.properties {
        out.push(Frame::new(b"PRP").arg(k).arg(text::encode(v)));
    }
    if dialect < 10 {
        out.push(
            Frame::new(b"LSG")
                .arg(0)
                .arg(text::encode(OTHER_CONTACTS))
                .arg(0),
        );
        for g in &roster.groups {
            out.push(
                Frame::new(b"LSG")
                    .arg(g.number)
                    .arg(text::encode(&g.name))
                    .arg(0),
            );
        }
    } else {
        for g in &roster.groups {
            out.push(Frame::new(b"LSG").arg(text::encode(&g.name)).arg(g.guid));
        }
    }
    for c in contacts {
        let groups = c
            .groups
            .iter()
            .filter_map(|n| {
                if dialect < 10 {
                    Some(n.to_string())
                } else {
                    roster
                        .groups
                        .iter()
                        .find(|g| g.number == *n)
                        .map(|g| g.guid.to_string())
                }
            })
            .collect();
        let guid = c.guid.to_string();
        out.push(reply::lst(
            dialect,
            &LstEntry {
                email: c.email.as_str(),
                friendly_name: c.display_name(),
                guid: &guid,
                lists: c.lists.0 & 0x0f,
                groups,
            },
        ));
    }
    out
}

/// A stable ISO-8601 stamp that changes with the list version.
fn timestamp(version: u64) -> String {
    // 2000-01-01T00:00:00Z + version seconds.
    let secs = 946_684_800_i64.saturating_add(i64::try_from(version).unwrap_or(i64::MAX / 2));
    format!("{}.0000000-00:00", butterfly_core::clock::utc_seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "2000-01-01T00:00:00.0000000-00:00");
        assert_eq!(timestamp(86_400 + 61), "2000-01-02T00:01:01.0000000-00:00");
    }
}
