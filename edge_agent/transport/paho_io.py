"""paho's socket I/O: a Client with read/write buffers, and the asyncio driver of its socket.

paho reads every packet with at least three recv() calls (command byte, length, body)
and writes every packet with its own send(). At thousands of QoS 1 messages a second
that is four system calls per message, the PUBACK's send() being the dearest (it wakes
the broker each time). This subclass puts a buffer under paho's two socket hooks,
``_sock_recv`` and ``_sock_send``: reads are served from one large recv(), and whole
packets are collected and written with one send() when paho's write pass ends. paho's
packet state machine, callbacks and error handling stay as they are.

The hooks are private paho API (identical in paho 2.0, 2.1 and 2.2). Should a future
paho rename them, the overrides are simply never called and paho does its own unbuffered
I/O; only ``_packet_write`` must exist for the write buffer, so it is switched on only
when it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

_READ_CHUNK = 65_536
_WRITE_HIGH = 262_144  # beyond this, paho keeps further packets queued until we flush
_BUFFER_WRITES = callable(getattr(paho.Client, "_packet_write", None))


class BufferedClient(paho.Client):
    """A paho Client whose socket reads and writes go through a buffer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._io_sock: Any = None  # the socket the buffers belong to
        self._rbuf = b""
        self._rpos = 0
        self._wbuf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes read from the socket that paho has not consumed yet.

        The socket's fd is not readable for these, so whoever drives the socket
        must call ``loop_read`` again while this is non-zero.
        """
        return len(self._rbuf) - self._rpos if self._io_sock is self._sock else 0

    def want_write(self) -> bool:
        """paho's queue, or bytes of whole packets waiting in our write buffer."""
        return super().want_write() or (bool(self._wbuf) and self._io_sock is self._sock)

    # --- paho's socket hooks -------------------------------------------------------

    def _own(self) -> None:
        # A new socket (reconnect) starts with empty buffers: bytes of the old
        # connection mean nothing on the new one.
        if self._io_sock is not self._sock:
            self._io_sock = self._sock
            self._rbuf, self._rpos = b"", 0
            self._wbuf.clear()

    def _sock_recv(self, bufsize: int) -> bytes:
        self._own()
        if self._rpos >= len(self._rbuf):
            # paho maps TLS want-read/want-write to BlockingIOError here, and an
            # empty result (EOF) goes back to paho as it is.
            data = super()._sock_recv(_READ_CHUNK)
            if len(data) <= bufsize:
                return data
            self._rbuf, self._rpos = data, 0
        end = self._rpos + bufsize
        chunk = self._rbuf[self._rpos : end]
        self._rpos = min(end, len(self._rbuf))
        return chunk

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if not _BUFFER_WRITES:
            return super()._sock_send(buf)
        self._own()
        if self._sock is None:
            raise ConnectionError("self._sock is None")
        if len(self._wbuf) >= _WRITE_HIGH:
            raise BlockingIOError  # paho keeps the packet and asks for writability
        # paho treats the packet as written (QoS 0 on_publish, DISCONNECT handling);
        # it reaches the socket at the end of this write pass, in order.
        self._wbuf += buf
        return len(buf)

    def _packet_write(self) -> MQTTErrorCode:
        rc: MQTTErrorCode = super()._packet_write()
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            return rc
        flushed = self._flush()
        return rc if flushed == MQTTErrorCode.MQTT_ERR_SUCCESS else flushed

    def _flush(self) -> MQTTErrorCode:
        if not self._wbuf or self._io_sock is not self._sock:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            sent = super()._sock_send(self._wbuf)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN  # paho registered for writability
        except OSError as err:
            self._easy_log(paho.MQTT_LOG_ERR, "failed to send on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        del self._wbuf[:sent]
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_close(self) -> None:
        # paho closes the socket right after "writing" DISCONNECT, which may still be
        # in our buffer: give it one best-effort send, so the broker sees a clean
        # disconnect and does not publish the last will.
        if self._wbuf and self._sock is not None and self._io_sock is self._sock:
            with contextlib.suppress(OSError):  # a lost connection: nothing more to say
                self._sock.send(self._wbuf)
        self._wbuf.clear()
        self._rbuf, self._rpos, self._io_sock = b"", 0, None
        super()._sock_close()


class SocketDriver:
    """Runs a :class:`BufferedClient`'s socket from the asyncio loop.

    paho's external event loop interface, as in its ``loop_asyncio`` example: the loop
    watches the socket and calls ``loop_read``/``loop_write``. paho opens the socket in
    a worker thread (the blocking TCP/TLS connect), so the owner attaches it to the loop
    once the connect call returns.
    """

    def __init__(self, client: BufferedClient) -> None:
        self._client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._fd: int | None = None  # socket attached to the loop
        self._sock: Any = None
        self._attach_write = False  # the connect thread queued a CONNECT to write
        self.paused = False
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use this loop; call from it, before the first connect."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def on_loop(self) -> bool:
        """Whether the caller runs on the loop's thread."""
        return threading.get_ident() == self._loop_thread

    @property
    def attached(self) -> bool:
        """Whether a socket is being watched."""
        return self._fd is not None

    def attach(self) -> None:
        """Watch the socket paho opened in the worker thread, and write its CONNECT."""
        assert self._loop is not None
        sock = self._client.socket()
        if sock is None or self._fd is not None:
            return
        self._sock, self._fd = sock, sock.fileno()
        if isinstance(sock, socket.socket):  # ssl.SSLSocket too; not a test double
            # Writes already leave in whole batches (one send per write pass); Nagle
            # would only hold a lone small packet, such as an answer right after the
            # ask's PUBACK, until the broker ACKs the one before (up to 40 ms).
            with contextlib.suppress(OSError):  # not TCP
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.paused = False
        self._loop.add_reader(self._fd, self._on_readable)
        if self._attach_write:
            self._loop.add_writer(self._fd, self._client.loop_write)

    def detach(self) -> None:
        """Stop watching the socket (paho closes it)."""
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd, self._sock, self._attach_write = None, None, False

    def pause(self) -> bool:
        """Stop reading, so TCP holds the rest; True if it was reading until now."""
        if self.paused or self._fd is None or self._loop is None:
            return False
        self.paused = True
        self._loop.remove_reader(self._fd)
        return True

    def resume(self) -> None:
        """Read again, starting with what was buffered when we paused."""
        self.paused = False
        if self._fd is not None and self._loop is not None:
            self._loop.add_reader(self._fd, self._on_readable)
            # Buffered bytes are not on the socket any more: the fd may never fire.
            self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        client, sock = self._client, self._sock
        if sock is None or self.paused:
            return
        client.loop_read()
        # Bytes in the client's read buffer, or decrypted inside the SSL object, never
        # make the fd readable again: handle them now, or they wait for the next packet
        # (or keep-alive). One recv() of 64 KiB is many packets; pause() ends the loop.
        while (
            not self.paused
            and self._sock is sock
            and (client.buffered or (isinstance(sock, ssl.SSLSocket) and sock.pending()))
        ):
            client.loop_read()

    def _on_socket_close(self, _client: paho.Client, _userdata: Any, _sock: Any) -> None:
        if self.on_loop():
            self.detach()

    def _on_register_write(self, _client: paho.Client, _userdata: Any, _sock: Any) -> None:
        if not self.on_loop():
            self._attach_write = True  # the CONNECT queued by the connect thread
        elif self._fd is not None and self._loop is not None:
            self._loop.add_writer(self._fd, self._client.loop_write)

    def _on_unregister_write(self, _client: paho.Client, _userdata: Any, _sock: Any) -> None:
        self._attach_write = False
        if self.on_loop() and self._fd is not None and self._loop is not None:
            self._loop.remove_writer(self._fd)
