//! The event gateway over gRPC (`proto/merchant_monitor/gateway/v1/gateway.proto`):
//! `EventGateway` publishes (one batch per call, or batches streamed on one call) and
//! `EventTypes` administers the registry, with the same rules and answers as the HTTP API,
//! since both call `mm-gateway`. The server also answers the standard gRPC health service and
//! reflection (so `grpcurl` and generated clients can discover it), and checks bearer tokens
//! in the `authorization` metadata when the server has tokens.

use std::sync::Arc;
use std::time::Instant;

use mm_gateway::publish::{self, PublishOptions};
use mm_gateway::{Gateway, LogError, PublishingStatus, RegistryError, Step};
use mm_telemetry::Metrics;
use mm_trace::context::TraceHeaders;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

mod trace;

/// The generated messages and services.
pub mod proto {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    tonic::include_proto!("merchant_monitor.gateway.v1");

    /// The encoded descriptors reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("gateway_descriptor");
}

use proto::event_gateway_server::{EventGateway, EventGatewayServer};
use proto::event_types_server::{EventTypes, EventTypesServer};

/// Largest message the server takes (a batch of events).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// What the services need.
#[derive(Clone)]
pub struct GrpcState {
    pub gateway: Arc<Gateway>,
    pub metrics: Arc<Metrics>,
    /// Bearer tokens accepted; empty: no check.
    pub tokens: Arc<Vec<String>>,
}

/// Serves gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: GrpcState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|error| {
            tracing::error!(%error, "gRPC reflection could not be built");
            error
        });
    let authorize = {
        let tokens = state.tokens.clone();
        move |request: Request<()>| authorize(&tokens, request)
    };
    let publishing =
        EventGatewayServer::with_interceptor(Service(state.clone()), authorize.clone());
    let registry = EventTypesServer::with_interceptor(Service(state), authorize);
    health.set_serving::<EventGatewayServer<Service>>().await;
    health.set_serving::<EventTypesServer<Service>>().await;
    let mut router = tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(trace::Traced))
        .add_service(health_service)
        .add_service(publishing)
        .add_service(registry);
    if let Ok(reflection) = reflection {
        router = router.add_service(reflection);
    }
    router
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// The W3C trace context a call arrived with (`traceparent`/`tracestate` metadata).
fn caller_trace(metadata: &tonic::metadata::MetadataMap) -> Option<TraceHeaders> {
    TraceHeaders::read(|name| metadata.get(name).and_then(|value| value.to_str().ok()))
}

fn authorize(tokens: &[String], request: Request<()>) -> Result<Request<()>, Status> {
    if let Some(level) = request.metadata().get(trace::LOG_LEVEL)
        && let Err(reason) = mm_trace::level::parse(level.to_str().unwrap_or_default())
    {
        return Err(Status::invalid_argument(format!(
            "log_level metadata: {reason}"
        )));
    }
    if tokens.is_empty() {
        return Ok(request);
    }
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(token) if tokens.iter().any(|known| known == token) => Ok(request),
        _ => Err(Status::unauthenticated(
            "send `authorization: Bearer <token>` metadata with a token the server accepts",
        )),
    }
}

/// Both services over the gateway.
#[derive(Clone)]
pub struct Service(GrpcState);

fn registry_status(error: RegistryError) -> Status {
    let message = error.to_string();
    match error {
        RegistryError::UnknownType(_) | RegistryError::UnknownVersion { .. } => {
            Status::not_found(message)
        }
        RegistryError::InvalidName(_)
        | RegistryError::InvalidDefinition { .. }
        | RegistryError::InvalidSchema(_) => Status::invalid_argument(message),
        RegistryError::Incompatible { violations, .. } => {
            let listed = serde_json::to_string(&violations).unwrap_or_default();
            Status::failed_precondition(format!("{message}: {listed}"))
        }
        RegistryError::Fixed { .. } | RegistryError::BuiltIn(_) => {
            Status::failed_precondition(message)
        }
        RegistryError::Conflict(_) => Status::aborted(message),
        RegistryError::Storage(_) | RegistryError::Corrupt { .. } => {
            tracing::error!(%message, "event type registry");
            Status::internal("internal error; see the server log")
        }
    }
}

fn log_status(error: LogError) -> Status {
    let message = error.to_string();
    match error {
        LogError::Busy => Status::resource_exhausted(format!("{message}; retry in a second")),
        LogError::Storage(_) | LogError::Stopped => Status::unavailable(message),
    }
}

fn status_of(status: PublishingStatus) -> proto::PublishingStatus {
    match status {
        PublishingStatus::Submitted => proto::PublishingStatus::Submitted,
        PublishingStatus::Failed => proto::PublishingStatus::Failed,
        PublishingStatus::Aborted => proto::PublishingStatus::Aborted,
    }
}

fn step_of(step: Step) -> proto::Step {
    match step {
        Step::None => proto::Step::None,
        Step::Validating => proto::Step::Validating,
        Step::Partitioning => proto::Step::Partitioning,
        Step::Enriching => proto::Step::Enriching,
        Step::Publishing => proto::Step::Publishing,
    }
}

fn event_type_message(event_type: &mm_gateway::EventType) -> proto::EventType {
    proto::EventType {
        name: event_type.name.clone(),
        owning_application: event_type.owning_application.clone(),
        category: json_name(&event_type.category),
        schema_json: event_type.schema.to_string(),
        compatibility_mode: event_type.compatibility_mode.as_str().to_owned(),
        partition_strategy: json_name(&event_type.partition_strategy),
        partition_key_fields: event_type.partition_key_fields.clone(),
        partitions: event_type.partitions,
        version: event_type.version.to_string(),
        created_at: event_type.created_at.clone(),
        updated_at: event_type.updated_at.clone(),
        built_in: event_type.built_in,
    }
}

/// The JSON name of one of the registry's enums, as the HTTP API spells it.
fn json_name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

impl Service {
    /// Publishes one batch: its answers in input order.
    async fn publish_batch(
        &self,
        request: proto::PublishRequest,
        caller: Option<&TraceHeaders>,
    ) -> Result<Vec<proto::PublishItem>, Status> {
        let state = &self.0;
        let name = request.event_type.clone();
        let registered = state.gateway.publishable(&name).map_err(registry_status)?;
        let span = publish::producer_span(&name);
        let options = PublishOptions {
            trace: mm_trace::context::outgoing(&span, caller),
            atomic: request.atomic,
            flow_id: if request.flow_id.is_empty() {
                publish::new_flow_id()
            } else {
                request.flow_id.clone()
            },
            now_us: mm_model::time::now_us(),
        };
        let started = Instant::now();
        let preparing = span.clone();
        let mut prepared = tokio::task::spawn_blocking(move || {
            let _entered = preparing.enter();
            let events: Vec<&[u8]> = request
                .events_json
                .iter()
                .map(|event| event.as_bytes())
                .collect();
            publish::prepare_events(&registered, events, &options)
        })
        .await
        .map_err(|error| Status::internal(format!("publishing task: {error}")))?;
        let submitted = state
            .gateway
            .commit(&name, &mut prepared)
            .instrument(span)
            .await
            .map_err(log_status)?;
        state.metrics.count_published(
            &name,
            submitted,
            prepared
                .items
                .iter()
                .filter(|item| item.publishing_status != PublishingStatus::Submitted)
                .map(|item| (item.step.as_str(), item.reason)),
        );
        state
            .metrics
            .gateway_publish_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(prepared
            .items
            .into_iter()
            .map(|item| proto::PublishItem {
                eid: item.eid,
                publishing_status: status_of(item.publishing_status) as i32,
                step: step_of(item.step) as i32,
                detail: item.detail,
            })
            .collect())
    }
}

fn publish_response(items: Vec<proto::PublishItem>) -> proto::PublishResponse {
    let count = |status: proto::PublishingStatus| {
        items
            .iter()
            .filter(|item| item.publishing_status == status as i32)
            .count() as u32
    };
    proto::PublishResponse {
        submitted: count(proto::PublishingStatus::Submitted),
        failed: count(proto::PublishingStatus::Failed),
        aborted: count(proto::PublishingStatus::Aborted),
        items,
    }
}

#[tonic::async_trait]
impl EventGateway for Service {
    async fn publish(
        &self,
        request: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        let caller = caller_trace(request.metadata());
        let items = self
            .publish_batch(request.into_inner(), caller.as_ref())
            .await?;
        Ok(Response::new(publish_response(items)))
    }

    async fn publish_stream(
        &self,
        request: Request<Streaming<proto::PublishRequest>>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        let caller = caller_trace(request.metadata());
        let mut batches = request.into_inner();
        let mut items = Vec::new();
        while let Some(batch) = batches.message().await? {
            items.extend(self.publish_batch(batch, caller.as_ref()).await?);
        }
        Ok(Response::new(publish_response(items)))
    }
}

#[tonic::async_trait]
impl EventTypes for Service {
    async fn put_event_type(
        &self,
        request: Request<proto::PutEventTypeRequest>,
    ) -> Result<Response<proto::PutEventTypeResponse>, Status> {
        let request = request.into_inner();
        let definition: mm_gateway::EventTypeDefinition =
            serde_json::from_str(&request.definition_json)
                .map_err(|error| Status::invalid_argument(format!("definition_json: {error}")))?;
        let gateway = self.0.gateway.clone();
        let metrics = self.0.metrics.clone();
        let span = tracing::Span::current();
        let (outcome, event_type) = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let put = gateway
                .registry
                .put(&request.name, definition, mm_model::time::now_us());
            metrics
                .gateway_event_types
                .set(gateway.registry.len() as i64);
            put
        })
        .await
        .map_err(|error| Status::internal(format!("registry task: {error}")))?
        .map_err(registry_status)?;
        if outcome == mm_gateway::PutOutcome::Created {
            self.0
                .gateway
                .log
                .prepare(&event_type)
                .await
                .map_err(log_status)?;
        }
        Ok(Response::new(proto::PutEventTypeResponse {
            created: outcome == mm_gateway::PutOutcome::Created,
            event_type: Some(event_type_message(&event_type)),
        }))
    }

    async fn get_event_type(
        &self,
        request: Request<proto::GetEventTypeRequest>,
    ) -> Result<Response<proto::EventType>, Status> {
        let registered = self
            .0
            .gateway
            .registry
            .get(&request.into_inner().name)
            .map_err(registry_status)?;
        Ok(Response::new(event_type_message(&registered.event_type)))
    }

    async fn list_event_types(
        &self,
        _request: Request<proto::ListEventTypesRequest>,
    ) -> Result<Response<proto::ListEventTypesResponse>, Status> {
        let event_types = self
            .0
            .gateway
            .registry
            .list()
            .iter()
            .map(event_type_message)
            .collect();
        Ok(Response::new(proto::ListEventTypesResponse { event_types }))
    }

    async fn check_compatibility(
        &self,
        request: Request<proto::CheckCompatibilityRequest>,
    ) -> Result<Response<proto::CompatibilityReport>, Status> {
        let request = request.into_inner();
        let schema: serde_json::Value = serde_json::from_str(&request.schema_json)
            .map_err(|error| Status::invalid_argument(format!("schema_json: {error}")))?;
        let mode = if request.compatibility_mode.is_empty() {
            None
        } else {
            Some(
                serde_json::from_value(serde_json::Value::String(request.compatibility_mode.clone()))
                    .map_err(|_| {
                        Status::invalid_argument(format!(
                            "compatibility_mode: {:?} is not one of none, backward, forward, full, backward_transitive, forward_transitive, full_transitive",
                            request.compatibility_mode
                        ))
                    })?,
            )
        };
        let report = self
            .0
            .gateway
            .compatibility(&request.name, &schema, mode)
            .map_err(registry_status)?;
        Ok(Response::new(proto::CompatibilityReport {
            compatible: report.compatible,
            next_version: report
                .next_version
                .map(|version| version.to_string())
                .unwrap_or_default(),
            compatibility_mode: report.compatibility_mode.as_str().to_owned(),
            violations: report
                .violations
                .into_iter()
                .map(|violation| proto::Violation {
                    path: violation.path,
                    rule: violation.rule,
                    old_json: violation.old.to_string(),
                    new_json: violation.new.to_string(),
                    message: violation.message,
                    hint: violation.hint,
                })
                .collect(),
            consumers: report.consumers,
        }))
    }
}
