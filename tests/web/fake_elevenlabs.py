"""A real HTTP/1.1 server on loopback that plays ElevenLabs' streaming TTS, scripted per case.

Written on raw asyncio streams rather than a framework so a test controls every byte: when the
headers go out, when the first audio chunk follows, and whether the body ends properly or the
socket is cut mid-chunk. It keeps connections alive like the real API, so the client's
connection reuse is exercised too.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from appliance.core.audio import TELEPHONE_RATE, pcm16_to_ulaw8k

CHARS_PER_S = 15.0  # how fast the fake voice "speaks": audio length follows the text
REASONS = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 422: "Unprocessable Entity",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Reply:
    """How to answer one request."""

    status: int = 200
    first_byte_delay_s: float = 0.0  # headers go out at once; the first audio chunk waits this
    chunk_ms: int = 100
    chunk_delay_s: float = 0.02  # faster than real time, as the real API streams
    drop_after_ms: int | None = None  # cut the socket mid-body after this much audio
    headers: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # JSON body of an error reply


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


def voice_audio(text: str) -> bytes:
    """A 660 Hz tone as long as ElevenLabs would take to say ``text``."""
    t = np.arange(int(TELEPHONE_RATE * len(text) / CHARS_PER_S)) / TELEPHONE_RATE
    return pcm16_to_ulaw8k((7000 * np.sin(2 * np.pi * 660 * t)).astype(np.int16), TELEPHONE_RATE)


class FakeElevenLabs:
    """Answers each request with the next ``Reply`` taken from ``script``; the last one repeats.

    Assign a new ``script`` to change the case mid-test (after start-up phrases were fetched).
    """

    def __init__(self, script: list[Reply] | None = None) -> None:
        self.script = script or [Reply()]
        self.requests: list[Request] = []  # speech requests
        self.warmups = 0
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeElevenLabs:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def go_offline(self) -> None:
        """Stop listening and cut every open connection: new requests are refused."""
        asyncio.run_coroutine_threadsafe(self._offline(), self._loop).result(5)

    def close(self) -> None:
        if self._thread.is_alive():
            self.go_offline()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FakeElevenLabs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def texts(self) -> list[str]:
        return [r.body.get("text", "") for r in self.requests]

    async def _offline(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _next_reply(self) -> Reply:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while request := await self._read_request(reader):
                if request.path == "/v1/models":  # the client warming its connection
                    self.warmups += 1
                    writer.write(self._head(200, {"Content-Length": "2"}) + b"[]")
                    continue
                self.requests.append(request)
                if not await self._answer(writer, request, self._next_reply()):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the client closed its keep-alive connection
        lines = head.decode("latin-1").split("\r\n")
        _method, target, _version = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip()
                   for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        url = urlsplit(target)
        return Request(path=url.path, query=dict(parse_qsl(url.query)), headers=headers,
                       body=json.loads(raw) if raw else {})

    async def _answer(self, writer: asyncio.StreamWriter, request: Request, reply: Reply) -> bool:
        """Send one response; False when the connection was cut on purpose."""
        if reply.status != 200:
            body = json.dumps(reply.error or {"detail": {"status": "error"}}).encode()
            headers = {"Content-Type": "application/json", "Content-Length": str(len(body)),
                       **reply.headers}
            writer.write(self._head(reply.status, headers) + body)
            await writer.drain()
            return True
        headers = {"Content-Type": "audio/basic", "Transfer-Encoding": "chunked", **reply.headers}
        writer.write(self._head(200, headers))
        await writer.drain()
        await asyncio.sleep(reply.first_byte_delay_s)
        audio = voice_audio(request.body.get("text", ""))
        step = TELEPHONE_RATE * reply.chunk_ms // 1000
        drop_ms = reply.drop_after_ms
        for sent in range(0, len(audio), step):
            if drop_ms is not None and sent >= drop_ms * TELEPHONE_RATE // 1000:
                writer.transport.abort()
                return False
            if sent:
                await asyncio.sleep(reply.chunk_delay_s)
            chunk = audio[sent:sent + step]
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
                 *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        return "\r\n".join(lines).encode("latin-1")
