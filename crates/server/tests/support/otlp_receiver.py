"""An OTLP trace receiver for the tests: the collector's two transports (gRPC on
TraceService/Export, protobuf over HTTP on POST /v1/traces), built from the
`opentelemetry-proto` and `grpcio` packages alone.

Usage: otlp_receiver.py grpc|http
Prints `listening <port>` first, then one JSON object per received span:
{service, name, kind, trace_id, span_id, parent_span_id, attributes, links}.
"""

import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
lock = threading.Lock()


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def emit(request):
    lines = []
    for resource_spans in request.resource_spans:
        resource = {item.key: value(item.value) for item in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                lines.append(json.dumps({
                    "service": resource.get("service.name"),
                    "name": span.name,
                    "kind": KINDS.get(span.kind, str(span.kind)),
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "attributes": {item.key: value(item.value) for item in span.attributes},
                    "links": [
                        {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                        for link in span.links
                    ],
                }))
    with lock:
        for line in lines:
            print(line)
        sys.stdout.flush()


class Service(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        emit(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        emit(request)
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    protocol = sys.argv[1]
    if protocol == "grpc":
        server = __import__("grpc").server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(f"listening {port}", flush=True)
        server.wait_for_termination()
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        print(f"listening {server.server_address[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
