"""gRPC server (a real peer for the proxy's gRPC tests), built on grpcio's
generic handlers: messages are raw bytes, so no protoc code generation.

Usage: grpc_server.py [PORT]  -- prints "listening PORT" once it serves
(PORT 0 or none: the system picks one, so tests never race for it).

Service test.Echo:
  Unary(bytes) -> bytes         echoes; or, while the script has steps, the
                                next step decides: "ok", a status name such
                                as "unavailable" (aborted before any header:
                                a trailers-only response), "late-<status>"
                                (initial metadata first, then the status in
                                trailers), "sleep-<ms>" (then echoes).
  Script(bytes) -> bytes        replaces the script: comma-separated steps.
  Stats(bytes) -> bytes         "unary=N deadline=SECONDS" (calls to Unary so
                                far; the time that was left of the last
                                Unary's deadline, or "none").
  ServerStream(bytes) -> stream "N" in, messages "0".."N-1" out, then OK; the
                                request "N,fail" ends with UNAVAILABLE after
                                the messages.
  ClientStream(stream) -> bytes the messages joined with "+".
  Bidi(stream) -> stream        each message echoed as it arrives, uppercased.
  Hold(stream) -> bytes         reads messages until the client ends its
                                stream ("held N").
  Held(bytes) -> bytes          "started=N ended=M": Hold calls that got
                                their first message, and calls that are
                                over, however they ended (grpcio's request
                                iterator ends alike on a half-close and on a
                                cancel, and `is_active` lags a cancel, so a
                                test tells a cancel by never ending its
                                stream).
"""
import sys
import threading
import time
from concurrent import futures

import grpc

lock = threading.Lock()
script = []
stats = {"unary": 0, "deadline": None}
held = {"started": 0, "ended": 0}


def status_code(name):
    return getattr(grpc.StatusCode, name.upper().replace("-", "_"))


def unary(request, context):
    with lock:
        stats["unary"] += 1
        remaining = context.time_remaining()
        # Without a deadline grpcio reports a huge number.
        stats["deadline"] = remaining if remaining < 1e6 else None
        step = script.pop(0) if script else "ok"
    if step.startswith("sleep-"):
        time.sleep(int(step[len("sleep-"):]) / 1000)
        return request
    if step.startswith("late-"):
        context.send_initial_metadata((("x-late", "1"),))
        context.abort(status_code(step[len("late-"):]), "late failure")
    if step != "ok":
        context.abort(status_code(step), f"scripted {step}")
    return request


def set_script(request, context):
    with lock:
        script[:] = [s for s in request.decode().split(",") if s]
        stats["unary"] = 0
    return b"ok"


def get_stats(request, context):
    with lock:
        deadline = stats["deadline"]
        text = "unary=%d deadline=%s" % (
            stats["unary"],
            "none" if deadline is None else "%.3f" % deadline,
        )
    return text.encode()


def server_stream(request, context):
    count, _, tail = request.decode().partition(",")
    for i in range(int(count)):
        yield str(i).encode()
    if tail == "fail":
        context.abort(grpc.StatusCode.UNAVAILABLE, "stream failed")


def client_stream(request_iterator, context):
    return b"+".join(request_iterator)


def bidi(request_iterator, context):
    for message in request_iterator:
        yield message.upper()


def hold(request_iterator, context):
    def ended():
        # Runs when the call is over, however it ended.
        with lock:
            held["ended"] += 1

    context.add_callback(ended)
    count = 0
    for _ in request_iterator:
        count += 1
        if count == 1:
            with lock:
                held["started"] += 1
    return b"held %d" % count


def get_held(request, context):
    with lock:
        return ("started=%d ended=%d" % (held["started"], held["ended"])).encode()


def main(port):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Script": grpc.unary_unary_rpc_method_handler(set_script),
        "Stats": grpc.unary_unary_rpc_method_handler(get_stats),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Hold": grpc.stream_unary_rpc_method_handler(hold),
        "Held": grpc.unary_unary_rpc_method_handler(get_held),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", handlers),)
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"listening {bound}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
