//! Offline messages at the NS (spec issue 4 §5.1, §4.6): the sign-in mail data listing
//! waiting messages, the live notifications, and MSNP18's `UUM` offline message, which
//! is stored like one sent to the OIM SOAP service.

use butterfly_core::account::{Email, UserId};
use butterfly_core::bus::{Bus, UserEvent};
use butterfly_core::oim::{OimMeta, OimNew, OimRefused};
use butterfly_core::store::Store;
use msnp::error::ErrorCode;
use msnp::frame::Frame;
use msnp::oim::{MAX_MAIL_DATA_ENTRIES, MailEntry, arrival_mail_data, mail_data_entries};
use msnp::reply;
use tracing::{debug, warn};
use uuid::Uuid;

fn entry<'a>(m: &'a OimMeta, id: &'a str) -> MailEntry<'a> {
    MailEntry {
        received_ms: m.received_at,
        read: m.read,
        size: m.size,
        sender: m.sender.as_str(),
        id,
        sender_name: &m.sender_name,
    }
}

/// The mail data after the first `CHG` (MSNP13+): the waiting messages, or `too-large`
/// when there are more than clients are given inline. A store failure lists none (the
/// client still works; the messages show at the next sign-in).
pub(crate) async fn initial_mail_data(store: &dyn Store, me: UserId) -> Frame {
    let oims = match store.oims(me).await {
        Ok(oims) => oims,
        Err(e) => {
            warn!(error = %e, "Could not list offline messages");
            Vec::new()
        }
    };
    if oims.len() > MAX_MAIL_DATA_ENTRIES {
        return reply::initial_mail_data_too_large();
    }
    let ids: Vec<String> = oims.iter().map(|m| m.id.to_string()).collect();
    let entries: Vec<MailEntry<'_>> = oims.iter().zip(&ids).map(|(m, id)| entry(m, id)).collect();
    reply::initial_mail_data(&mail_data_entries(&entries))
}

/// The live notification of a new message.
pub(crate) fn arrival(oim: &OimMeta) -> Frame {
    let id = oim.id.to_string();
    reply::oim_notification(&arrival_mail_data(&entry(oim, &id)))
}

/// The sender of a `UUM`.
pub(crate) struct Sender<'a> {
    pub(crate) id: UserId,
    pub(crate) email: &'a Email,
    pub(crate) friendly_name: &'a str,
}

/// The text of a `UUM` that is an offline message: `text/plain` with `Dest-Agent: client`;
/// `None` for anything else (typing, nudges, Yahoo interop).
fn offline_text(network: u32, kind: u32, payload: &[u8]) -> Option<String> {
    if network != 1 || kind != 1 {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))?;
    let mut plain = false;
    let mut to_client = false;
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => plain = value.starts_with("text/plain"),
            "dest-agent" => to_client = value == "client",
            _ => {}
        }
    }
    (plain && to_client).then(|| body.to_owned())
}

/// `UUM tr email network type len` (MSNP14+): store an offline message (MSNP18) and tell
/// the recipient's signed-in sessions. `None`: ignored (other kinds, as the service
/// did: no reply); else OK (`UUM tr OK`) or the error to answer. A recipient who does not let me reach them gets nothing,
/// and I am told OK all the same (as if delivered, like presence hides a block).
pub(crate) async fn uum(
    store: &dyn Store,
    bus: &dyn Bus,
    me: Sender<'_>,
    target: &str,
    network: u32,
    kind: u32,
    payload: &[u8],
) -> Option<Result<(), ErrorCode>> {
    let text = offline_text(network, kind, payload)?;
    let ok = Ok(());
    let error = Err;
    let Ok(to) = Email::parse(target) else {
        return Some(error(ErrorCode::InvalidUsername));
    };
    let recipient = match store.account_by_email(&to).await {
        Ok(Some(a)) => a,
        Ok(None) => return Some(error(ErrorCode::InvalidUser)),
        Err(e) => {
            warn!(error = %e, "UUM: store failed");
            return Some(error(ErrorCode::InternalError));
        }
    };
    match store.peer_view(recipient.id, me.id).await {
        Ok(view) if view.lets_me_see() => {}
        Ok(_) => return Some(ok),
        Err(e) => {
            warn!(error = %e, "UUM: store failed");
            return Some(error(ErrorCode::InternalError));
        }
    }
    let new = OimNew {
        recipient: recipient.id,
        sender: me.email.clone(),
        sender_name: me.friendly_name.to_owned(),
        run_id: Uuid::new_v4(),
        seq: 1,
        text,
    };
    match store.oim_store(new).await {
        Ok(Ok(oim)) => {
            debug!(id = %oim.id, "UUM stored as an offline message");
            bus.send(&recipient.email, UserEvent::OimArrived { oim })
                .await;
            Some(ok)
        }
        Ok(Err(OimRefused::NoRecipient)) => Some(error(ErrorCode::InvalidUser)),
        Ok(Err(OimRefused::TooLarge | OimRefused::MailboxFull)) => {
            Some(error(ErrorCode::InvalidParameter))
        }
        Err(e) => {
            warn!(error = %e, "UUM: store failed");
            Some(error(ErrorCode::InternalError))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_for_the_client_is_an_offline_message() {
        let msg = b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nX-MMS-IM-Format: FN=Segoe%20UI\r\nDest-Agent: client\r\n\r\nhello";
        assert_eq!(offline_text(1, 1, msg).as_deref(), Some("hello"));
        assert_eq!(offline_text(32, 1, msg), None);
        assert_eq!(offline_text(1, 2, msg), None);
        let no_agent = b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello";
        assert_eq!(offline_text(1, 1, no_agent), None);
    }
}
