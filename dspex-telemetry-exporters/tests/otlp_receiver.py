"""An OTLP receiver (traces and metrics) for the tests, on the official OpenTelemetry decoders.

Usage: python otlp_receiver.py HTTP_PORT [GRPC_PORT] [--tls CERT KEY [--control PORT]]
[--answers 503,200] [--hang] [--huge-error BYTES]. It decodes every POST /v1/traces and
/v1/metrics (gzip bodies too; and, with a gRPC port, every TraceService/Export and
MetricsService/Export call) and keeps the spans and data points; GET /spans and GET /points on
the HTTP port (or, with --tls, on the plain control port) return them as JSON (ids in hex),
with the resource attributes, the request headers (or gRPC metadata) and the transport each
arrived with. With --tls both OTLP ports serve TLS with that certificate. --answers scripts the
status of successive trace exports (503 carries `Retry-After: 1`; a refused export is not
kept); --hang reads each export and never answers; --huge-error answers every export 500 with a
body of that many bytes, newlines and terminal escapes included; --count-only keeps only the
number of spans received (GET /count). A port of 0 binds a free one; the first line printed is
`ready HTTP_PORT GRPC_PORT CONTROL_PORT`.
"""

import argparse
import gzip
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

SPANS = []
POINTS = []
ATTEMPTS = []
COUNT = 0
LOCK = threading.Lock()
OPTIONS = None


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def record(request, headers, transport):
    if OPTIONS.count_only:
        global COUNT
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with LOCK:
            COUNT += n
        return
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
                        "trace_state": span.trace_state,
                        "flags": span.flags,
                        "name": span.name,
                        "kind": span.kind,
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "attributes": {kv.key: value(kv.value) for kv in span.attributes},
                        "status_code": span.status.code,
                        "status_message": span.status.message,
                        "events": [
                            {"name": e.name, "time": e.time_unix_nano,
                             "attributes": {kv.key: value(kv.value) for kv in e.attributes}}
                            for e in span.events
                        ],
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


def serve_grpc(port, tls):
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
    if tls:
        with open(tls[0], "rb") as cert, open(tls[1], "rb") as key:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        bound = server.add_secure_port(f"127.0.0.1:{port}", credentials)
    else:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


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
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/v1/traces":
            with LOCK:
                ATTEMPTS.append(self.headers.get("content-encoding", "identity"))
                attempt = len(ATTEMPTS)
            if OPTIONS.hang:
                time.sleep(3600)
                return
            if OPTIONS.huge_error:
                line = b"error\n\x1b[31mFORGED LOG LINE level=ERROR\x1b[0m\n"
                payload = (line * (OPTIONS.huge_error // len(line) + 1))[: OPTIONS.huge_error]
                return self.reply(500, payload, "text/plain")
            answers = OPTIONS.answers
            if answers and attempt <= len(answers) and answers[attempt - 1] != 200:
                status = answers[attempt - 1]
                self.send_response(status)
                if status in (429, 503):
                    self.send_header("retry-after", "1")
                self.send_header("content-length", "0")
                self.end_headers()
                return
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
            elif self.path == "/count":
                body = json.dumps(COUNT).encode()
            elif self.path == "/attempts":
                body = json.dumps(ATTEMPTS).encode()
            else:
                return self.reply(404, b"not found", "text/plain")
        self.reply(200, body, "application/json")


def main():
    global OPTIONS
    parser = argparse.ArgumentParser()
    parser.add_argument("http_port", type=int)
    parser.add_argument("grpc_port", type=int, nargs="?")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--control", type=int)
    parser.add_argument("--answers", type=lambda s: [int(a) for a in s.split(",")], default=[])
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--huge-error", type=int, default=0)
    parser.add_argument("--count-only", action="store_true")
    OPTIONS = parser.parse_args()
    grpc_server, grpc_port = (None, 0)
    if OPTIONS.grpc_port is not None:
        grpc_server, grpc_port = serve_grpc(OPTIONS.grpc_port, OPTIONS.tls)
    server = ThreadingHTTPServer(("127.0.0.1", OPTIONS.http_port), Handler)
    server.daemon_threads = True
    http_port = server.server_address[1]
    control_port = http_port
    if OPTIONS.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(OPTIONS.tls[0], OPTIONS.tls[1])
        server.socket = context.wrap_socket(server.socket, server_side=True)
        control = ThreadingHTTPServer(("127.0.0.1", OPTIONS.control or 0), Handler)
        control.daemon_threads = True
        control_port = control.server_address[1]
        threading.Thread(target=control.serve_forever, daemon=True).start()
    # Port 0 binds a free port: the ports bound are the first line out.
    print(f"ready {http_port} {grpc_port} {control_port}", flush=True)
    server.serve_forever()
    if grpc_server:
        grpc_server.stop(None)


if __name__ == "__main__":
    main()
