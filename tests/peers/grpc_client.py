"""gRPC client (a real peer for the proxy's gRPC tests), built on grpcio
with raw-bytes messages: no protoc code generation.

Usage: grpc_client.py ADDRESS AUTHORITY COMMAND...
Connects to ADDRESS (host:port, plaintext HTTP/2) naming AUTHORITY as the
:authority, then runs each COMMAND (one argument each) against test.Echo in
order, printing what came back:

  "unary MSG [timeout=SECONDS]"  one line: "OK <reply>" or "<CODE> <details>"
  "script STEPS"                 sets the server's script (see grpc_server.py)
  "stats"                        one line: the server's Stats reply
  "server-stream REQUEST"        a line per message, then "OK" or "<CODE> ..."
  "client-stream A B C"          one line: "OK <reply>"
  "bidi A B C"                   sends A, waits for its echo, then B, ...: a
                                 line per echo, then "OK"
  "held"                         one line: the server's Held reply
"""
import sys

import grpc


def code_line(error):
    return f"{error.code().name} {error.details()}"


def run(channel, command):
    name, _, rest = command.partition(" ")
    method = lambda kind, path: getattr(channel, kind)(f"/test.Echo/{path}")
    if name == "unary":
        args = rest.split(" ")
        timeout = None
        for arg in args[1:]:
            if arg.startswith("timeout="):
                timeout = float(arg[len("timeout="):])
        try:
            reply = method("unary_unary", "Unary")(args[0].encode(), timeout=timeout)
            print(f"OK {reply.decode()}")
        except grpc.RpcError as error:
            print(code_line(error))
    elif name == "script":
        method("unary_unary", "Script")(rest.encode())
    elif name == "stats":
        print(method("unary_unary", "Stats")(b"").decode())
    elif name == "held":
        print(method("unary_unary", "Held")(b"").decode())
    elif name == "server-stream":
        try:
            for message in method("unary_stream", "ServerStream")(rest.encode()):
                print(message.decode())
            print("OK")
        except grpc.RpcError as error:
            print(code_line(error))
    elif name == "client-stream":
        messages = iter([m.encode() for m in rest.split(" ")])
        try:
            print("OK " + method("stream_unary", "ClientStream")(messages).decode())
        except grpc.RpcError as error:
            print(code_line(error))
    elif name == "bidi":
        # Each message is sent only once the previous echo came back, so a
        # proxy that held messages back would deadlock the call (and time out).
        import queue

        outgoing = queue.Queue()

        def requests():
            while True:
                message = outgoing.get()
                if message is None:
                    return
                yield message

        words = rest.split(" ")
        outgoing.put(words[0].encode())
        try:
            responses = method("stream_stream", "Bidi")(requests(), timeout=10)
            for i, echo in enumerate(responses):
                print(echo.decode(), flush=True)
                outgoing.put(words[i + 1].encode() if i + 1 < len(words) else None)
            print("OK")
        except grpc.RpcError as error:
            print(code_line(error))
    else:
        raise SystemExit(f"unknown command {command!r}")
    sys.stdout.flush()


def main():
    address, authority, *commands = sys.argv[1:]
    options = [("grpc.default_authority", authority), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(address, options=options) as channel:
        for command in commands:
            run(channel, command)


if __name__ == "__main__":
    main()
