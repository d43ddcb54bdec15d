//! The gRPC services (`dialtone.v1`), over the same service functions as the HTTP API: a
//! request message becomes the model's request type (`dialtone_proto::convert`, field by
//! field, with the model's rules and messages), goes through the same service function, and
//! the model's view becomes the response message. Errors keep their meaning: a 400 is
//! `INVALID_ARGUMENT`, 401 `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, 404 `NOT_FOUND`, 409
//! `FAILED_PRECONDITION` (`ALREADY_EXISTS` for a taken name), 413 `INVALID_ARGUMENT`, 429
//! `RESOURCE_EXHAUSTED`, 503 `UNAVAILABLE`; the message is the HTTP error's message, and the
//! metadata `dialtone-error-code` / `dialtone-error-field` carry its code and field.
//!
//! [`services`] builds the router with the six services, the standard health service and
//! server reflection; every call must carry `authorization: Bearer <key>`.

use std::pin::Pin;

use dialtone_model::{
    AgentFields, CallView, DispatchCall, FieldError, KeyFields, OrganizationFields,
    OrganizationPatch, ProviderFields, TrunkFields,
};
use dialtone_storage::KeyOwner;
use serde_json::{Map, Value};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::calls::ListQuery;
use crate::proto::{
    self, agent_service_server::AgentService, call_service_server::CallService,
    number_service_server::NumberService, organization_service_server::OrganizationService,
    provider_service_server::ProviderService, trunk_service_server::TrunkService,
};
use crate::{ApiError, ApiState, agents, calls, numbers, organizations, providers, trunks};

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match (e.status, e.code) {
            (400 | 413, _) => tonic::Code::InvalidArgument,
            (401, _) => tonic::Code::Unauthenticated,
            (403, _) => tonic::Code::PermissionDenied,
            (404, _) => tonic::Code::NotFound,
            (409, "conflict") => tonic::Code::AlreadyExists,
            (409, _) => tonic::Code::FailedPrecondition,
            (429, _) => tonic::Code::ResourceExhausted,
            (503, _) => tonic::Code::Unavailable,
            _ => tonic::Code::Internal,
        };
        let mut status = Status::new(code, e.message);
        if let Ok(v) = e.code.parse() {
            status.metadata_mut().insert("dialtone-error-code", v);
        }
        if let Some(field) = e.field.and_then(|f| f.parse().ok()) {
            status.metadata_mut().insert("dialtone-error-field", field);
        }
        status
    }
}

/// The fields a message sets, as a merge patch (what is absent stays as it is).
fn merge_patch<T: serde::Serialize>(fields: &T) -> Map<String, Value> {
    match serde_json::to_value(fields) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Who the request's key speaks for.
async fn authorized<T>(state: &ApiState, request: &Request<T>) -> Result<KeyOwner, Status> {
    let given = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    crate::auth::authenticate(state, given)
        .await
        .map_err(Status::from)
}

/// The gRPC side of the API.
#[derive(Debug, Clone)]
pub struct Grpc {
    state: ApiState,
}

#[tonic::async_trait]
impl TrunkService for Grpc {
    async fn create_trunk(
        &self,
        request: Request<proto::CreateTrunkRequest>,
    ) -> Result<Response<proto::CreateTrunkResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let fields = TrunkFields::try_from(request.into_inner().trunk.unwrap_or_default())
            .map_err(ApiError::from)?;
        let trunk = trunks::create(&self.state, &caller, fields).await?;
        Ok(Response::new(proto::CreateTrunkResponse {
            trunk: Some((&trunk).into()),
        }))
    }

    async fn get_trunk(
        &self,
        request: Request<proto::GetTrunkRequest>,
    ) -> Result<Response<proto::GetTrunkResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let trunk = trunks::get(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::GetTrunkResponse {
            trunk: Some((&trunk).into()),
        }))
    }

    async fn list_trunks(
        &self,
        request: Request<proto::ListTrunksRequest>,
    ) -> Result<Response<proto::ListTrunksResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let page = trunks::list(&self.state, &caller).await?;
        Ok(Response::new(proto::ListTrunksResponse {
            trunks: page.data.iter().map(Into::into).collect(),
        }))
    }

    async fn update_trunk(
        &self,
        request: Request<proto::UpdateTrunkRequest>,
    ) -> Result<Response<proto::UpdateTrunkResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let fields = TrunkFields::try_from(r.trunk.unwrap_or_default()).map_err(ApiError::from)?;
        let trunk = trunks::update(&self.state, &caller, &r.id, merge_patch(&fields)).await?;
        Ok(Response::new(proto::UpdateTrunkResponse {
            trunk: Some((&trunk).into()),
        }))
    }

    async fn delete_trunk(
        &self,
        request: Request<proto::DeleteTrunkRequest>,
    ) -> Result<Response<proto::DeleteTrunkResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        trunks::delete(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::DeleteTrunkResponse {}))
    }
}

#[tonic::async_trait]
impl NumberService for Grpc {
    async fn create_number(
        &self,
        request: Request<proto::CreateNumberRequest>,
    ) -> Result<Response<proto::CreateNumberResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let fields = dialtone_model::NumberFields {
            e164: r.e164,
            trunk_id: uuid::Uuid::parse_str(&r.trunk_id).map_err(|_| {
                ApiError::from(FieldError::invalid("trunk_id", "`trunk_id` must be a UUID"))
            })?,
        };
        let number = numbers::create(&self.state, &caller, fields).await?;
        Ok(Response::new(proto::CreateNumberResponse {
            number: Some((&number).into()),
        }))
    }

    async fn get_number(
        &self,
        request: Request<proto::GetNumberRequest>,
    ) -> Result<Response<proto::GetNumberResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let number = numbers::get(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::GetNumberResponse {
            number: Some((&number).into()),
        }))
    }

    async fn list_numbers(
        &self,
        request: Request<proto::ListNumbersRequest>,
    ) -> Result<Response<proto::ListNumbersResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let page = numbers::list(&self.state, &caller).await?;
        Ok(Response::new(proto::ListNumbersResponse {
            numbers: page.data.iter().map(Into::into).collect(),
        }))
    }

    async fn delete_number(
        &self,
        request: Request<proto::DeleteNumberRequest>,
    ) -> Result<Response<proto::DeleteNumberResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        numbers::delete(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::DeleteNumberResponse {}))
    }
}

#[tonic::async_trait]
impl AgentService for Grpc {
    async fn create_agent(
        &self,
        request: Request<proto::CreateAgentRequest>,
    ) -> Result<Response<proto::CreateAgentResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let fields = AgentFields::try_from(request.into_inner().agent.unwrap_or_default())
            .map_err(ApiError::from)?;
        let agent = agents::create(&self.state, &caller, fields).await?;
        Ok(Response::new(proto::CreateAgentResponse {
            agent: Some((&agent).into()),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<proto::GetAgentRequest>,
    ) -> Result<Response<proto::GetAgentResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let agent = agents::get(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::GetAgentResponse {
            agent: Some((&agent).into()),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<proto::ListAgentsRequest>,
    ) -> Result<Response<proto::ListAgentsResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let page = agents::list(&self.state, &caller).await?;
        Ok(Response::new(proto::ListAgentsResponse {
            agents: page.data.iter().map(Into::into).collect(),
        }))
    }

    async fn update_agent(
        &self,
        request: Request<proto::UpdateAgentRequest>,
    ) -> Result<Response<proto::UpdateAgentResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let fields = AgentFields::try_from(r.agent.unwrap_or_default()).map_err(ApiError::from)?;
        let agent = agents::update(&self.state, &caller, &r.id, merge_patch(&fields)).await?;
        Ok(Response::new(proto::UpdateAgentResponse {
            agent: Some((&agent).into()),
        }))
    }

    async fn delete_agent(
        &self,
        request: Request<proto::DeleteAgentRequest>,
    ) -> Result<Response<proto::DeleteAgentResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        agents::delete(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::DeleteAgentResponse {}))
    }
}

#[tonic::async_trait]
impl ProviderService for Grpc {
    async fn create_provider(
        &self,
        request: Request<proto::CreateProviderRequest>,
    ) -> Result<Response<proto::CreateProviderResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let fields = ProviderFields::try_from(request.into_inner().provider.unwrap_or_default())
            .map_err(ApiError::from)?;
        let provider = providers::create(&self.state, &caller, fields).await?;
        Ok(Response::new(proto::CreateProviderResponse {
            provider: Some((&provider).into()),
        }))
    }

    async fn get_provider(
        &self,
        request: Request<proto::GetProviderRequest>,
    ) -> Result<Response<proto::GetProviderResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let provider = providers::get(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::GetProviderResponse {
            provider: Some((&provider).into()),
        }))
    }

    async fn list_providers(
        &self,
        request: Request<proto::ListProvidersRequest>,
    ) -> Result<Response<proto::ListProvidersResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let page = providers::list(&self.state, &caller).await?;
        Ok(Response::new(proto::ListProvidersResponse {
            providers: page.data.iter().map(Into::into).collect(),
        }))
    }

    async fn update_provider(
        &self,
        request: Request<proto::UpdateProviderRequest>,
    ) -> Result<Response<proto::UpdateProviderResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let fields =
            ProviderFields::try_from(r.provider.unwrap_or_default()).map_err(ApiError::from)?;
        let provider = providers::update(&self.state, &caller, &r.id, merge_patch(&fields)).await?;
        Ok(Response::new(proto::UpdateProviderResponse {
            provider: Some((&provider).into()),
        }))
    }

    async fn delete_provider(
        &self,
        request: Request<proto::DeleteProviderRequest>,
    ) -> Result<Response<proto::DeleteProviderResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        providers::delete(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::DeleteProviderResponse {}))
    }
}

#[tonic::async_trait]
impl OrganizationService for Grpc {
    async fn create_organization(
        &self,
        request: Request<proto::CreateOrganizationRequest>,
    ) -> Result<Response<proto::CreateOrganizationResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let fields = request.into_inner().organization.unwrap_or_default();
        let org =
            organizations::create(&self.state, &caller, OrganizationFields::from(fields)).await?;
        Ok(Response::new(proto::CreateOrganizationResponse {
            organization: Some((&org).into()),
        }))
    }

    async fn get_organization(
        &self,
        request: Request<proto::GetOrganizationRequest>,
    ) -> Result<Response<proto::GetOrganizationResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let org = organizations::get(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::GetOrganizationResponse {
            organization: Some((&org).into()),
        }))
    }

    async fn list_organizations(
        &self,
        request: Request<proto::ListOrganizationsRequest>,
    ) -> Result<Response<proto::ListOrganizationsResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let page = organizations::list(&self.state, &caller).await?;
        Ok(Response::new(proto::ListOrganizationsResponse {
            organizations: page.data.iter().map(Into::into).collect(),
        }))
    }

    async fn update_organization(
        &self,
        request: Request<proto::UpdateOrganizationRequest>,
    ) -> Result<Response<proto::UpdateOrganizationResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let org =
            organizations::update(&self.state, &caller, &r.id, OrganizationPatch::from(&r)).await?;
        Ok(Response::new(proto::UpdateOrganizationResponse {
            organization: Some((&org).into()),
        }))
    }

    async fn delete_organization(
        &self,
        request: Request<proto::DeleteOrganizationRequest>,
    ) -> Result<Response<proto::DeleteOrganizationResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        organizations::delete(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::DeleteOrganizationResponse {}))
    }

    async fn issue_key(
        &self,
        request: Request<proto::IssueKeyRequest>,
    ) -> Result<Response<proto::IssueKeyResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let fields = KeyFields::try_from(&r).map_err(ApiError::from)?;
        let key = organizations::issue(&self.state, &caller, &r.organization_id, fields).await?;
        Ok(Response::new(proto::IssueKeyResponse {
            key: Some((&key).into()),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<proto::ListKeysRequest>,
    ) -> Result<Response<proto::ListKeysResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let org = request.into_inner().organization_id;
        let page = organizations::keys(&self.state, &caller, &org).await?;
        Ok(Response::new(proto::ListKeysResponse {
            keys: page.data.iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_key(
        &self,
        request: Request<proto::RevokeKeyRequest>,
    ) -> Result<Response<proto::RevokeKeyResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        organizations::revoke(&self.state, &caller, &r.organization_id, &r.id).await?;
        Ok(Response::new(proto::RevokeKeyResponse {}))
    }
}

/// The stream WatchCall answers with.
type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchCallResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CallService for Grpc {
    async fn dispatch_call(
        &self,
        request: Request<proto::DispatchCallRequest>,
    ) -> Result<Response<proto::DispatchCallResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let mut r = request.into_inner();
        let key = r.idempotency_key.take();
        let call = DispatchCall::try_from(r).map_err(ApiError::from)?;
        let (call, replayed) = calls::dispatch(&self.state, &caller, call, key.as_deref()).await?;
        Ok(Response::new(proto::DispatchCallResponse {
            call: Some((&call).into()),
            replayed,
        }))
    }

    async fn get_call(
        &self,
        request: Request<proto::GetCallRequest>,
    ) -> Result<Response<proto::GetCallResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let call = calls::get(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::GetCallResponse {
            call: Some((&call).into()),
        }))
    }

    async fn list_calls(
        &self,
        request: Request<proto::ListCallsRequest>,
    ) -> Result<Response<proto::ListCallsResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let r = request.into_inner();
        let status = proto::CallStatus::try_from(r.status)
            .map_err(|_| Status::invalid_argument("`status` is not a CallStatus"))?;
        let query = ListQuery {
            agent_id: r.agent_id,
            status: status.to_model().map(|s| s.as_str().to_owned()),
            to: r.to,
            created_after: r.created_after,
            created_before: r.created_before,
            limit: r.limit,
            cursor: r.cursor,
        };
        let page = calls::list(&self.state, &caller, query).await?;
        Ok(Response::new(proto::ListCallsResponse {
            calls: page.data.iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn hangup_call(
        &self,
        request: Request<proto::HangupCallRequest>,
    ) -> Result<Response<proto::HangupCallResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let call = calls::hang_up(&self.state, &caller, &request.into_inner().id).await?;
        Ok(Response::new(proto::HangupCallResponse {
            call: Some((&call).into()),
        }))
    }

    async fn transfer_call(
        &self,
        request: Request<proto::TransferCallRequest>,
    ) -> Result<Response<proto::TransferCallResponse>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let request = request.into_inner();
        let id = request.id.clone();
        let transfer = dialtone_model::TransferCall::try_from(request).map_err(ApiError::from);
        let call = calls::transfer(&self.state, &caller, &id, transfer).await?;
        Ok(Response::new(proto::TransferCallResponse {
            call: Some((&call).into()),
        }))
    }

    type WatchCallStream = WatchStream;

    async fn watch_call(
        &self,
        request: Request<proto::WatchCallRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = authorized(&self.state, &request).await?;
        let id = request.into_inner().id;
        // Subscribe before the first read, so no change between them is missed.
        let mut changes = self.state.engine.changes();
        let first = calls::get(&self.state, &caller, &id).await?;
        let state = self.state.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = first;
            if tx.send(Ok(watched(&last))).await.is_err() {
                return;
            }
            while !last.status.is_final() {
                match changes.recv().await {
                    Ok(changed) if changed != last.id => continue,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                let now = match calls::get(&state, &caller, &id).await {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                if now != last {
                    last = now;
                    if tx.send(Ok(watched(&last))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }
}

fn watched(call: &CallView) -> proto::WatchCallResponse {
    proto::WatchCallResponse {
        call: Some(call.into()),
    }
}

/// A stream fed by a task through a bounded channel.
fn async_stream<F, Fut>(produce: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<proto::WatchCallResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Between the gRPC server's HTTP/2 pings, and for each ping's answer.
const GRPC_PING: std::time::Duration = std::time::Duration::from_secs(20);

/// The gRPC router: the six services, health (`grpc.health.v1`, every service serving) and
/// reflection.
pub async fn services(
    state: ApiState,
) -> Result<tonic::transport::server::Router, tonic_reflection::server::Error> {
    let grpc = Grpc { state };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    for name in [
        "dialtone.v1.TrunkService",
        "dialtone.v1.NumberService",
        "dialtone.v1.AgentService",
        "dialtone.v1.ProviderService",
        "dialtone.v1.OrganizationService",
        "dialtone.v1.CallService",
        "",
    ] {
        health_reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(tonic::transport::Server::builder()
        // A connection that stops answering pings (a peer gone without a FIN) is closed.
        .http2_keepalive_interval(Some(GRPC_PING))
        .http2_keepalive_timeout(Some(GRPC_PING))
        .add_service(health)
        .add_service(reflection)
        .add_service(proto::trunk_service_server::TrunkServiceServer::new(
            grpc.clone(),
        ))
        .add_service(proto::number_service_server::NumberServiceServer::new(
            grpc.clone(),
        ))
        .add_service(proto::agent_service_server::AgentServiceServer::new(
            grpc.clone(),
        ))
        .add_service(proto::provider_service_server::ProviderServiceServer::new(
            grpc.clone(),
        ))
        .add_service(
            proto::organization_service_server::OrganizationServiceServer::new(grpc.clone()),
        )
        .add_service(proto::call_service_server::CallServiceServer::new(grpc)))
}
