"""AMQP 0-9-1 client (pika): publishes messages to a queue and consumes them
back over one connection that stays open between rounds, so a test can read
the proxy's byte counters while the broker connection lives.

Usage: amqp_client.py HOST PORT MESSAGES SIZE
Each round publishes MESSAGES messages of SIZE bytes, consumes them, checks
every body, and prints "round <n> ok <bytes>". After each round it waits for
a line on stdin: "again" runs another round, anything else (or EOF) closes
the connection and prints "closed".
"""
import sys

import pika


def main(host: str, port: int, count: int, size: int) -> None:
    params = pika.ConnectionParameters(
        host=host,
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=10,
        blocked_connection_timeout=10,
        heartbeat=0,
    )
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    round_no = 0
    while True:
        round_no += 1
        sent = []
        for i in range(count):
            body = (f"{round_no}:{i}:".encode() + b"x" * size)[:size]
            channel.basic_publish(exchange="", routing_key=queue, body=body)
            sent.append(body)
        got = []
        for method, _props, body in channel.consume(queue, inactivity_timeout=10):
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            got.append(body)
            if len(got) == count:
                break
        channel.cancel()
        if got != sent:
            print(f"round {round_no} mismatch {len(got)}/{count}", flush=True)
            sys.exit(1)
        print(f"round {round_no} ok {count * size}", flush=True)
        if sys.stdin.readline().strip() != "again":
            break
    connection.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
