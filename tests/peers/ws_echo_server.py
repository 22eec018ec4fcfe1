"""WebSocket echo server (a real peer for the proxy's upgrade tests).

Usage: ws_echo_server.py [PORT]  -- prints "listening PORT" once it accepts
connections (PORT 0 or none: the system picks one, so tests never race for it).
"""
import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main(port: int) -> None:
    async with serve(echo, "127.0.0.1", port) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"listening {bound}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
