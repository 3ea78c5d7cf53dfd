"""An independent gRPC client of the event gateway, generated from the repository's proto with
grpcio-tools: health, reflection, registry administration and publishing (unary and client
streaming). Prints one JSON object with what it saw; the Rust test checks it.

Usage: client.py PROTO_ROOT ADDRESS OUT_DIR
"""
import json
import sys

from grpc_tools import protoc

proto_root, address, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
status = protoc.main([
    "grpc_tools.protoc",
    f"-I{proto_root}",
    f"--python_out={out_dir}",
    f"--grpc_python_out={out_dir}",
    "merchant_monitor/gateway/v1/gateway.proto",
])
if status != 0:
    sys.exit(f"protoc failed with {status}")
sys.path.insert(0, out_dir)

import grpc  # noqa: E402
from merchant_monitor.gateway.v1 import gateway_pb2 as pb  # noqa: E402
from merchant_monitor.gateway.v1 import gateway_pb2_grpc as rpc  # noqa: E402

seen = {}
channel = grpc.insecure_channel(address)
grpc.channel_ready_future(channel).result(timeout=30)
raw = lambda path: channel.unary_unary(path, request_serializer=lambda x: x, response_deserializer=lambda x: x)

# grpc.health.v1.Health/Check with an empty HealthCheckRequest: status SERVING is field 1 = 1.
seen["health"] = raw("/grpc.health.v1.Health/Check")(b"").hex()
# Reflection: ServerReflectionRequest{list_services: ""} (field 7), one answer listing services.
reflect = channel.stream_stream(
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    request_serializer=lambda x: x,
    response_deserializer=lambda x: x,
)
listing = next(iter(reflect(iter([b"\x3a\x00"]))))
seen["reflected_gateway"] = b"merchant_monitor.gateway.v1.EventGateway" in listing
seen["reflected_types"] = b"merchant_monitor.gateway.v1.EventTypes" in listing

types = rpc.EventTypesStub(channel)
gateway = rpc.EventGatewayStub(channel)
definition = {
    "owning_application": "refunds",
    "category": "business",
    "partition_key_fields": ["/order_id"],
    "partitions": 2,
    "schema": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
        "required": ["order_id", "amount"],
        "additionalProperties": False,
    },
}
put = types.PutEventType(pb.PutEventTypeRequest(name="order.grpc", definition_json=json.dumps(definition)))
seen["created"] = put.created
seen["version"] = put.event_type.version
seen["listed"] = [event_type.name for event_type in types.ListEventTypes(pb.ListEventTypesRequest()).event_types]


def event(number, amount):
    return json.dumps({
        "metadata": {"eid": f"00000000-0000-4000-8000-{number:012x}", "occurred_at": "2026-12-01T10:00:00Z"},
        "order_id": f"o{number}",
        "amount": amount,
    })


# The caller's trace context travels as metadata (this server exports no spans: it passes
# the context on as received).
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
answer = gateway.Publish(
    pb.PublishRequest(event_type="order.grpc", events_json=[event(1, 5), event(2, -1)], flow_id="grpc-flow"),
    metadata=[("traceparent", TRACEPARENT), ("log_level", "debug")],
)
seen["unary"] = {
    "submitted": answer.submitted,
    "failed": answer.failed,
    "statuses": [pb.PublishingStatus.Name(item.publishing_status) for item in answer.items],
    "detail": answer.items[1].detail,
}
batches = [
    pb.PublishRequest(event_type="order.grpc", events_json=[event(3, 1), event(4, 2)]),
    pb.PublishRequest(event_type="order.grpc", events_json=[event(5, 3)], atomic=True),
]
streamed = gateway.PublishStream(iter(batches))
seen["stream"] = {"submitted": streamed.submitted, "items": len(streamed.items)}

report = types.CheckCompatibility(pb.CheckCompatibilityRequest(
    name="order.grpc",
    schema_json=json.dumps({"type": "object", "properties": {"order_id": {"type": "integer"}}}),
))
seen["compatible"] = report.compatible
seen["rules"] = [violation.rule for violation in report.violations]

try:
    gateway.Publish(pb.PublishRequest(event_type="order.none", events_json=[event(9, 1)]))
    seen["unknown"] = "OK"
except grpc.RpcError as error:
    seen["unknown"] = error.code().name
    seen["unknown_message"] = error.details()

try:
    gateway.Publish(pb.PublishRequest(event_type="order.grpc", events_json=[event(6, 1)]), metadata=[("log_level", "loud")])
    seen["bad_level"] = "OK"
except grpc.RpcError as error:
    seen["bad_level"] = error.code().name
    seen["bad_level_message"] = error.details()

print(json.dumps(seen))
