"""A real OTLP/gRPC trace receiver for tests: serves
opentelemetry.proto.collector.trace.v1.TraceService/Export on a loopback port and writes one JSON
line per received span to standard output, flushed, so the test reading it sees spans as they
arrive. The first line is `{"listening": PORT}`.

Not a test module (unittest does not collect it): tests/tests/tracing.rs starts it.

Run: python3 tests/conformance/otlp_receiver.py
"""

import json
import sys
from concurrent import futures

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def attribute_value(v):
    """An OTLP AnyValue as a plain JSON value."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("array_value", "kvlist_value"):
        return json_format.MessageToDict(getattr(v, kind))
    return getattr(v, kind)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            resource = {
                a.key: attribute_value(a.value) for a in resource_spans.resource.attributes
            }
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    line = {
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "kind": span.kind,
                        "status_code": span.status.code,
                        "status_message": span.status.message,
                        "start_unix_nano": span.start_time_unix_nano,
                        "end_unix_nano": span.end_time_unix_nano,
                        "attributes": {a.key: attribute_value(a.value) for a in span.attributes},
                        "resource": resource,
                        "scope": scope_spans.scope.name,
                    }
                    print(json.dumps(line), flush=True)
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"listening": port}), flush=True)
    try:
        # Ends when the test closes our standard input (or kills us).
        sys.stdin.read()
    finally:
        server.stop(grace=None)


if __name__ == "__main__":
    main()
