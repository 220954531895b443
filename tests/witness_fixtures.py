"""Witnesses for the tests, all on 127.0.0.1: ours (``cpl-verify witness serve``, a real process), a
third-party C2SP witness (the ``witness-log`` package behind a small HTTP server, as its notes ask), and
scripted servers that misbehave in the ways the publisher's client must survive."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import witness_log

from publisher.demo import Witness, start_witness, stop_witness
from verifier.cpl_verify import Verifier

Answer = tuple[int, str, bytes]  # status, content type, body


@dataclass
class Served:
    """A witness served in this process: its URL (the submission prefix), its key, and the server."""

    url: str
    verifier: Verifier
    server: http.server.ThreadingHTTPServer
    requests: list[bytes]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(respond: Callable[[bytes], Answer], verifier: Verifier) -> Served:
    """An HTTP server on 127.0.0.1 answering ``POST /add-checkpoint`` with ``respond(body)``."""
    seen: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as our witness: no delayed-ACK wait between headers and body

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append(body)
            status, ctype, data = respond(body) if self.path == "/add-checkpoint" else (404, "text/plain", b"")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Served(f"http://127.0.0.1:{server.server_address[1]}", verifier, server, seen)


def serve_witness_log(state: Path, key_name: str, log: Verifier) -> Served:
    """The third-party witness: ``witness_log.WitnessService`` (its state in ``state``) witnessing ``log``."""
    if not state.exists():
        witness_log.WitnessService.create_state(str(state))
    service = witness_log.WitnessService.new(key_name, os.urandom(32), str(state))
    service.add_log(log.name, log.vkey)

    def respond(body: bytes) -> Answer:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return 400, "text/plain", b"not UTF-8\n"
        status, ctype, answer = service.handle_add_checkpoint_http(text)
        return int(status), str(ctype), str(answer).encode()

    return serve(respond, Verifier.from_vkey(service.vkey()))


@pytest.fixture
def our_witnesses(tmp_path: Path) -> Iterator[Callable[[str, Verifier], Witness]]:
    """Start ``cpl-verify witness serve`` processes (name, log key) in ``tmp_path``; all stopped at the end."""
    running: list[Witness] = []

    def start(name: str, log: Verifier) -> Witness:
        w = start_witness(name, f"{name}.test/witness", tmp_path / "witnesses" / name, log)
        running.append(w)
        return w

    yield start
    for w in running:
        stop_witness(w)
