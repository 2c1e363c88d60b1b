//! The address-book server: the `Store` port served over gRPC, with the standard health
//! service beside it.

use std::sync::Arc;
use std::time::Duration;

use butterfly_core::account::{NewAccount, UserId};
use butterfly_core::lists::ListOp;
use butterfly_core::oim::OimNew;
use butterfly_core::store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::convert::{
    edit_response, email, oim_get_response, oim_ids, oim_store_response, required,
    store_error_to_status,
};
use crate::pb::addressbook::v1 as pb;
use crate::pb::addressbook::v1::address_book_server::{AddressBook, AddressBookServer};

/// How long in-flight calls (and open health watches) may take to finish after shutdown
/// starts; then `serve` returns anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// The generated `AddressBook` service over any [`Store`].
///
/// Handlers only convert: decode the request (an invalid one is `INVALID_ARGUMENT`), call
/// the store, encode the answer. `StoreError::DuplicateAccount` is `ALREADY_EXISTS`, any
/// other store failure `INTERNAL`; a refused list edit is an OK answer carrying the
/// `ListError`.
#[derive(Clone)]
pub struct AddressBookService {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for AddressBookService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressBookService").finish_non_exhaustive()
    }
}

impl AddressBookService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        AddressBookService { store }
    }

    /// The tower service to add to a `tonic` server.
    pub fn into_server(self) -> AddressBookServer<Self> {
        AddressBookServer::new(self)
    }
}

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(message: T) -> Answer<T> {
    Ok(Response::new(message))
}

#[tonic::async_trait]
impl AddressBook for AddressBookService {
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Answer<pb::CreateAccountResponse> {
        let new = NewAccount::try_from(required(request.into_inner().account, "account")?)?;
        let account = self
            .store
            .create_account(new)
            .await
            .map_err(store_error_to_status)?;
        ok(pb::CreateAccountResponse {
            account: Some(account.into()),
        })
    }

    async fn account_by_email(
        &self,
        request: Request<pb::AccountByEmailRequest>,
    ) -> Answer<pb::AccountByEmailResponse> {
        let email = email(&request.into_inner().email)?;
        let account = self
            .store
            .account_by_email(&email)
            .await
            .map_err(store_error_to_status)?;
        ok(pb::AccountByEmailResponse {
            account: account.map(Into::into),
        })
    }

    async fn account_by_id(
        &self,
        request: Request<pb::AccountByIdRequest>,
    ) -> Answer<pb::AccountByIdResponse> {
        let id = UserId(request.into_inner().id);
        let account = self
            .store
            .account_by_id(id)
            .await
            .map_err(store_error_to_status)?;
        ok(pb::AccountByIdResponse {
            account: account.map(Into::into),
        })
    }

    async fn accounts(&self, _: Request<pb::AccountsRequest>) -> Answer<pb::AccountsResponse> {
        let accounts = self.store.accounts().await.map_err(store_error_to_status)?;
        ok(pb::AccountsResponse {
            accounts: accounts.into_iter().map(Into::into).collect(),
        })
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Answer<pb::SetPasswordResponse> {
        let r = request.into_inner();
        let email = email(&r.email)?;
        let found = self
            .store
            .set_password(&email, r.password_hash, r.legacy_md5.map(Into::into))
            .await
            .map_err(store_error_to_status)?;
        ok(pb::SetPasswordResponse { found })
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Answer<pb::DeleteAccountResponse> {
        let email = email(&request.into_inner().email)?;
        let found = self
            .store
            .delete_account(&email)
            .await
            .map_err(store_error_to_status)?;
        ok(pb::DeleteAccountResponse { found })
    }

    async fn roster(&self, request: Request<pb::RosterRequest>) -> Answer<pb::RosterResponse> {
        let owner = UserId(request.into_inner().owner);
        let roster = self
            .store
            .roster(owner)
            .await
            .map_err(store_error_to_status)?;
        ok(pb::RosterResponse {
            roster: Some(roster.into()),
        })
    }

    async fn peer_view(
        &self,
        request: Request<pb::PeerViewRequest>,
    ) -> Answer<pb::PeerViewResponse> {
        let r = request.into_inner();
        let view = self
            .store
            .peer_view(UserId(r.owner), UserId(r.viewer))
            .await
            .map_err(store_error_to_status)?;
        ok(pb::PeerViewResponse {
            peer_view: Some(view.into()),
        })
    }

    async fn edit(&self, request: Request<pb::EditRequest>) -> Answer<pb::EditResponse> {
        let r = request.into_inner();
        let op = ListOp::try_from(required(r.op, "op")?)?;
        let result = self
            .store
            .edit(UserId(r.owner), op)
            .await
            .map_err(store_error_to_status)?;
        ok(edit_response(result))
    }

    async fn tombstones(
        &self,
        request: Request<pb::TombstonesRequest>,
    ) -> Answer<pb::TombstonesResponse> {
        let r = request.into_inner();
        let tombstones = self
            .store
            .tombstones(UserId(r.owner), r.since)
            .await
            .map_err(store_error_to_status)?;
        ok(pb::TombstonesResponse {
            tombstones: tombstones.into_iter().map(Into::into).collect(),
        })
    }
    async fn oim_store(
        &self,
        request: Request<pb::OimStoreRequest>,
    ) -> Answer<pb::OimStoreResponse> {
        let new = OimNew::try_from(required(request.into_inner().oim, "oim")?)?;
        let result = self
            .store
            .oim_store(new)
            .await
            .map_err(store_error_to_status)?;
        ok(oim_store_response(result))
    }

    async fn oims(&self, request: Request<pb::OimsRequest>) -> Answer<pb::OimsResponse> {
        let recipient = UserId(request.into_inner().recipient);
        let oims = self
            .store
            .oims(recipient)
            .await
            .map_err(store_error_to_status)?;
        ok(pb::OimsResponse {
            oims: oims.into_iter().map(Into::into).collect(),
        })
    }

    async fn oim_get(&self, request: Request<pb::OimGetRequest>) -> Answer<pb::OimGetResponse> {
        let r = request.into_inner();
        let id = oim_ids(std::slice::from_ref(&r.id))?[0];
        let oim = self
            .store
            .oim_get(UserId(r.recipient), id, r.mark_read)
            .await
            .map_err(store_error_to_status)?;
        ok(oim_get_response(oim))
    }

    async fn oim_delete(
        &self,
        request: Request<pb::OimDeleteRequest>,
    ) -> Answer<pb::OimDeleteResponse> {
        let r = request.into_inner();
        let ids = oim_ids(&r.ids)?;
        let deleted = self
            .store
            .oim_delete(UserId(r.recipient), &ids)
            .await
            .map_err(store_error_to_status)?;
        ok(pb::OimDeleteResponse { deleted })
    }

    async fn profile_get(
        &self,
        request: Request<pb::ProfileGetRequest>,
    ) -> Answer<pb::ProfileGetResponse> {
        let owner = UserId(request.into_inner().owner);
        let profile = self
            .store
            .profile(owner)
            .await
            .map_err(store_error_to_status)?;
        ok(crate::convert::profile_to_pb(profile))
    }

    async fn profile_update(
        &self,
        request: Request<pb::ProfileUpdateRequest>,
    ) -> Answer<pb::ProfileUpdateResponse> {
        let r = request.into_inner();
        let edit = crate::convert::profile_edit_from_pb(r.edit)
            .ok_or_else(|| tonic::Status::invalid_argument("no profile change"))?;
        // Checked again here: the address book stores nothing a caller did not validate.
        let edit = edit
            .validated()
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        self.store
            .update_profile(UserId(r.owner), edit)
            .await
            .map_err(store_error_to_status)?;
        ok(pb::ProfileUpdateResponse {})
    }
}

/// Serve the address book (and `grpc.health.v1.Health`) on `listener` until `shutdown`.
///
/// Health: the overall status (`""`) and `butterfly.addressbook.v1.AddressBook` are
/// SERVING while the server runs and turn NOT_SERVING when shutdown starts. Shutdown is
/// graceful: the listener closes, in-flight calls finish (for at most 10 s), then this
/// returns. Each request runs in a `grpc.server` span whose parent is the caller's trace
/// context, when the request carries one.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    type Served = AddressBookServer<AddressBookService>;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<Served>().await;
    health.set_service_status("", ServingStatus::Serving).await;

    let stopping = {
        let (health, shutdown) = (health.clone(), shutdown.clone());
        async move {
            shutdown.cancelled().await;
            health.set_not_serving::<Served>().await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
        }
    };

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder()
        .trace_fn(crate::trace::server_span)
        .add_service(health_service)
        .add_service(AddressBookService::new(store).into_server())
        .serve_with_incoming_shutdown(incoming, stopping);
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => result?,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_GRACE).await;
        } => {
            tracing::warn!(grace = ?DRAIN_GRACE, "address book: calls still open after the drain grace; stopping anyway");
        }
    }
    Ok(())
}
