//! [`RemoteStore`]: the `Store` port implemented by calling the address book over gRPC.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use butterfly_core::account::{Account, Email, LegacyMd5, NewAccount, UserId};
use butterfly_core::lists::{EditOutcome, ListError, ListOp, PeerView, Roster, Tombstone};
use butterfly_core::metrics;
use butterfly_core::oim::{Oim, OimMeta, OimNew, OimRefused};
use butterfly_core::profile::{Profile, ProfileEdit};
use butterfly_core::store::{Store, StoreError};
use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::convert::{
    InvalidMessage, edit_result, oim_get_result, oim_store_result, required, status_to_store_error,
};
use crate::pb::addressbook::v1 as pb;
use crate::pb::addressbook::v1::address_book_client::AddressBookClient;
use crate::trace::InjectTraceContext;

/// Largest answer accepted (`Accounts` lists every account).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// How a [`RemoteStore`] talks to the address book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteOptions {
    /// Deadline of each call, connecting included. Sent to the server as `grpc-timeout`
    /// and enforced here. Default 3 s.
    pub timeout: Duration,
    /// Deadline for opening a connection. Default 2 s.
    pub connect_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

type Client = AddressBookClient<InterceptedService<Channel, InjectTraceContext>>;

/// A [`Store`] backed by the address-book role.
///
/// Every call has a deadline ([`RemoteOptions::timeout`]): an address book that is down,
/// unreachable or stuck makes the call fail with `StoreError::Backend` within it, never
/// hang. `ALREADY_EXISTS` comes back as `StoreError::DuplicateAccount`. Each call's
/// latency is recorded in `butterfly_grpc_client_seconds{method=…}`, and the current
/// span's trace context travels with the call.
///
/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RemoteStore {
    client: Client,
    options: RemoteOptions,
}

impl std::fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RemoteStore {
    /// A store for the address book at `uri` (`http://host:port`; a bare `host:port`
    /// means `http://host:port`). Nothing is connected yet: the connection opens on the
    /// first call and reopens after it breaks, so this succeeds while the address book is
    /// still starting. Fails on a malformed URI or outside a Tokio runtime.
    pub fn connect_lazy(uri: &str, options: RemoteOptions) -> anyhow::Result<Self> {
        tokio::runtime::Handle::try_current()
            .context("RemoteStore::connect_lazy needs a Tokio runtime")?;
        let uri = if uri.contains("://") {
            uri.to_owned()
        } else {
            format!("http://{uri}")
        };
        let endpoint = Endpoint::from_shared(uri.clone())
            .with_context(|| format!("invalid address book URI {uri:?}"))?
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            // Notice a dead connection (peer gone without a FIN) between calls.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let client =
            AddressBookClient::with_interceptor(endpoint.connect_lazy(), InjectTraceContext)
                .max_decoding_message_size(MAX_ANSWER_BYTES);
        Ok(RemoteStore { client, options })
    }

    /// One call: deadline, span, metric, status mapping.
    async fn call<Q, A, F, Fut>(
        &self,
        method: &'static str,
        message: Q,
        f: F,
    ) -> Result<A, StoreError>
    where
        F: FnOnce(Client, Request<Q>) -> Fut,
        Fut: Future<Output = Result<Response<A>, Status>>,
    {
        let started = Instant::now();
        let timeout = self.options.timeout;
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = method,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.method = method,
        );
        let answer = tokio::time::timeout(timeout, f(self.client.clone(), request))
            .instrument(span)
            .await;
        metrics::global()
            .grpc_client_seconds
            .observe(method, started.elapsed());
        match answer {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status_to_store_error(method, &status)),
            Err(_) => Err(StoreError::Backend(format!(
                "address book {method}: no answer within {timeout:?}"
            ))),
        }
    }
}

/// An answer that does not decode: the server speaks another contract.
fn bad_answer(method: &str) -> impl FnOnce(InvalidMessage) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("address book {method}: bad answer: {e}"))
}

fn account(method: &str, a: Option<pb::Account>) -> Result<Option<Account>, StoreError> {
    a.map(Account::try_from)
        .transpose()
        .map_err(bad_answer(method))
}

#[async_trait]
impl Store for RemoteStore {
    async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError> {
        const M: &str = "CreateAccount";
        let request = pb::CreateAccountRequest {
            account: Some(new.into()),
        };
        let answer = self
            .call(
                M,
                request,
                |mut c, r| async move { c.create_account(r).await },
            )
            .await?;
        let a = required(answer.account, "account").map_err(bad_answer(M))?;
        Account::try_from(a).map_err(bad_answer(M))
    }

    async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
        const M: &str = "AccountByEmail";
        let request = pb::AccountByEmailRequest {
            email: email.to_string(),
        };
        let answer = self
            .call(
                M,
                request,
                |mut c, r| async move { c.account_by_email(r).await },
            )
            .await?;
        account(M, answer.account)
    }

    async fn account_by_id(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        const M: &str = "AccountById";
        let request = pb::AccountByIdRequest { id: id.0 };
        let answer = self
            .call(
                M,
                request,
                |mut c, r| async move { c.account_by_id(r).await },
            )
            .await?;
        account(M, answer.account)
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        const M: &str = "Accounts";
        let answer = self
            .call(M, pb::AccountsRequest {}, |mut c, r| async move {
                c.accounts(r).await
            })
            .await?;
        answer
            .accounts
            .into_iter()
            .map(Account::try_from)
            .collect::<Result<_, _>>()
            .map_err(bad_answer(M))
    }

    async fn set_password(
        &self,
        email: &Email,
        password_hash: String,
        legacy_md5: Option<LegacyMd5>,
    ) -> Result<bool, StoreError> {
        const M: &str = "SetPassword";
        let request = pb::SetPasswordRequest {
            email: email.to_string(),
            password_hash,
            legacy_md5: legacy_md5.map(Into::into),
        };
        let answer = self
            .call(
                M,
                request,
                |mut c, r| async move { c.set_password(r).await },
            )
            .await?;
        Ok(answer.found)
    }

    async fn delete_account(&self, email: &Email) -> Result<bool, StoreError> {
        const M: &str = "DeleteAccount";
        let request = pb::DeleteAccountRequest {
            email: email.to_string(),
        };
        let answer = self
            .call(
                M,
                request,
                |mut c, r| async move { c.delete_account(r).await },
            )
            .await?;
        Ok(answer.found)
    }

    async fn roster(&self, owner: UserId) -> Result<Roster, StoreError> {
        const M: &str = "Roster";
        let request = pb::RosterRequest { owner: owner.0 };
        let answer = self
            .call(M, request, |mut c, r| async move { c.roster(r).await })
            .await?;
        let roster = required(answer.roster, "roster").map_err(bad_answer(M))?;
        Roster::try_from(roster).map_err(bad_answer(M))
    }

    async fn peer_view(&self, owner: UserId, viewer: UserId) -> Result<PeerView, StoreError> {
        const M: &str = "PeerView";
        let request = pb::PeerViewRequest {
            owner: owner.0,
            viewer: viewer.0,
        };
        let answer = self
            .call(M, request, |mut c, r| async move { c.peer_view(r).await })
            .await?;
        let view = required(answer.peer_view, "peer view").map_err(bad_answer(M))?;
        PeerView::try_from(view).map_err(bad_answer(M))
    }

    async fn edit(
        &self,
        owner: UserId,
        op: ListOp,
    ) -> Result<Result<EditOutcome, ListError>, StoreError> {
        const M: &str = "Edit";
        let request = pb::EditRequest {
            owner: owner.0,
            op: Some(op.into()),
        };
        let answer = self
            .call(M, request, |mut c, r| async move { c.edit(r).await })
            .await?;
        edit_result(answer).map_err(bad_answer(M))
    }

    async fn tombstones(&self, owner: UserId, since: i64) -> Result<Vec<Tombstone>, StoreError> {
        const M: &str = "Tombstones";
        let request = pb::TombstonesRequest {
            owner: owner.0,
            since,
        };
        let answer = self
            .call(M, request, |mut c, r| async move { c.tombstones(r).await })
            .await?;
        answer
            .tombstones
            .into_iter()
            .map(Tombstone::try_from)
            .collect::<Result<_, _>>()
            .map_err(bad_answer(M))
    }
    async fn oim_store(&self, new: OimNew) -> Result<Result<OimMeta, OimRefused>, StoreError> {
        const M: &str = "OimStore";
        let request = pb::OimStoreRequest {
            oim: Some(new.into()),
        };
        let answer = self
            .call(M, request, |mut c, r| async move { c.oim_store(r).await })
            .await?;
        oim_store_result(answer).map_err(bad_answer(M))
    }

    async fn oims(&self, recipient: UserId) -> Result<Vec<OimMeta>, StoreError> {
        const M: &str = "Oims";
        let request = pb::OimsRequest {
            recipient: recipient.0,
        };
        let answer = self
            .call(M, request, |mut c, r| async move { c.oims(r).await })
            .await?;
        answer
            .oims
            .into_iter()
            .map(OimMeta::try_from)
            .collect::<Result<_, _>>()
            .map_err(bad_answer(M))
    }

    async fn oim_get(
        &self,
        recipient: UserId,
        id: Uuid,
        mark_read: bool,
    ) -> Result<Option<Oim>, StoreError> {
        const M: &str = "OimGet";
        let request = pb::OimGetRequest {
            recipient: recipient.0,
            id: id.to_string(),
            mark_read,
        };
        let answer = self
            .call(M, request, |mut c, r| async move { c.oim_get(r).await })
            .await?;
        oim_get_result(answer).map_err(bad_answer(M))
    }

    async fn oim_delete(&self, recipient: UserId, ids: &[Uuid]) -> Result<u64, StoreError> {
        const M: &str = "OimDelete";
        let request = pb::OimDeleteRequest {
            recipient: recipient.0,
            ids: ids.iter().map(Uuid::to_string).collect(),
        };
        let answer = self
            .call(M, request, |mut c, r| async move { c.oim_delete(r).await })
            .await?;
        Ok(answer.deleted)
    }

    async fn profile(&self, owner: UserId) -> Result<Profile, StoreError> {
        const M: &str = "ProfileGet";
        let request = pb::ProfileGetRequest { owner: owner.0 };
        let answer = self
            .call(M, request, |mut c, r| async move { c.profile_get(r).await })
            .await?;
        Ok(crate::convert::profile_from_pb(answer))
    }

    async fn update_profile(&self, owner: UserId, edit: ProfileEdit) -> Result<(), StoreError> {
        const M: &str = "ProfileUpdate";
        let request = crate::convert::profile_update_to_pb(owner, edit);
        self.call(
            M,
            request,
            |mut c, r| async move { c.profile_update(r).await },
        )
        .await?;
        Ok(())
    }
}
