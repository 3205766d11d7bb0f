"""An OTLP receiver (traces and metrics) for the tests, on the official OpenTelemetry decoders.

Usage: python otlp_receiver.py HTTP_PORT [GRPC_PORT]. It decodes every POST /v1/traces and
/v1/metrics (and, with a gRPC port, every TraceService/Export and MetricsService/Export call)
and keeps the spans and data points; GET /spans and GET /points on the HTTP port return them as
JSON (ids in hex), with the resource attributes, the request headers (or gRPC metadata) and the
transport each arrived with.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

SPANS = []
POINTS = []
LOCK = threading.Lock()


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def record(request, headers, transport):
    received = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                received.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": span.kind,
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "attributes": {kv.key: value(kv.value) for kv in span.attributes},
                        "status_code": span.status.code,
                        "status_message": span.status.message,
                        "resource": resource,
                        "scope": scope_spans.scope.name,
                        "headers": headers,
                        "transport": transport,
                    }
                )
    with LOCK:
        SPANS.extend(received)


def record_metrics(request, headers, transport):
    received = []
    for resource_metrics in request.resource_metrics:
        resource = {kv.key: value(kv.value) for kv in resource_metrics.resource.attributes}
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                base = {
                    "name": metric.name,
                    "unit": metric.unit,
                    "description": metric.description,
                    "kind": kind,
                    "temporality": getattr(data, "aggregation_temporality", 0),
                    "monotonic": getattr(data, "is_monotonic", False),
                    "resource": resource,
                    "headers": headers,
                    "transport": transport,
                }
                for point in data.data_points:
                    entry = dict(base)
                    entry["attributes"] = {kv.key: value(kv.value) for kv in point.attributes}
                    entry["start"] = point.start_time_unix_nano
                    entry["time"] = point.time_unix_nano
                    if kind == "histogram":
                        entry.update(
                            count=point.count,
                            sum=point.sum,
                            min=point.min,
                            max=point.max,
                            bucket_counts=list(point.bucket_counts),
                            explicit_bounds=list(point.explicit_bounds),
                        )
                    else:
                        entry["value"] = getattr(point, point.WhichOneof("value"))
                    received.append(entry)
    with LOCK:
        POINTS.extend(received)


def serve_grpc(port):
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            record(request, {k: v for k, v in context.invocation_metadata()}, "grpc")
            return trace_service_pb2.ExportTraceServiceResponse()

    class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request, context):
            record_metrics(request, {k: v for k, v in context.invocation_metadata()}, "grpc")
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsService(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-type") != "application/x-protobuf":
            return self.reply(415, b"protobuf only", "text/plain")
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path == "/v1/traces":
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            record(request, headers, "http")
            response = trace_service_pb2.ExportTraceServiceResponse()
        elif self.path == "/v1/metrics":
            request = metrics_service_pb2.ExportMetricsServiceRequest()
            request.ParseFromString(body)
            record_metrics(request, headers, "http")
            response = metrics_service_pb2.ExportMetricsServiceResponse()
        else:
            return self.reply(404, b"not found", "text/plain")
        self.reply(200, response.SerializeToString(), "application/x-protobuf")

    def do_GET(self):
        with LOCK:
            if self.path == "/spans":
                body = json.dumps(SPANS).encode()
            elif self.path == "/points":
                body = json.dumps(POINTS).encode()
            else:
                return self.reply(404, b"not found", "text/plain")
        self.reply(200, body, "application/json")


def main():
    grpc_server = serve_grpc(int(sys.argv[2])) if len(sys.argv) > 2 else None
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
    if grpc_server:
        grpc_server.stop(None)


if __name__ == "__main__":
    main()
