"""The listening socket: accepted connections get TCP_NODELAY from asyncio.

asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; a socket
made with proto 0 loses it, and every keep-alive request then waited 40 ms
(uvicorn writes headers and body apart; the client delays its ACK).
"""

import asyncio.base_events
import socket

from checkout_cam.web.server import WebServer


def test_accepted_connections_get_tcp_nodelay():
    listener = WebServer._bind("127.0.0.1", 0)
    try:
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        try:
            asyncio.base_events._set_nodelay(conn)   # what asyncio's transport does with each connection
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            conn.close()
            client.close()
    finally:
        listener.close()
