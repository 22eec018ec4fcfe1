"""WebSocket client: sends each argument as a text message (and one 1 MB binary
message) and prints what came back, one line per message.

Usage: ws_client.py [--hold] URL MESSAGE...
With --hold the connection stays open after the binary message: the client
prints "holding", waits for a line on stdin, sends it as one more message,
prints the echo and closes.
"""
import asyncio
import hashlib
import os
import sys

from websockets.asyncio.client import connect


async def main(url: str, messages: list[str], hold: bool) -> None:
    async with connect(url, open_timeout=5, max_size=4 * 1024 * 1024) as websocket:
        for message in messages:
            await websocket.send(message)
            print(await asyncio.wait_for(websocket.recv(), 5), flush=True)
        # Random bytes: permessage-deflate would shrink a pattern to a few KiB.
        blob = os.urandom(1000 * 1000)
        await websocket.send(blob)
        echoed = await asyncio.wait_for(websocket.recv(), 5)
        same = hashlib.sha256(echoed).digest() == hashlib.sha256(blob).digest()
        print("binary-ok" if same else "binary-mismatch", flush=True)
        if hold:
            print("holding", flush=True)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            await websocket.send(line.strip())
            print(await asyncio.wait_for(websocket.recv(), 5), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    hold = args[:1] == ["--hold"]
    if hold:
        args = args[1:]
    asyncio.run(main(args[0], args[1:], hold))
