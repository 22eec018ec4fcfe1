"""OTLP/gRPC trace receiver (a real peer for the proxy's tracing tests):
the OpenTelemetry protocol's own generated service (opentelemetry-proto) on
grpcio. Prints "listening PORT" once it serves, then one JSON line per span
received: service, trace_id, span_id, parent_span_id (hex, "" for a root),
name, kind, attributes and events.

Usage: otlp_receiver.py [PORT] [--count]  (0 or none: the system picks one)
With --count (for benchmarks) spans are counted, not printed: the total is
printed when the receiver is interrupted.
"""
import json
import signal
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(pairs):
    return {pair.key: value(pair.value) for pair in pairs}


class Counter(trace_service_pb2_grpc.TraceServiceServicer):
    spans = 0

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                Counter.spans += len(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    line = {
                        "service": resource.get("service.name"),
                        "resource": resource,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": span.kind,
                        "attributes": attributes(span.attributes),
                        "events": [
                            {"name": e.name, "attributes": attributes(e.attributes)}
                            for e in span.events
                        ],
                    }
                    print(json.dumps(line), flush=True)
        return trace_service_pb2.ExportTraceServiceResponse()


def main(port: int, count: bool) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = Counter() if count else Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    # Started in the background by a script, SIGINT arrives ignored (a
    # non-interactive shell does that for background jobs): stop on SIGINT
    # and SIGTERM alike, and say how many spans came.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    server.start()
    print(f"listening {bound}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        if count:
            print(f"spans {Counter.spans}", flush=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--count"]
    main(int(args[0]) if args else 0, "--count" in sys.argv)
