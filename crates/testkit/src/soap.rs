//! The address-book SOAP calls a Windows Live Messenger client makes after signing in,
//! written the way those clients write them, with the contacts ticket from the token
//! service.

use std::net::SocketAddr;

/// The services of the address book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `SharingService.asmx`: memberships (allow, block, reverse, pending).
    Sharing,
    /// `abservice.asmx`: contacts and groups.
    AddressBook,
}

pub const FIND_MEMBERSHIP: &str = "<FindMembership xmlns=\"http://www.msn.com/webservices/AddressBook\"><serviceFilter><Types><ServiceType>Messenger</ServiceType><ServiceType>Invitation</ServiceType><ServiceType>SocialNetwork</ServiceType><ServiceType>Space</ServiceType><ServiceType>Profile</ServiceType></Types></serviceFilter><View>Full</View></FindMembership>";
pub const AB_FIND_ALL: &str = "<ABFindAll xmlns=\"http://www.msn.com/webservices/AddressBook\"><abId>00000000-0000-0000-0000-000000000000</abId><abView>Full</abView><deltasOnly>false</deltasOnly><lastChange>0001-01-01T00:00:00.0000000-08:00</lastChange></ABFindAll>";
pub const AB_FIND_CONTACTS_PAGED: &str = "<ABFindContactsPaged xmlns=\"http://www.msn.com/webservices/AddressBook\"><filterOptions><DeltasOnly>false</DeltasOnly><LastChanged>0001-01-01T00:00:00.0000000-08:00</LastChanged><PageSize>250</PageSize><ContactFilter><IncludeHiddenContacts>true</IncludeHiddenContacts></ContactFilter></filterOptions><abView>MessengerClient8</abView><extendedContent>AB AllGroups CircleResult</extendedContent></ABFindContactsPaged>";

/// POST `action` (the Body's content) to `service` with `ticket` (`t=…&p=…`); returns
/// the status and the body.
pub async fn call(http: SocketAddr, service: Service, ticket: &str, action: &str) -> (u16, String) {
    let path = match service {
        Service::Sharing => "/abservice/SharingService.asmx",
        Service::AddressBook => "/abservice/abservice.asmx",
    };
    // The SOAPAction names the Body's element, as clients send it.
    let name = action
        .trim_start_matches('<')
        .split([' ', '>', '/'])
        .next()
        .unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soap:Header><ABApplicationHeader xmlns=\"http://www.msn.com/webservices/AddressBook\"><ApplicationId>CFE80F9D-180F-4399-82AB-413F33A1FA11</ApplicationId><IsMigration>false</IsMigration><PartnerScenario>Initial</PartnerScenario></ABApplicationHeader><ABAuthHeader xmlns=\"http://www.msn.com/webservices/AddressBook\"><ManagedGroupRequest>false</ManagedGroupRequest><TicketToken>{}</TicketToken></ABAuthHeader></soap:Header><soap:Body>{action}</soap:Body></soap:Envelope>",
        quick_xml::escape::escape(ticket)
    );
    let action_header = format!("\"http://www.msn.com/webservices/AddressBook/{name}\"");
    let resp = crate::http::post(
        http,
        path,
        &[
            ("Content-Type", "text/xml; charset=utf-8"),
            ("SOAPAction", &action_header),
        ],
        body.as_bytes(),
    )
    .await;
    (
        resp.status,
        String::from_utf8_lossy(&resp.body).into_owned(),
    )
}

/// The text of the first `<name>…</name>` in `xml`, XML-unescaped.
pub fn text_of(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    quick_xml::escape::unescape(&xml[start..end])
        .ok()
        .map(|s| s.into_owned())
}
