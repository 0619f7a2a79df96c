"""`purifylab serve`: the Gradio app (gradio_app.py, outside core: the engine holds no UI code)."""

from __future__ import annotations

import errno
import socket
from typing import Annotated

import typer

from core.cli import set_threads
from core.cli.options import DeviceDefaultCpu, Threads
from core.cli.preflight import use_device
from core.errors import PurifyLabError, check_range


def check_listen(host: str, port: int) -> None:
    """Bind the address once before gradio starts, so a bad --host or a busy --port is one line that
    says which (gradio reports both as a busy port range, with advice for its Python API)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise PurifyLabError(f"--host '{host}' is not a valid address or known host name") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is not busy
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PurifyLabError(f"port {port} is in use on {host}; pass another --port") from None
            raise PurifyLabError(f"cannot listen on --host {host} --port {port}: {error.strerror}") from None


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("serve")
    def serve(
        host: Annotated[str, typer.Option("--host", help="address to listen on (0.0.0.0 for every interface)")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="TCP port")] = 7860,
        concurrency: Annotated[int, typer.Option("--concurrency", help="requests computed at once; the rest wait in the queue")] = 2,
        threads: Threads = None,
        device: DeviceDefaultCpu = None,
    ) -> None:
        """Serve classify / attack / purify in a browser and as an API for gradio_client (queued)."""
        check_range("--port", port, 1, 65535)
        check_range("--concurrency", concurrency, 1, 64)
        check_listen(host, port)
        placement = use_device(device)
        set_threads(threads)
        try:
            from gradio_app import launch
        except ModuleNotFoundError as error:
            if error.name != "gradio_app":
                raise
            raise PurifyLabError("gradio_app.py is not importable: run `purifylab serve` from the repository root") from None
        launch(host, port, concurrency, device=placement)
