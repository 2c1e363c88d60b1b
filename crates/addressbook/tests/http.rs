//! The address-book services over real HTTP/1.1: the router on 127.0.0.1:0, a SQLite store
//! in a temporary directory with lists built through `Store::edit`, JWT tickets, and a
//! hand-written client on a TcpStream. Responses are parsed as XML and checked field by
//! field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use butterfly_addressbook::{AB_SERVICE_PATH, Deps, MAX_BODY_BYTES, SHARING_SERVICE_PATH};
use butterfly_core::account::{Account, Email, NewAccount, PasswordCost};
use butterfly_core::ids::{self, Role};
use butterfly_core::lists::{ContactRef, GroupRef, Gtc, List, ListOp, PeerView, Privacy, Roster};
use butterfly_core::store::Store;
use butterfly_core::tickets::{JwtTickets, Service, Tickets};
use butterfly_store::SqliteStore;
use quick_xml::events::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const HOST: &str = "contacts.example.com";

// ---------------------------------------------------------------- XML tree (test side)

/// An element of a response: local name, attributes (by local name), trimmed text,
/// children.
#[derive(Debug, Clone, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn parse(xml: &str) -> Node {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut stack: Vec<Node> = vec![Node::default()];
        loop {
            match reader.read_event().expect("well-formed response XML") {
                Event::Start(s) => stack.push(Node::open(&s)),
                Event::Empty(s) => {
                    let n = Node::open(&s);
                    stack.last_mut().unwrap().children.push(n);
                }
                Event::End(_) => {
                    let mut n = stack.pop().unwrap();
                    n.text = n.text.trim().to_owned();
                    stack.last_mut().unwrap().children.push(n);
                }
                Event::Text(t) => stack.last_mut().unwrap().text.push_str(&t.xml10_content()),
                Event::GeneralRef(r) => {
                    let s = quick_xml::escape::resolve_predefined_entity(&r).expect("known entity");
                    stack.last_mut().unwrap().text.push_str(s);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(stack.len(), 1, "unclosed elements");
        let mut doc = stack.pop().unwrap();
        assert_eq!(doc.children.len(), 1, "one root element");
        doc.children.pop().unwrap()
    }

    fn open(s: &quick_xml::events::BytesStart<'_>) -> Node {
        Node {
            name: s.local_name().as_ref().to_owned(),
            attrs: s
                .attributes()
                .map(|a| {
                    let a = a.expect("well-formed attribute");
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .expect("attribute value")
                        .into_owned();
                    (a.key.local_name().as_ref().to_owned(), value)
                })
                .collect(),
            ..Node::default()
        }
    }

    /// The one child called `name` (panics when there is none).
    fn get(&self, name: &str) -> &Node {
        self.opt(name)
            .unwrap_or_else(|| panic!("<{}> has no <{name}>: {self:#?}", self.name))
    }

    fn opt(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn at(&self, path: &[&str]) -> &Node {
        path.iter().fold(self, |n, p| n.get(p))
    }

    fn text_of(&self, path: &[&str]) -> &str {
        &self.at(path).text
    }

    fn all(&self, name: &str) -> Vec<&Node> {
        self.children.iter().filter(|c| c.name == name).collect()
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn child_names(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }
}

// ---------------------------------------------------------------- HTTP client

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The SOAP body's single element (the response or the fault).
    fn body_element(&self) -> Node {
        let env = Node::parse(&self.body);
        assert_eq!(env.name, "Envelope", "{}", self.body);
        let body = env.get("Body");
        assert_eq!(body.children.len(), 1, "{}", self.body);
        body.children[0].clone()
    }

    fn envelope(&self) -> Node {
        Node::parse(&self.body)
    }
}

/// Send a raw request (the head is written as given, then `body`) and read to the end.
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of the response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap(), 16)
            .expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

async fn post(addr: SocketAddr, path: &str, action: &str, body: &str) -> Response {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\
         Content-Type: text/xml; charset=utf-8\r\n\
         SOAPAction: \"http://www.msn.com/webservices/AddressBook/{action}\"\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    exchange(addr, &head, body.as_bytes()).await
}

/// A request envelope as WLM writes it (prefixed envelope, default-namespaced header and
/// body elements), with `ticket` as the TicketToken (XML-escaped here) if given.
fn envelope(ticket: Option<&str>, action_xml: &str) -> String {
    let auth = match ticket {
        Some(t) => format!(
            "<ABAuthHeader xmlns=\"http://www.msn.com/webservices/AddressBook\">\
             <ManagedGroupRequest>false</ManagedGroupRequest>\
             <TicketToken>{}</TicketToken></ABAuthHeader>",
            t.replace('&', "&amp;")
        ),
        None => String::new(),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" \
           xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
         <soap:Header>\
          <ABApplicationHeader xmlns=\"http://www.msn.com/webservices/AddressBook\">\
           <ApplicationId>AAD9B99B-58E6-4F23-B975-D9EC1F9EC24A</ApplicationId>\
           <IsMigration>false</IsMigration><PartnerScenario>Initial</PartnerScenario>\
          </ABApplicationHeader>{auth}\
         </soap:Header>\
         <soap:Body>{action_xml}</soap:Body></soap:Envelope>"
    )
}

const FIND_MEMBERSHIP: &str = "<FindMembership xmlns=\"http://www.msn.com/webservices/AddressBook\">\
    <serviceFilter><Types><ServiceType>Messenger</ServiceType><ServiceType>Invitation</ServiceType>\
    </Types></serviceFilter><View>Full</View></FindMembership>";
const AB_FIND_ALL: &str = "<ABFindAll xmlns=\"http://www.msn.com/webservices/AddressBook\">\
    <abId>00000000-0000-0000-0000-000000000000</abId><abView>Full</abView>\
    <deltasOnly>false</deltasOnly><lastChange>0001-01-01T00:00:00.0000000-08:00</lastChange>\
    <dynamicItemView>Gleam</dynamicItemView></ABFindAll>";
const AB_FIND_CONTACTS_PAGED: &str = "<ABFindContactsPaged xmlns=\"http://www.msn.com/webservices/AddressBook\">\
    <filterOptions><DeltasOnly>false</DeltasOnly><LastChanged>0001-01-01T00:00:00</LastChanged>\
    <ContactFilter><IncludeHiddenContacts>true</IncludeHiddenContacts></ContactFilter></filterOptions>\
    <abView>MessengerClient8</abView><extendedContent>AB AllGroups CircleResult</extendedContent>\
    </ABFindContactsPaged>";

// ---------------------------------------------------------------- server and data

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "butterfly-addressbook-{}-{}-{:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bob's world: his lists hold alice (FL in two groups, AL), carol (FL, no group, a
/// nickname), dave (BL only); alice and eve have bob on their FL (so both are on his RL).
/// Bob's privacy is "only people on my AL" and he is not asked when added.
struct Server {
    addr: SocketAddr,
    store: Arc<SqliteStore>,
    tickets: Arc<JwtTickets>,
    bus: Arc<butterfly_bus::MemoryBus>,
    bob: Account,
    alice: Account,
    carol: Account,
    dave: Account,
    eve: Account,
    _dir: TempDir,
}

impl Server {
    fn ticket(&self, who: &Account, service: Service) -> String {
        format!(
            "t={}&p=",
            self.tickets.issue_service(who.id, &who.email, service)
        )
    }

    fn bob_ticket(&self) -> String {
        self.ticket(&self.bob, Service::Contacts)
    }

    async fn bob_roster(&self) -> Roster {
        self.store.roster(self.bob.id).await.unwrap()
    }
}

const CHEAP: PasswordCost = PasswordCost {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

async fn start() -> Server {
    let dir = TempDir::new();
    let store = Arc::new(
        SqliteStore::open(&dir.0.join("butterfly.db"))
            .await
            .unwrap(),
    );
    let tickets = Arc::new(JwtTickets::new("k1", SECRET));
    let add = async |email: &str, name: &str| {
        store
            .create_account(NewAccount {
                email: Email::parse(email).unwrap(),
                friendly_name: name.into(),
                password_hash: CHEAP.hash("pw").unwrap(),
                legacy_md5: None,
            })
            .await
            .unwrap()
    };
    let bob = add("bob@example.com", "Bob & <Co>").await;
    let alice = add("alice@example.com", "Alice Ally").await;
    let carol = add("carol@example.com", "Carol").await;
    let dave = add("dave@example.com", "Dave").await;
    let eve = add("eve@example.com", "Eve").await;

    let edit = async |owner: &Account, op: ListOp| {
        store
            .edit(owner.id, op)
            .await
            .expect("store up")
            .expect("edit allowed")
    };
    let by_email = |a: &Account| ContactRef::Email(a.email.clone());
    let add_to = |list: List, who: &Account, group: Option<GroupRef>| ListOp::Add {
        list,
        target: by_email(who),
        group,
    };
    let friends = edit(
        &bob,
        ListOp::AddGroup {
            name: "Friends".into(),
        },
    )
    .await
    .group
    .unwrap();
    let work = edit(
        &bob,
        ListOp::AddGroup {
            name: "Work & Play".into(),
        },
    )
    .await
    .group
    .unwrap();
    edit(
        &bob,
        add_to(List::Forward, &alice, Some(GroupRef::Guid(friends.guid))),
    )
    .await;
    edit(
        &bob,
        add_to(List::Forward, &alice, Some(GroupRef::Guid(work.guid))),
    )
    .await;
    edit(&bob, add_to(List::Allow, &alice, None)).await;
    let carol_row = edit(&bob, add_to(List::Forward, &carol, None))
        .await
        .contact
        .unwrap();
    edit(
        &bob,
        ListOp::SetNickname {
            contact: carol_row.guid,
            name: "Caz <3".into(),
        },
    )
    .await;
    edit(&bob, add_to(List::Block, &dave, None)).await;
    edit(&alice, add_to(List::Forward, &bob, None)).await;
    edit(&eve, add_to(List::Forward, &bob, None)).await;
    edit(&bob, ListOp::SetPrivacy(Privacy::BlockAll)).await;
    edit(&bob, ListOp::SetGtc(Gtc::NoAsk)).await;

    let bus = Arc::new(butterfly_bus::MemoryBus::new());
    let router = butterfly_addressbook::router(Deps {
        store: store.clone(),
        tickets: tickets.clone(),
        bus: bus.clone(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server {
        addr,
        store,
        tickets,
        bus,
        bob,
        alice,
        carol,
        dave,
        eve,
        _dir: dir,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.fffZ`.
fn is_millis_timestamp(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

/// Checks the parts every success shares: 200, text/xml, the ServiceHeader. Returns the
/// body's response element, named `{action}Response`.
fn success(r: &Response, action: &str) -> Node {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/xml; charset=utf-8"));
    assert!(
        r.body
            .starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>")
    );
    let env = r.envelope();
    let sh = env.at(&["Header", "ServiceHeader"]);
    assert_eq!(sh.text_of(&["Version"]), "15.01.1408.0000");
    assert!(!sh.text_of(&["CacheKey"]).is_empty());
    assert_eq!(sh.text_of(&["CacheKeyChanged"]), "true");
    assert_eq!(sh.text_of(&["PreferredHostName"]), HOST);
    assert!(Uuid::parse_str(sh.text_of(&["SessionId"])).is_ok());
    let resp = r.body_element();
    assert_eq!(resp.name, format!("{action}Response"));
    assert_eq!(
        resp.attr("xmlns"),
        Some("http://www.msn.com/webservices/AddressBook")
    );
    resp
}

/// Checks a fault: status, faultcode, and `detail/errorcode` when expected. Returns the
/// faultstring.
fn fault(r: &Response, status: u16, errorcode: Option<&str>) -> String {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/xml; charset=utf-8"));
    let f = r.body_element();
    assert_eq!(f.name, "Fault", "{}", r.body);
    assert_eq!(f.text_of(&["faultcode"]), "soap:Client");
    match errorcode {
        Some(code) => {
            assert_eq!(f.text_of(&["detail", "errorcode"]), code);
            assert_eq!(
                f.text_of(&["detail", "errorstring"]),
                f.text_of(&["faultstring"])
            );
        }
        None => assert!(f.opt("detail").is_none(), "{}", r.body),
    }
    f.text_of(&["faultstring"]).to_owned()
}

// ---------------------------------------------------------------- FindMembership

#[tokio::test]
async fn find_membership_lists_each_role_with_its_members_and_ids() {
    let s = start().await;
    let r = post(
        s.addr,
        SHARING_SERVICE_PATH,
        "FindMembership",
        &envelope(Some(&s.bob_ticket()), FIND_MEMBERSHIP),
    )
    .await;
    let resp = success(&r, "FindMembership");
    let result = resp.get("FindMembershipResult");
    let services = result.get("Services").all("Service");
    assert_eq!(services.len(), 1, "only the Messenger service");
    let service = services[0];
    assert_eq!(service.text_of(&["Info", "Handle", "Id"]), "1");
    assert_eq!(service.text_of(&["Info", "Handle", "Type"]), "Messenger");
    assert_eq!(service.text_of(&["Deleted"]), "false");
    assert!(is_millis_timestamp(service.text_of(&["LastChange"])));

    let memberships = service.get("Memberships").all("Membership");
    let roles: Vec<&str> = memberships
        .iter()
        .map(|m| m.text_of(&["MemberRole"]))
        .collect();
    assert_eq!(roles, ["Allow", "Block", "Reverse", "Pending"]);
    let expected: [(Role, Vec<&Account>); 4] = [
        (Role::Allow, vec![&s.alice]),
        (Role::Block, vec![&s.dave]),
        (Role::Reverse, vec![&s.alice, &s.eve]),
        // Eve added Bob; he has neither allowed nor blocked her.
        (Role::Pending, vec![&s.eve]),
    ];
    for (m, (role, accounts)) in memberships.iter().zip(expected) {
        assert_eq!(m.text_of(&["MembershipIsComplete"]), "true");
        let mut members = m.get("Members").all("Member");
        members.sort_by_key(|n| n.text_of(&["PassportName"]).to_owned());
        assert_eq!(members.len(), accounts.len(), "{role:?}: {members:#?}");
        for (member, account) in members.iter().zip(accounts) {
            assert_eq!(member.attr("type"), Some("PassportMember"));
            let id = ids::membership_id(account.id, role).unwrap();
            assert_eq!(member.text_of(&["MembershipId"]), id.to_string());
            assert_eq!(
                ids::parse_membership_id(member.text_of(&["MembershipId"])),
                Some((account.id, role))
            );
            assert_eq!(member.text_of(&["Type"]), "Passport");
            assert_eq!(member.text_of(&["State"]), "Accepted");
            assert_eq!(member.text_of(&["Deleted"]), "false");
            assert_eq!(member.text_of(&["PassportName"]), account.email.as_str());
            assert_eq!(member.text_of(&["IsPassportNameHidden"]), "false");
            assert_eq!(member.text_of(&["CID"]), ids::cid(account.id).to_string());
            assert!(is_millis_timestamp(member.text_of(&["LastChanged"])));
        }
    }

    let owner = result.at(&["OwnerNamespace", "Info"]);
    assert_eq!(
        owner.text_of(&["Handle", "Id"]),
        "00000000-0000-0000-0000-000000000000"
    );
    assert_eq!(
        owner.text_of(&["CreatorCID"]),
        ids::cid(s.bob.id).to_string()
    );
    assert_eq!(owner.text_of(&["CreatorPassportName"]), "bob@example.com");
}

// ---------------------------------------------------------------- ABFindAll / paged

/// The address book as clients read it, from either action's result.
struct Book<'a> {
    groups: Vec<&'a Node>,
    contacts: Vec<&'a Node>,
    record: &'a Node,
}

fn contact_with_email<'a>(book: &Book<'a>, email: &str) -> Option<&'a Node> {
    book.contacts
        .iter()
        .find(|c| c.text_of(&["contactInfo", "passportName"]) == email)
        .copied()
}

fn annotations(contact_info: &Node) -> Vec<(String, String)> {
    contact_info
        .opt("annotations")
        .map(|a| {
            a.all("Annotation")
                .iter()
                .map(|n| (n.text_of(&["Name"]).into(), n.text_of(&["Value"]).into()))
                .collect()
        })
        .unwrap_or_default()
}

/// What both actions must say about bob's address book.
async fn check_book(s: &Server, book: &Book<'_>) {
    let roster = s.bob_roster().await;
    // Groups: both of bob's, with their stored GUIDs.
    let groups: Vec<(String, String)> = book
        .groups
        .iter()
        .map(|g| {
            assert_eq!(g.text_of(&["fDeleted"]), "false");
            assert_eq!(
                g.text_of(&["groupInfo", "groupType"]),
                "c8529ce2-6ead-434d-881f-341e17db3ff8"
            );
            (
                g.text_of(&["groupId"]).to_owned(),
                g.text_of(&["groupInfo", "name"]).to_owned(),
            )
        })
        .collect();
    let stored: Vec<(String, String)> = roster
        .groups
        .iter()
        .map(|g| (g.guid.to_string(), g.name.clone()))
        .collect();
    assert_eq!(groups, stored);
    assert_eq!(
        stored.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
        ["Friends", "Work & Play"]
    );

    // Contacts: the FL (alice, carol) and Me; not dave (BL only) nor eve (RL only).
    assert_eq!(book.contacts.len(), 3, "{:#?}", book.contacts);
    assert!(contact_with_email(book, "dave@example.com").is_none());
    assert!(contact_with_email(book, "eve@example.com").is_none());
    for (account, groups) in [
        (&s.alice, vec!["Friends", "Work & Play"]),
        (&s.carol, vec![]),
    ] {
        let c = contact_with_email(book, account.email.as_str()).expect("FL contact listed");
        let row = roster.contact(&account.email).unwrap();
        assert_eq!(c.text_of(&["contactId"]), row.guid.to_string());
        assert_eq!(c.text_of(&["fDeleted"]), "false");
        assert!(is_millis_timestamp(c.text_of(&["lastChange"])));
        let info = c.get("contactInfo");
        assert_eq!(info.text_of(&["contactType"]), "Regular");
        assert_eq!(info.text_of(&["displayName"]), account.friendly_name);
        assert_eq!(info.text_of(&["quickName"]), account.friendly_name);
        assert_eq!(info.text_of(&["CID"]), ids::cid(account.id).to_string());
        assert_eq!(info.text_of(&["isMessengerUser"]), "true");
        let group_ids: Vec<&str> = info
            .opt("groupIds")
            .map(|g| g.all("guid").iter().map(|n| n.text.as_str()).collect())
            .unwrap_or_default();
        let expected: Vec<String> = groups
            .iter()
            .map(|name| {
                roster
                    .groups
                    .iter()
                    .find(|g| g.name == *name)
                    .unwrap()
                    .guid
                    .to_string()
            })
            .collect();
        assert_eq!(group_ids, expected, "{}", account.email);
        // groupIds only when in a group.
        assert_eq!(info.opt("groupIds").is_some(), !groups.is_empty());
    }
    let carol = contact_with_email(book, "carol@example.com").unwrap();
    assert_eq!(
        annotations(carol.get("contactInfo")),
        [("AB.NickName".to_owned(), "Caz <3".to_owned())]
    );
    let alice = contact_with_email(book, "alice@example.com").unwrap();
    assert!(alice.get("contactInfo").opt("annotations").is_none());

    // Me: bob himself, with his settings as annotations.
    let me = contact_with_email(book, "bob@example.com").expect("Me contact");
    let me_id = butterfly_addressbook::me_contact_id(s.bob.id);
    assert_eq!(me.text_of(&["contactId"]), me_id.to_string());
    assert!(roster.contacts.iter().all(|c| c.guid != me_id));
    let info = me.get("contactInfo");
    assert_eq!(info.text_of(&["contactType"]), "Me");
    assert_eq!(info.text_of(&["displayName"]), "Bob & <Co>");
    assert_eq!(info.text_of(&["CID"]), ids::cid(s.bob.id).to_string());
    let ann = annotations(info);
    let value = |name: &str| {
        ann.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} annotation: {ann:?}"))
    };
    assert_eq!(value("MSN.IM.BLP"), "2", "BLP BL");
    assert_eq!(value("MSN.IM.GTC"), "2", "GTC N");
    assert_eq!(value("MSN.IM.MBEA"), "0");

    // The address book's own record.
    assert_eq!(
        book.record.text_of(&["abId"]),
        "00000000-0000-0000-0000-000000000000"
    );
    assert_eq!(
        book.record.text_of(&["abInfo", "OwnerCID"]),
        ids::cid(s.bob.id).to_string()
    );
    assert_eq!(
        book.record.text_of(&["abInfo", "ownerEmail"]),
        "bob@example.com"
    );
    assert!(is_millis_timestamp(book.record.text_of(&["lastChange"])));
}

#[tokio::test]
async fn ab_find_all_lists_me_the_forward_list_and_the_groups() {
    let s = start().await;
    let r = post(
        s.addr,
        AB_SERVICE_PATH,
        "ABFindAll",
        &envelope(Some(&s.bob_ticket()), AB_FIND_ALL),
    )
    .await;
    let resp = success(&r, "ABFindAll");
    let result = resp.get("ABFindAllResult");
    assert_eq!(result.child_names(), ["groups", "contacts", "ab"]);
    let book = Book {
        groups: result.get("groups").all("Group"),
        contacts: result.get("contacts").all("Contact"),
        record: result.get("ab"),
    };
    check_book(&s, &book).await;
}

#[tokio::test]
async fn ab_find_contacts_paged_adds_the_circle_ticket() {
    let s = start().await;
    let r = post(
        s.addr,
        AB_SERVICE_PATH,
        "ABFindContactsPaged",
        &envelope(Some(&s.bob_ticket()), AB_FIND_CONTACTS_PAGED),
    )
    .await;
    let resp = success(&r, "ABFindContactsPaged");
    let result = resp.get("ABFindContactsPagedResult");
    assert_eq!(
        result.child_names(),
        ["Groups", "Contacts", "CircleResult", "Ab"]
    );
    let book = Book {
        groups: result.get("Groups").all("Group"),
        contacts: result.get("Contacts").all("Contact"),
        record: result.get("Ab"),
    };
    check_book(&s, &book).await;
    assert_eq!(book.record.text_of(&["abInfo", "ProfileVersion"]), "0");

    // The circle ticket: a SignedTicket (as escaped text) for bob's CID, in no circle,
    // signed with the server's key.
    let signed = Node::parse(result.text_of(&["CircleResult", "CircleTicket"]));
    assert_eq!(signed.name, "SignedTicket");
    let data = signed.text_of(&["Data"]);
    let ticket = String::from_utf8(BASE64.decode(data).unwrap()).unwrap();
    let ticket = Node::parse(&ticket);
    assert_eq!(ticket.name, "Ticket");
    assert_eq!(ticket.text_of(&["CID"]), ids::cid(s.bob.id).to_string());
    assert!(ticket.opt("Circle").is_none());
    assert_eq!(signed.text_of(&["Sig"]), s.tickets.circle_signature(data));
}

// ---------------------------------------------------------------- deltas

#[tokio::test]
async fn deltas_from_before_the_tombstone_retention_are_told_to_sync_in_full() {
    let s = start().await;
    let t = s.bob_ticket();
    let since = "2024-05-01T10:00:00.123Z";
    let cases = [
        (
            SHARING_SERVICE_PATH,
            "FindMembership",
            // papyon's spacing: values are trimmed.
            format!(
                "<FindMembership><View>Full</View><deltasOnly>\n true\n</deltasOnly>\
                 <lastChange>{since}</lastChange></FindMembership>"
            ),
        ),
        (
            AB_SERVICE_PATH,
            "ABFindAll",
            format!(
                "<ABFindAll><abId>00000000-0000-0000-0000-000000000000</abId>\
                 <deltasOnly>true</deltasOnly><lastChange>{since}</lastChange></ABFindAll>"
            ),
        ),
        (
            AB_SERVICE_PATH,
            "ABFindContactsPaged",
            format!(
                "<ABFindContactsPaged><filterOptions><DeltasOnly>true</DeltasOnly>\
                 <LastChanged>{since}</LastChanged></filterOptions></ABFindContactsPaged>"
            ),
        ),
    ];
    for (path, action, body) in cases {
        let r = post(s.addr, path, action, &envelope(Some(&t), &body)).await;
        let text = fault(&r, 500, Some("FullSyncRequired"));
        assert_eq!(
            text,
            format!("Need to do full sync. Can't sync deltas Client Change Time : {since}")
        );
        let f = r.body_element();
        assert_eq!(
            f.text_of(&["faultactor"]),
            format!("http://www.msn.com/webservices/AddressBook/{action}")
        );
    }
    // A delta since "never" is the whole book.
    let r = post(
        s.addr,
        SHARING_SERVICE_PATH,
        "FindMembership",
        &envelope(
            Some(&t),
            "<FindMembership><deltasOnly>true</deltasOnly>\
             <lastChange>0001-01-01T00:00:00.0000000-08:00</lastChange></FindMembership>",
        ),
    )
    .await;
    let resp = success(&r, "FindMembership");
    let allow = &resp
        .at(&["FindMembershipResult", "Services", "Service", "Memberships"])
        .all("Membership")[0];
    assert_eq!(allow.get("Members").all("Member").len(), 1);
}

// ---------------------------------------------------------------- tickets

/// A contacts-service JWT as `JwtTickets` makes them, with the given expiry. Used for
/// the expired case: a zero-lifetime ticket from `JwtTickets::with_ttls` stays valid for
/// the rest of the second it was issued in, and tests do not sleep.
fn contacts_jwt(account: &Account, exp: u64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let claims = serde_json::json!({
        "sub": account.email.as_str(),
        "uid": account.id.0,
        "aud": "butterfly-ab",
        "exp": exp,
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

#[tokio::test]
async fn requests_without_a_good_contacts_ticket_are_refused() {
    let s = start().await;
    let forger = JwtTickets::new("k1", b"another key another key another!");
    let far_future = 4_000_000_000;
    // The hand-made ticket is accepted while it is current, so the expired one below is
    // refused for its expiry alone.
    let current = format!("t={}&p=", contacts_jwt(&s.bob, far_future));
    let r = post(
        s.addr,
        SHARING_SERVICE_PATH,
        "FindMembership",
        &envelope(Some(&current), FIND_MEMBERSHIP),
    )
    .await;
    success(&r, "FindMembership");

    // A ticket whose account has gone.
    let ghost = Account {
        id: butterfly_core::account::UserId(999),
        ..s.carol.clone()
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no ticket", None),
        ("empty ticket", Some(String::new())),
        ("garbage", Some("t=garbage&p=".into())),
        (
            "forged",
            Some(format!(
                "t={}&p=",
                forger.issue_service(s.bob.id, &s.bob.email, Service::Contacts)
            )),
        ),
        ("expired", Some(format!("t={}&p=", contacts_jwt(&s.bob, 1)))),
        (
            "messenger ticket",
            Some(s.ticket(&s.bob, Service::Messenger)),
        ),
        ("web ticket", Some(s.ticket(&s.bob, Service::Web))),
        ("storage ticket", Some(s.ticket(&s.bob, Service::Storage))),
        ("unknown account", Some(s.ticket(&ghost, Service::Contacts))),
    ];
    for (what, ticket) in cases {
        for (path, action, body) in [
            (SHARING_SERVICE_PATH, "FindMembership", FIND_MEMBERSHIP),
            (AB_SERVICE_PATH, "ABFindAll", AB_FIND_ALL),
            (
                AB_SERVICE_PATH,
                "ABFindContactsPaged",
                AB_FIND_CONTACTS_PAGED,
            ),
        ] {
            let r = post(s.addr, path, action, &envelope(ticket.as_deref(), body)).await;
            assert_eq!(r.status, 403, "{what} {action}: {}", r.body);
            let text = fault(&r, 403, Some("Forbidden"));
            assert!(text.contains("ticket"), "{what}: {text}");
            assert!(!r.body.contains("bob@example.com"), "{what}: {}", r.body);
        }
    }
}

// ---------------------------------------------------------------- bad requests

#[tokio::test]
async fn bad_requests_get_faults() {
    let s = start().await;
    let t = s.bob_ticket();
    let unreadable = [
        (
            "malformed",
            "<soap:Envelope><soap:Body><FindMembership></soap:Body>".to_owned(),
            "malformed XML",
        ),
        ("not XML", "hello".to_owned(), "one root element"),
        ("empty", String::new(), "one root element"),
        (
            "wrong root",
            "<?xml version=\"1.0\"?><FindMembership><deltasOnly>false</deltasOnly></FindMembership>"
                .to_owned(),
            "must be a SOAP Envelope",
        ),
        ("no action", envelope(Some(&t), ""), "names no action"),
        (
            "doctype",
            format!(
                "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY big \"{}\">]>{}",
                "a".repeat(100),
                envelope(Some(&t), "<FindMembership>&big;</FindMembership>")
            ),
            "document type declarations are not accepted",
        ),
        (
            "undeclared entity",
            envelope(Some(&t), "<FindMembership>&big;</FindMembership>"),
            "unknown entity &big;",
        ),
    ];
    for (what, body, expected) in unreadable {
        let r = post(s.addr, SHARING_SERVICE_PATH, "FindMembership", &body).await;
        let text = fault(&r, 500, None);
        assert!(text.contains(expected), "{what}: {text}");
    }
    let latin1 = b"<Envelope><Body><FindMembership>\xE9</FindMembership></Body></Envelope>";
    let head = format!(
        "POST {SHARING_SERVICE_PATH} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        latin1.len()
    );
    let r = exchange(s.addr, &head, latin1).await;
    assert_eq!(fault(&r, 500, None), "The request is not UTF-8 text");

    // Well-formed, authenticated, but not an action this endpoint serves.
    let refused = [
        (
            SHARING_SERVICE_PATH,
            "ABAdd",
            "<ABAdd><abInfo/></ABAdd>",
            "API ABAdd no longer supported",
        ),
        // An ABService action posted to the sharing service.
        (
            SHARING_SERVICE_PATH,
            "ABFindAll",
            AB_FIND_ALL,
            "API ABFindAll no longer supported",
        ),
        (
            AB_SERVICE_PATH,
            "FindMembership",
            FIND_MEMBERSHIP,
            "API FindMembership no longer supported",
        ),
        // A circle's address book.
        (
            AB_SERVICE_PATH,
            "ABFindContactsPaged",
            "<ABFindContactsPaged><abHandle><ABId>00000000-0000-0000-0009-000000000001</ABId>\
             </abHandle></ABFindContactsPaged>",
            "Only the user's own address book is available",
        ),
        (
            AB_SERVICE_PATH,
            "ABFindAll",
            "<ABFindAll><abId>not-a-guid</abId></ABFindAll>",
            "Only the user's own address book is available",
        ),
    ];
    for (path, action, body, expected) in refused {
        let r = post(s.addr, path, action, &envelope(Some(&t), body)).await;
        assert_eq!(fault(&r, 500, Some("Forbidden")), expected, "{action}");
    }

    // Over the size limit: refused from the declared length, before any of it is read.
    let head = format!(
        "POST {SHARING_SERVICE_PATH} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\
         Content-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    let r = exchange(s.addr, &head, b"").await;
    assert_eq!(r.status, 413);
    // At the limit it is read (and is no SOAP, so it gets a fault).
    let r = post(
        s.addr,
        SHARING_SERVICE_PATH,
        "FindMembership",
        &" ".repeat(MAX_BODY_BYTES),
    )
    .await;
    fault(&r, 500, None);

    // Only POST.
    let head =
        format!("GET {AB_SERVICE_PATH} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    assert_eq!(exchange(s.addr, &head, b"").await.status, 405);

    // After all that, the service still answers.
    let r = post(
        s.addr,
        AB_SERVICE_PATH,
        "ABFindAll",
        &envelope(Some(&t), AB_FIND_ALL),
    )
    .await;
    success(&r, "ABFindAll");
}

#[test]
fn routes_are_the_lower_case_paths() {
    // The binary lower-cases request paths in front of every router, so these must be
    // lower case to match what clients send (`/abservice/SharingService.asmx`).
    for p in [AB_SERVICE_PATH, SHARING_SERVICE_PATH] {
        assert_eq!(p, p.to_ascii_lowercase());
    }
    assert_eq!(
        SHARING_SERVICE_PATH,
        "/abservice/SharingService.asmx".to_ascii_lowercase()
    );
}

/// A delta answer (spec §3.7) holds exactly what changed after the client's stamp: edited
/// rows, removals as `fDeleted`/`Deleted`, the Me contact when the owner's settings
/// changed; an up-to-date stamp gets nothing; a stamp we never issued gets a full sync.
#[tokio::test]
async fn deltas_hold_what_changed_since_the_clients_stamp() {
    let s = start().await;
    let t = s.bob_ticket();
    let paged = |since: &str| {
        format!(
            "<ABFindContactsPaged><filterOptions><DeltasOnly>true</DeltasOnly>\
             <LastChanged>{since}</LastChanged></filterOptions></ABFindContactsPaged>"
        )
    };
    let full = post(
        s.addr,
        AB_SERVICE_PATH,
        "ABFindContactsPaged",
        &envelope(Some(&t), AB_FIND_CONTACTS_PAGED),
    )
    .await;
    let stamp = success(&full, "ABFindContactsPaged")
        .text_of(&["ABFindContactsPagedResult", "Ab", "lastChange"])
        .to_owned();
    assert!(is_millis_timestamp(&stamp), "{stamp}");

    // Up to date: nothing, and the same stamp back.
    let r = post(
        s.addr,
        AB_SERVICE_PATH,
        "ABFindContactsPaged",
        &envelope(Some(&t), &paged(&stamp)),
    )
    .await;
    let result = success(&r, "ABFindContactsPaged");
    let result = result.get("ABFindContactsPagedResult");
    assert!(result.get("Contacts").children.is_empty());
    assert!(result.get("Groups").children.is_empty());
    assert_eq!(result.text_of(&["Ab", "lastChange"]), stamp);

    // Bob drops Carol (she leaves his lists entirely), takes Alice off FL (she stays on
    // AL), deletes a group, and renames himself.
    let edit = async |op: ListOp| s.store.edit(s.bob.id, op).await.unwrap().unwrap();
    let carol = ContactRef::Email(s.carol.email.clone());
    let alice = ContactRef::Email(s.alice.email.clone());
    let book = s.store.roster(s.bob.id).await.unwrap();
    let carol_guid = book.contact(&s.carol.email).unwrap().guid;
    let alice_guid = book.contact(&s.alice.email).unwrap().guid;
    let friends = book
        .groups
        .iter()
        .find(|g| g.name == "Friends")
        .unwrap()
        .guid;
    edit(ListOp::Remove {
        list: List::Forward,
        target: carol,
        group: None,
    })
    .await;
    edit(ListOp::Remove {
        list: List::Forward,
        target: alice,
        group: None,
    })
    .await;
    edit(ListOp::RemoveGroup {
        group: GroupRef::Guid(friends),
    })
    .await;
    edit(ListOp::SetFriendlyName("Bobby".into())).await;

    let r = post(
        s.addr,
        AB_SERVICE_PATH,
        "ABFindContactsPaged",
        &envelope(Some(&t), &paged(&stamp)),
    )
    .await;
    let result = success(&r, "ABFindContactsPaged");
    let result = result.get("ABFindContactsPagedResult");
    let newer = result.text_of(&["Ab", "lastChange"]).to_owned();
    assert!(newer > stamp, "{newer} after {stamp}");
    let contacts = result.get("Contacts").all("Contact");
    let by_id = |id: String| {
        contacts
            .iter()
            .find(|c| c.text_of(&["contactId"]) == id)
            .unwrap_or_else(|| panic!("no contact {id} in {}", r.body))
    };
    for (guid, email) in [
        (carol_guid, "carol@example.com"),
        (alice_guid, "alice@example.com"),
    ] {
        let c = by_id(guid.to_string());
        assert_eq!(c.text_of(&["fDeleted"]), "true");
        assert_eq!(c.text_of(&["contactInfo", "passportName"]), email);
    }
    let me = by_id(butterfly_addressbook::me_contact_id(s.bob.id).to_string());
    assert_eq!(me.text_of(&["contactInfo", "displayName"]), "Bobby");
    assert_eq!(contacts.len(), 3, "only what changed: {}", r.body);
    let groups = result.get("Groups").all("Group");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].text_of(&["groupId"]), friends.to_string());
    assert_eq!(groups[0].text_of(&["fDeleted"]), "true");

    // The memberships: Carol deleted from every role she had; Alice still allowed.
    let r = post(
        s.addr,
        SHARING_SERVICE_PATH,
        "FindMembership",
        &envelope(
            Some(&t),
            &format!("<FindMembership><deltasOnly>true</deltasOnly><lastChange>{stamp}</lastChange></FindMembership>"),
        ),
    )
    .await;
    let resp = success(&r, "FindMembership");
    let roles = resp
        .at(&["FindMembershipResult", "Services", "Service", "Memberships"])
        .all("Membership");
    let members_of = |role: &str| -> Vec<(String, String)> {
        roles
            .iter()
            .find(|m| m.text_of(&["MemberRole"]) == role)
            .unwrap()
            .get("Members")
            .all("Member")
            .iter()
            .map(|m| {
                (
                    m.text_of(&["PassportName"]).to_owned(),
                    m.text_of(&["Deleted"]).to_owned(),
                )
            })
            .collect()
    };
    let allow = members_of("Allow");
    assert!(
        allow.contains(&("alice@example.com".into(), "false".into())),
        "{allow:?}"
    );
    assert!(
        allow.contains(&("carol@example.com".into(), "true".into())),
        "{allow:?}"
    );
    assert!(
        !allow.iter().any(|(e, _)| e == "eve@example.com"),
        "unchanged: {allow:?}"
    );

    // A stamp we never issued (in the future) or can no longer answer: full sync.
    for since in [
        "2999-01-01T00:00:00.000Z",
        "2001-01-01T00:00:00.000Z",
        "garbage",
    ] {
        let r = post(
            s.addr,
            AB_SERVICE_PATH,
            "ABFindContactsPaged",
            &envelope(Some(&t), &paged(since)),
        )
        .await;
        fault(&r, 500, Some("FullSyncRequired"));
    }
}

// ---------------------------------------------------------------- edits

/// A signed-in session of `email` on the test bus: what the NS would be told.
async fn session_of(s: &Server, email: &Email) -> butterfly_core::inbox::Inbox {
    use butterfly_core::bus::Bus as _;
    let (tx, rx) = butterfly_core::inbox::inbox(16);
    s.bus.attach(email, tx).await.unwrap();
    rx
}

async fn next_event(rx: &mut butterfly_core::inbox::Inbox) -> butterfly_core::bus::Event {
    match tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("an event")
    {
        butterfly_core::inbox::Received::Event(e) => (*e).clone(),
        other => panic!("{other:?}"),
    }
}

/// The edits go through the list rules, are stored, answer the GUIDs clients read, tell
/// the users they concern, and are idempotent where clients retry.
#[tokio::test]
async fn edits_are_stored_answered_and_announced() {
    use butterfly_core::bus::{Event, UserEvent};
    let s = start().await;
    let t = s.bob_ticket();
    let mut eve = session_of(&s, &s.eve.email).await;
    let ab = |action: &str, body: String| {
        let t = t.clone();
        let addr = s.addr;
        let action = action.to_owned();
        async move { post(addr, AB_SERVICE_PATH, &action, &envelope(Some(&t), &body)).await }
    };

    // ABContactAdd: Eve on FL (and AL, as asked); she is told she was added.
    let add = "<ABContactAdd><abId>00000000-0000-0000-0000-000000000000</abId><contacts><Contact>\
               <contactInfo><contactType>LivePending</contactType><passportName>eve@example.com</passportName>\
               <isMessengerUser>true</isMessengerUser></contactInfo></Contact></contacts>\
               <options><EnableAllowListManagement>true</EnableAllowListManagement></options></ABContactAdd>";
    let r = ab("ABContactAdd", add.to_owned()).await;
    let resp = success(&r, "ABContactAdd");
    let id = resp.text_of(&["ABContactAddResult", "guid"]).to_owned();
    let roster = s.store.roster(s.bob.id).await.unwrap();
    let eve_row = roster.contact(&s.eve.email).unwrap();
    assert_eq!(eve_row.guid.to_string(), id);
    assert!(eve_row.lists.contains(List::Forward) && eve_row.lists.contains(List::Allow));
    assert_eq!(
        next_event(&mut eve).await,
        Event::User(UserEvent::ReverseList {
            from: s.bob.email.clone(),
            friendly_name: "Bob & <Co>".into(),
            added: true
        })
    );
    // Again: the same contact, no error.
    let r = ab("ABContactAdd", add.to_owned()).await;
    assert_eq!(
        success(&r, "ABContactAdd").text_of(&["ABContactAddResult", "guid"]),
        id
    );

    // A group, a contact put in it and taken out, a rename, a delete.
    let r = ab(
        "ABGroupAdd",
        "<ABGroupAdd><groupAddOptions><fRenameOnMsgrConflict>false</fRenameOnMsgrConflict></groupAddOptions>\
         <groupInfo><GroupInfo><name>Family</name><groupType>C8529CE2-6EAD-434d-881F-341E17DB3FF8</groupType>\
         </GroupInfo></groupInfo></ABGroupAdd>".to_owned(),
    )
    .await;
    let group = success(&r, "ABGroupAdd")
        .text_of(&["ABGroupAddResult", "guid"])
        .to_owned();
    let filter = format!("<groupFilter><groupIds><guid>{group}</guid></groupIds></groupFilter>");
    let contact = format!("<contacts><Contact><contactId>{id}</contactId></Contact></contacts>");
    let r = ab(
        "ABGroupContactAdd",
        format!("<ABGroupContactAdd>{filter}{contact}</ABGroupContactAdd>"),
    )
    .await;
    assert_eq!(
        success(&r, "ABGroupContactAdd").text_of(&["ABGroupContactAddResult", "guid"]),
        id
    );
    let in_group = |r: &butterfly_core::lists::Roster| {
        let g = r
            .groups
            .iter()
            .find(|g| g.guid.to_string() == group)
            .unwrap();
        r.contact(&s.eve.email).unwrap().groups.contains(&g.number)
    };
    assert!(in_group(&s.store.roster(s.bob.id).await.unwrap()));
    let r = ab(
        "ABGroupContactDelete",
        format!("<ABGroupContactDelete>{filter}{contact}</ABGroupContactDelete>"),
    )
    .await;
    success(&r, "ABGroupContactDelete");
    assert!(!in_group(&s.store.roster(s.bob.id).await.unwrap()));
    let r = ab(
        "ABGroupUpdate",
        format!("<ABGroupUpdate><groups><Group><groupId>{group}</groupId><groupInfo><name>Kin</name></groupInfo>\
                 <propertiesChanged>GroupName</propertiesChanged></Group></groups></ABGroupUpdate>"),
    )
    .await;
    success(&r, "ABGroupUpdate");
    assert!(
        s.store
            .roster(s.bob.id)
            .await
            .unwrap()
            .groups
            .iter()
            .any(|g| g.name == "Kin")
    );
    // A second group of the same name is refused with the errorcode clients read.
    let dup =
        "<ABGroupAdd><groupInfo><GroupInfo><name>Kin</name></GroupInfo></groupInfo></ABGroupAdd>";
    fault(
        &ab("ABGroupAdd", dup.to_owned()).await,
        500,
        Some("GroupAlreadyExists"),
    );
    let r = ab(
        "ABGroupDelete",
        format!("<ABGroupDelete>{filter}</ABGroupDelete>"),
    )
    .await;
    success(&r, "ABGroupDelete");
    assert!(
        !s.store
            .roster(s.bob.id)
            .await
            .unwrap()
            .groups
            .iter()
            .any(|g| g.name == "Kin")
    );

    // The Me contact: name and privacy.
    let r = ab(
        "ABContactUpdate",
        "<ABContactUpdate><contacts><Contact><contactInfo><contactType>Me</contactType>\
         <displayName>Bobby</displayName><annotations><Annotation><Name>MSN.IM.BLP</Name><Value>1</Value></Annotation></annotations>\
         </contactInfo><propertiesChanged>DisplayName Annotation</propertiesChanged></Contact></contacts></ABContactUpdate>".to_owned(),
    )
    .await;
    success(&r, "ABContactUpdate");
    let roster = s.store.roster(s.bob.id).await.unwrap();
    assert_eq!(
        (roster.friendly_name.as_str(), roster.privacy),
        ("Bobby", Privacy::AllowAll)
    );

    // Block Eve through the membership service: she is told her view of Bob changed.
    let sharing = |action: &str, role: &str, who: &str| {
        format!(
            "<{action}><serviceHandle><Id>0</Id><Type>Messenger</Type><ForeignId></ForeignId></serviceHandle>\
             <memberships><Membership><MemberRole>{role}</MemberRole><Members><Member xsi:type=\"PassportMember\">\
             <Type>Passport</Type><State>Accepted</State><PassportName>{who}</PassportName></Member></Members>\
             </Membership></memberships></{action}>"
        )
    };
    let delete_allow = sharing("DeleteMember", "Allow", "eve@example.com");
    let r = post(
        s.addr,
        SHARING_SERVICE_PATH,
        "DeleteMember",
        &envelope(Some(&t), &delete_allow),
    )
    .await;
    success(&r, "DeleteMember");
    let block = sharing("AddMember", "Block", "eve@example.com");
    let r = post(
        s.addr,
        SHARING_SERVICE_PATH,
        "AddMember",
        &envelope(Some(&t), &block),
    )
    .await;
    success(&r, "AddMember");
    let lists = s
        .store
        .roster(s.bob.id)
        .await
        .unwrap()
        .contact(&s.eve.email)
        .unwrap()
        .lists;
    assert!(lists.contains(List::Block) && !lists.contains(List::Allow));
    let mut told_blocked = false;
    for _ in 0..4 {
        if let Event::User(UserEvent::PeerViewChanged { peer, view }) = next_event(&mut eve).await {
            assert_eq!(peer, s.bob.email);
            if !view.lets_me_see() {
                told_blocked = true;
                break;
            }
        }
    }
    assert!(told_blocked, "Eve was not told she is blocked");
    // Unknown addresses and bad ones get the errorcodes clients read.
    let unknown = sharing("AddMember", "Allow", "nobody@example.com");
    let r = post(
        s.addr,
        SHARING_SERVICE_PATH,
        "AddMember",
        &envelope(Some(&t), &unknown),
    )
    .await;
    fault(&r, 500, Some("UserDoesNotExist"));
    let bad = add.replace("eve@example.com", "not-an-address");
    fault(
        &ab("ABContactAdd", bad).await,
        500,
        Some("BadEmailArgument"),
    );

    // ABContactDelete: off FL; twice is fine.
    for _ in 0..2 {
        let r = ab(
            "ABContactDelete",
            format!("<ABContactDelete>{contact}</ABContactDelete>"),
        )
        .await;
        success(&r, "ABContactDelete");
    }
    let row = s.store.roster(s.bob.id).await.unwrap();
    assert!(
        row.contact(&s.eve.email)
            .is_none_or(|c| !c.lists.contains(List::Forward))
    );
}

/// Nothing was sent to this session (the address book announces before it answers, so
/// after an answer this is final).
fn nothing_for(rx: &mut butterfly_core::inbox::Inbox) {
    if let Some(e) = rx.try_recv() {
        panic!("unexpected event: {e:?}");
    }
}

/// The view `peer` was told it has of Bob, from the next event.
async fn view_told(s: &Server, rx: &mut butterfly_core::inbox::Inbox) -> PeerView {
    use butterfly_core::bus::{Event, UserEvent};
    match next_event(rx).await {
        Event::User(UserEvent::PeerViewChanged { peer, view }) => {
            assert_eq!(peer, s.bob.email);
            view
        }
        other => panic!("{other:?}"),
    }
}

/// A SharingService edit of one member of `role`, written as `member` (its naming
/// elements).
fn membership_edit(action: &str, role: &str, member: &str) -> String {
    format!(
        "<{action} xmlns=\"http://www.msn.com/webservices/AddressBook\"><serviceHandle><Id>0</Id>\
         <Type>Messenger</Type><ForeignId></ForeignId></serviceHandle><memberships><Membership>\
         <MemberRole>{role}</MemberRole><Members><Member xsi:type=\"PassportMember\">\
         <Type>Passport</Type><State>Accepted</State>{member}</Member></Members></Membership>\
         </memberships></{action}>"
    )
}

fn passport(email: &str) -> String {
    format!("<PassportName>{email}</PassportName>")
}

fn membership_id(who: &Account, role: Role) -> String {
    format!(
        "<MembershipId>{}</MembershipId>",
        ids::membership_id(who.id, role).unwrap()
    )
}

/// AddMember/DeleteMember for each role, by address and by membership id: the member is
/// told how they now see Bob; repeating an edit is success and tells nobody; members that
/// do not exist get the faults the official service sent.
#[tokio::test]
async fn membership_edits_tell_the_member_and_refuse_what_does_not_exist() {
    use butterfly_core::bus::{Event, UserEvent};
    let s = start().await;
    let t = s.bob_ticket();
    let mut eve = session_of(&s, &s.eve.email).await;
    // Bob's own session: told once per request that changed his lists.
    let mut bob = session_of(&s, &s.bob.email).await;
    let sharing = async |action: &str, role: &str, member: &str| {
        let body = membership_edit(action, role, member);
        post(
            s.addr,
            SHARING_SERVICE_PATH,
            action,
            &envelope(Some(&t), &body),
        )
        .await
    };
    let eve_lists = async || {
        s.bob_roster()
            .await
            .contact(&s.eve.email)
            .map(|c| c.lists)
            .unwrap_or_default()
    };
    let eve_name = passport("eve@example.com");

    // Allowed: Bob shows only to his allow list, so Eve now sees him.
    success(&sharing("AddMember", "Allow", &eve_name).await, "AddMember");
    assert!(eve_lists().await.contains(List::Allow));
    assert!(view_told(&s, &mut eve).await.lets_me_see());
    assert_eq!(
        next_event(&mut bob).await,
        Event::User(UserEvent::ListsChanged)
    );
    success(&sharing("AddMember", "Allow", &eve_name).await, "AddMember");
    nothing_for(&mut eve);
    nothing_for(&mut bob);

    // Blocked while allowed: moved, and she no longer sees him.
    success(&sharing("AddMember", "Block", &eve_name).await, "AddMember");
    let lists = eve_lists().await;
    assert!(lists.contains(List::Block) && !lists.contains(List::Allow));
    view_told(&s, &mut eve).await;
    let last = view_told(&s, &mut eve).await;
    assert!(!last.lets_me_see() && last.lists_of_me.contains(List::Block));
    nothing_for(&mut eve);

    // Unblocked by membership id, as WLM names members it read from FindMembership.
    let blocked = membership_id(&s.eve, Role::Block);
    success(
        &sharing("DeleteMember", "Block", &blocked).await,
        "DeleteMember",
    );
    assert!(!eve_lists().await.contains(List::Block));
    let view = view_told(&s, &mut eve).await;
    assert!(!view.lists_of_me.contains(List::Block) && !view.lets_me_see());
    success(
        &sharing("DeleteMember", "Block", &blocked).await,
        "DeleteMember",
    );
    nothing_for(&mut eve);

    // Reverse and Pending: accepted, nothing changes, nobody is told.
    let before = eve_lists().await;
    for (action, role) in [
        ("AddMember", "Reverse"),
        ("DeleteMember", "Reverse"),
        ("AddMember", "Pending"),
        ("DeleteMember", "Pending"),
    ] {
        success(&sharing(action, role, &eve_name).await, action);
    }
    assert_eq!(eve_lists().await, before);
    nothing_for(&mut eve);

    // Members that do not exist.
    let nobody = passport("nobody@example.com");
    let f = fault(
        &sharing("AddMember", "Allow", &nobody).await,
        500,
        Some("UserDoesNotExist"),
    );
    assert_eq!(f, "User does not exist");
    let gone = Account {
        id: butterfly_core::account::UserId(9999),
        ..s.eve.clone()
    };
    for member in [
        nobody.clone(),
        membership_id(&gone, Role::Block),
        // Eve's id, but under the other role.
        membership_id(&s.eve, Role::Allow),
        "<MembershipId>16</MembershipId>".to_owned(),
        "<MembershipId>x</MembershipId>".to_owned(),
    ] {
        let f = fault(
            &sharing("DeleteMember", "Block", &member).await,
            500,
            Some("MemberDoesNotExist"),
        );
        assert_eq!(f, "Member does not exist", "{member}");
    }
    let f = fault(
        &sharing("AddMember", "Block", &passport("eve.example.com")).await,
        500,
        Some("BadEmailArgument"),
    );
    assert_eq!(f, "Malformed email Argument Email missing '@' character");
    fault(&sharing("AddMember", "Hidden", &eve_name).await, 500, None);
    assert_eq!(eve_lists().await, before);
    nothing_for(&mut eve);
    // The block (one request, two list edits) told Bob once, the unblock once.
    for _ in 0..2 {
        assert_eq!(
            next_event(&mut bob).await,
            Event::User(UserEvent::ListsChanged)
        );
    }
    nothing_for(&mut bob);
}

/// The contact and group edits' other paths: removal told to the contact, nicknames, the
/// Me contact named by its id with only the properties the client says changed,
/// create-and-add into a group, idempotent group membership, and the faults for bad
/// addresses, unknown accounts, contacts and groups, and bad group names.
#[tokio::test]
async fn contact_and_group_edits_fault_as_clients_expect_and_tell_the_contact() {
    use butterfly_core::bus::{Event, UserEvent};
    let s = start().await;
    let t = s.bob_ticket();
    let mut carol = session_of(&s, &s.carol.email).await;
    let mut eve = session_of(&s, &s.eve.email).await;
    let mut alice = session_of(&s, &s.alice.email).await;
    let ab = async |action: &str, body: String| {
        post(s.addr, AB_SERVICE_PATH, action, &envelope(Some(&t), &body)).await
    };
    let roster = s.bob_roster().await;
    let id_of = |who: &Account| roster.contact(&who.email).unwrap().guid;
    let group_id = |name: &str| roster.groups.iter().find(|g| g.name == name).unwrap().guid;
    let (friends, work) = (group_id("Friends"), group_id("Work & Play"));
    let contact_id =
        |id: Uuid| format!("<contacts><Contact><contactId>{id}</contactId></Contact></contacts>");
    let filter =
        |g: Uuid| format!("<groupFilter><groupIds><guid>{g}</guid></groupIds></groupFilter>");

    // ABContactDelete: Carol is told she left Bob's list.
    let r = ab(
        "ABContactDelete",
        format!(
            "<ABContactDelete>{}</ABContactDelete>",
            contact_id(id_of(&s.carol))
        ),
    )
    .await;
    success(&r, "ABContactDelete");
    assert_eq!(
        next_event(&mut carol).await,
        Event::User(UserEvent::ReverseList {
            from: s.bob.email.clone(),
            friendly_name: "Bob & <Co>".into(),
            added: false
        })
    );
    assert!(s.bob_roster().await.contact(&s.carol.email).is_none());

    // ABContactAdd: addresses checked as the official service did; unknown accounts and
    // oneself refused.
    let contact_add = |who: &str| {
        format!(
            "<ABContactAdd><abId>00000000-0000-0000-0000-000000000000</abId><contacts><Contact>\
             <contactInfo><passportName>{who}</passportName><isMessengerUser>true</isMessengerUser>\
             </contactInfo></Contact></contacts></ABContactAdd>"
        )
    };
    for (who, errorcode, why) in [
        (
            "carol.example.com",
            "BadEmailArgument",
            "Malformed email Argument Email missing '@' character",
        ),
        (
            "carol@example",
            "BadEmailArgument",
            "Malformed email Argument Email missing '.' character",
        ),
        (
            "nobody@example.com",
            "InvalidPassportUser",
            "The Passport user specified is invalid SignInName: nobody@example.com",
        ),
        (
            "bob@example.com",
            "InvalidPassportUser",
            "The Passport user specified is invalid SignInName: bob@example.com",
        ),
    ] {
        let f = fault(
            &ab("ABContactAdd", contact_add(who)).await,
            500,
            Some(errorcode),
        );
        assert_eq!(f, why);
    }
    nothing_for(&mut carol);

    // ABContactUpdate of a contact: the nickname; nobody is told.
    let nickname = format!(
        "<ABContactUpdate><contacts><Contact><contactId>{}</contactId><contactInfo><annotations>\
         <Annotation><Name>AB.NickName</Name><Value>Ally</Value></Annotation></annotations>\
         </contactInfo><propertiesChanged>Annotation</propertiesChanged></Contact></contacts>\
         </ABContactUpdate>",
        id_of(&s.alice)
    );
    success(&ab("ABContactUpdate", nickname).await, "ABContactUpdate");
    let roster_now = s.bob_roster().await;
    assert_eq!(
        roster_now
            .contact(&s.alice.email)
            .unwrap()
            .nickname
            .as_deref(),
        Some("Ally")
    );
    nothing_for(&mut alice);
    let unknown = format!(
        "<ABContactUpdate><contacts><Contact><contactId>{}</contactId><contactInfo>\
         <isMessengerUser>false</isMessengerUser></contactInfo><propertiesChanged>IsMessengerUser\
         </propertiesChanged></Contact></contacts></ABContactUpdate>",
        Uuid::new_v4()
    );
    let f = fault(
        &ab("ABContactUpdate", unknown).await,
        500,
        Some("ContactDoesNotExist"),
    );
    assert_eq!(f, "Contact Does Not Exist");

    // The Me contact named by its id: privacy to "everyone but my block list". Eve (on
    // his reverse list, neither allowed nor blocked) is told she sees him now; Alice is
    // allowed either way. The stale display name beside it is not a change.
    let me = format!(
        "<ABContactUpdate><contacts><Contact><contactId>{}</contactId><contactInfo>\
         <displayName>Stale</displayName><annotations><Annotation><Name>MSN.IM.BLP</Name>\
         <Value>1</Value></Annotation><Annotation><Name>MSN.IM.MPOP</Name><Value>1</Value>\
         </Annotation></annotations></contactInfo><propertiesChanged>Annotation</propertiesChanged>\
         </Contact></contacts></ABContactUpdate>",
        butterfly_addressbook::me_contact_id(s.bob.id)
    );
    success(&ab("ABContactUpdate", me).await, "ABContactUpdate");
    let roster_now = s.bob_roster().await;
    assert_eq!(roster_now.privacy, Privacy::AllowAll);
    assert_eq!(roster_now.friendly_name, "Bob & <Co>");
    assert!(view_told(&s, &mut eve).await.lets_me_see());
    nothing_for(&mut alice);

    // Group names: too long, or the name of "no group".
    let group_add = |name: &str| {
        format!(
            "<ABGroupAdd><groupInfo><GroupInfo><name>{name}</name></GroupInfo></groupInfo></ABGroupAdd>"
        )
    };
    let f = fault(
        &ab("ABGroupAdd", group_add(&"x".repeat(62))).await,
        500,
        Some("BadArgumentLength"),
    );
    assert_eq!(
        f,
        "Argument Exceeded Allowed Length GroupName exceeded length"
    );
    fault(
        &ab("ABGroupAdd", group_add("(No Group)")).await,
        500,
        Some("GroupAlreadyExists"),
    );
    // Unknown groups.
    let nowhere = Uuid::new_v4();
    let rename = format!(
        "<ABGroupUpdate><groups><Group><groupId>{nowhere}</groupId><groupInfo><name>Kin</name>\
         </groupInfo><propertiesChanged>GroupName</propertiesChanged></Group></groups></ABGroupUpdate>"
    );
    fault(
        &ab("ABGroupUpdate", rename).await,
        500,
        Some("GroupDoesNotExist"),
    );
    let delete = format!("<ABGroupDelete>{}</ABGroupDelete>", filter(nowhere));
    fault(
        &ab("ABGroupDelete", delete).await,
        500,
        Some("GroupDoesNotExist"),
    );
    let into_nowhere = format!(
        "<ABGroupContactAdd>{}{}</ABGroupContactAdd>",
        filter(nowhere),
        contact_id(id_of(&s.alice))
    );
    fault(
        &ab("ABGroupContactAdd", into_nowhere).await,
        500,
        Some("GroupDoesNotExist"),
    );
    // An unknown contact.
    let stranger = format!(
        "<ABGroupContactAdd>{}{}</ABGroupContactAdd>",
        filter(friends),
        contact_id(Uuid::new_v4())
    );
    fault(
        &ab("ABGroupContactAdd", stranger).await,
        500,
        Some("ContactDoesNotExist"),
    );

    // Create-and-add: Eve, named by address, onto the list and into Friends; she is told.
    let create = format!(
        "<ABGroupContactAdd><groupFilter><groupIds><guid>{friends}</guid></groupIds></groupFilter>\
         <contacts><Contact><contactInfo><passportName>eve@example.com</passportName></contactInfo>\
         </Contact></contacts><groupContactAddOptions><fGenerateMissingQuickName>true\
         </fGenerateMissingQuickName></groupContactAddOptions></ABGroupContactAdd>"
    );
    let r = ab("ABGroupContactAdd", create).await;
    let made = success(&r, "ABGroupContactAdd")
        .text_of(&["ABGroupContactAddResult", "guid"])
        .to_owned();
    let roster_now = s.bob_roster().await;
    let eve_row = roster_now.contact(&s.eve.email).unwrap();
    let friends_no = roster_now.group(GroupRef::Guid(friends)).unwrap().number;
    assert_eq!(eve_row.guid.to_string(), made);
    assert!(eve_row.lists.contains(List::Forward) && eve_row.groups == [friends_no]);
    assert!(matches!(
        next_event(&mut eve).await,
        Event::User(UserEvent::ReverseList { added: true, .. })
    ));
    // Again, by id: already in the group; the same GUID, nobody told.
    let again = format!(
        "<ABGroupContactAdd>{}{}</ABGroupContactAdd>",
        filter(friends),
        contact_id(eve_row.guid)
    );
    let r = ab("ABGroupContactAdd", again).await;
    assert_eq!(
        success(&r, "ABGroupContactAdd").text_of(&["ABGroupContactAddResult", "guid"]),
        made
    );
    nothing_for(&mut eve);

    // Out of a group twice: the second time it is already so.
    let out_of_work = format!(
        "<ABGroupContactDelete>{}{}</ABGroupContactDelete>",
        filter(work),
        contact_id(id_of(&s.alice))
    );
    for _ in 0..2 {
        success(
            &ab("ABGroupContactDelete", out_of_work.clone()).await,
            "ABGroupContactDelete",
        );
    }
    let work_no = roster.group(GroupRef::Guid(work)).unwrap().number;
    let alice_row = s
        .bob_roster()
        .await
        .contact(&s.alice.email)
        .unwrap()
        .clone();
    assert!(!alice_row.groups.contains(&work_no) && alice_row.lists.contains(List::Forward));
    nothing_for(&mut alice);
    nothing_for(&mut carol);
}

// ---------------------------------------------------------------- storage

fn storage_envelope(ticket: &str, action_xml: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soap:Header><StorageApplicationHeader xmlns=\"http://www.msn.com/webservices/storage/2008\">\
         <ApplicationID>Messenger Client 9.0</ApplicationID><Scenario>Initial</Scenario></StorageApplicationHeader>\
         <StorageUserHeader xmlns=\"http://www.msn.com/webservices/storage/2008\"><Puid>0</Puid>\
         <TicketToken>{}</TicketToken></StorageUserHeader></soap:Header>\
         <soap:Body>{action_xml}</soap:Body></soap:Envelope>",
        ticket.replace('&', "&amp;")
    )
}

/// The roaming profile as WLM 2009 uses it: GetProfile at sign-in, UpdateProfile for the
/// name and message, CreateDocument for the picture (served at its public URL), and
/// DeleteRelationships to remove it. Only a storage ticket opens it.
#[tokio::test]
async fn the_storage_service_keeps_the_roaming_profile() {
    let s = start().await;
    let t = s.ticket(&s.bob, Service::Storage);
    let cid = ids::cid_hex(s.bob.id);
    let call = |action: &'static str, body: String| {
        let t = t.clone();
        let addr = s.addr;
        async move {
            post(
                addr,
                butterfly_addressbook::STORAGE_PATH,
                action,
                &storage_envelope(&t, &body),
            )
            .await
        }
    };
    let get_profile = "<GetProfile xmlns=\"http://www.msn.com/webservices/storage/2008\"><profileHandle><Alias>\
        <Name>1</Name><NameSpace>MyCidStuff</NameSpace></Alias><RelationshipName>MyProfile</RelationshipName>\
        </profileHandle></GetProfile>";

    let r = call("GetProfile", get_profile.into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let p = r.body_element();
    assert_eq!(p.name, "GetProfileResponse");
    let result = p.get("GetProfileResult");
    assert_eq!(result.text_of(&["ResourceID"]), format!("{cid}!106"));
    let expression = result.get("ExpressionProfile");
    assert_eq!(expression.text_of(&["DisplayName"]), "Bob & <Co>");
    assert_eq!(expression.text_of(&["PersonalStatus"]), "");
    assert_eq!(
        expression.text_of(&["Photo", "ResourceID"]),
        format!("{cid}!205")
    );
    assert!(expression.get("Photo").opt("DocumentStreams").is_none());

    let r = call(
        "UpdateProfile",
        "<UpdateProfile><profile><ResourceID>x!106</ResourceID><ExpressionProfile><FreeText>Update</FreeText>\
         <DisplayName>Bobby</DisplayName><PersonalStatus>at work</PersonalStatus><Flags>0</Flags>\
         </ExpressionProfile></profile></UpdateProfile>"
            .into(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let picture = "BM a bitmap, as far as the sniffer can tell";
    let b64 = BASE64.encode(picture);
    let r = call(
        "CreateDocument",
        format!(
            "<CreateDocument><parentHandle><RelationshipName>/UserTiles</RelationshipName></parentHandle>\
             <document xsi:type=\"Photo\"><Name>?</Name><DocumentStreams><DocumentStream xsi:type=\"PhotoStream\">\
             <DocumentStreamType>UserTileStatic</DocumentStreamType><MimeType>png</MimeType><Data>{b64}</Data>\
             <DataSize>0</DataSize></DocumentStream></DocumentStreams></document>\
             <relationshipName>Messenger User Tile</relationshipName></CreateDocument>"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body_element().text_of(&["CreateDocumentResult"]),
        format!("{cid}!205")
    );

    let r = call("GetProfile", get_profile.into()).await;
    let expression = r
        .body_element()
        .get("GetProfileResult")
        .get("ExpressionProfile")
        .clone();
    assert_eq!(expression.text_of(&["DisplayName"]), "Bobby");
    assert_eq!(expression.text_of(&["PersonalStatus"]), "at work");
    let stream = expression.at(&["Photo", "DocumentStreams", "DocumentStream"]);
    assert_eq!(stream.text_of(&["MimeType"]), "image/bmp");
    assert_eq!(stream.text_of(&["DataSize"]), picture.len().to_string());
    let url = stream.text_of(&["PreAuthURL"]).to_owned();
    let path = &url[url.find("/storage/").expect("a storage URL")..];
    assert_eq!(path, format!("/storage/usertile/{cid}/static"));
    let tile = exchange(
        s.addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"),
        b"",
    )
    .await;
    assert_eq!((tile.status, tile.body.as_str()), (200, picture));
    assert_eq!(tile.header("content-type"), Some("image/bmp"));

    // Not a picture: refused, the old one kept.
    let r = call(
        "UpdateDocument",
        format!(
            "<UpdateDocument><document><DocumentStreams><DocumentStream><Data>{}</Data></DocumentStream>\
             </DocumentStreams></document></UpdateDocument>",
            BASE64.encode("not an image")
        ),
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.body);
    let r = call("DeleteRelationships", "<DeleteRelationships/>".into()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let gone = exchange(
        s.addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"),
        b"",
    )
    .await;
    assert_eq!(gone.status, 404);

    // A contacts ticket does not open the storage service.
    let wrong = post(
        s.addr,
        butterfly_addressbook::STORAGE_PATH,
        "GetProfile",
        &storage_envelope(&s.bob_ticket(), get_profile),
    )
    .await;
    assert_eq!(wrong.status, 403);
}
