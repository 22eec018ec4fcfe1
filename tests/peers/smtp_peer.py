"""SMTP, a protocol whose server speaks first, with real implementations on
both ends: `serve` runs aiosmtpd (prints "listening <port>", then each
delivered message as "delivered <from> <bytes>"); `send` connects with the
standard library's smtplib, times how long the server's 220 greeting took
to arrive, sends one message and prints "greeting <seconds> sent".

Usage: smtp_peer.py serve HOST PORT
       smtp_peer.py send HOST PORT SIZE
"""
import asyncio
import smtplib
import sys
import time


def serve(host: str, port: int) -> None:
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            print(f"delivered {envelope.mail_from} {len(envelope.content)}", flush=True)
            return "250 OK"

    controller = Controller(Sink(), hostname=host, port=port)
    controller.start()
    print(f"listening {port}", flush=True)
    try:
        asyncio.run(asyncio.Event().wait())
    finally:
        controller.stop()


def send(host: str, port: int, size: int) -> None:
    started = time.monotonic()
    # connect() returns once the server's greeting has been read.
    client = smtplib.SMTP(timeout=30)
    client.connect(host, port)
    greeting = time.monotonic() - started
    # Lines of 72 bytes: SMTP limits a line's length.
    body = "Subject: through the proxy\r\n\r\n" + ("y" * 70 + "\r\n") * (size // 72 + 1)
    client.sendmail("app@example.test", ["broker@example.test"], body)
    client.quit()
    print(f"greeting {greeting:.3f} sent", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
