"""Run the server: load the model once, then serve the API with uvicorn until SIGINT or SIGTERM.

On either signal uvicorn stops taking requests and lets those in flight finish for the grace
period; what is still running then is cancelled at its next token, the ranks leave their process
group, and the command exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
import sys

from ..errors import UsageError
from .api import Limits, create_app, log


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int, api_key: str | None) -> None:
    """Before the model loads: the address can be bound, and a non-loopback one has an API key."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, got {port}")
    if not is_loopback(host) and not api_key:
        raise UsageError(f"--host {host} is reachable from other machines: set --api-key (or STARCLI_API_KEY) too")
    try:
        with socket.create_server((host, port)) if port else socket.create_server((host, 0)):
            pass
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(resident, host: str, port: int, api_key: str | None, limits: Limits) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            for listener in self.servers:
                for sock in listener.sockets:
                    bound_host, bound_port = sock.getsockname()[:2]
                    print(f"starcli: serving {resident.name} on http://{_url_host(bound_host)}:{bound_port} "
                          f"({resident.world} rank(s)); Ctrl-C stops", file=sys.stderr, flush=True)

        @contextlib.contextmanager
        def capture_signals(self):
            # a stop asked for by SIGINT or SIGTERM is the server's normal end: exit 0, not the
            # signal raised again once the requests in flight are done
            before = {sig: signal.signal(sig, self.stop_on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in before.items():
                    signal.signal(sig, handler)

        def stop_on_signal(self, sig, frame) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop waiting for requests in flight
            elif not self.should_exit:
                log(f"stopping: requests in flight have {limits.shutdown_grace_s:g} s to finish")
                # on the event loop's thread (signal handlers run there): after the grace period the
                # requests still running are cancelled and end their streams with an error
                asyncio.get_event_loop().call_later(limits.shutdown_grace_s, app.state.stop_requests)
            self.should_exit = True

    app = create_app(resident, limits, api_key)
    # uvicorn's own deadline only backs ours up: its cancellation would cut streams mid-line
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=limits.shutdown_grace_s + 30, lifespan="on")
    Server(config).run()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
