"""WebSocket client: sends each argument as a text message (and one 1 MiB binary
message) and prints what came back, one line per message.

Usage: ws_client.py URL MESSAGE...
"""
import asyncio
import hashlib
import sys

from websockets.asyncio.client import connect


async def main(url: str, messages: list[str]) -> None:
    async with connect(url, open_timeout=5, max_size=4 * 1024 * 1024) as websocket:
        for message in messages:
            await websocket.send(message)
            print(await asyncio.wait_for(websocket.recv(), 5), flush=True)
        blob = bytes(range(256)) * 4096
        await websocket.send(blob)
        echoed = await asyncio.wait_for(websocket.recv(), 5)
        same = hashlib.sha256(echoed).digest() == hashlib.sha256(blob).digest()
        print("binary-ok" if same else "binary-mismatch", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
