"""A real S3 server on 127.0.0.1 for tests: moto's server app behind werkzeug, counting requests."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server


@dataclass
class S3Server:
    """moto's S3 on a free loopback port; `requests` counts (method, path) of every request served."""

    requests: Counter = field(default_factory=Counter)

    def start(self) -> S3Server:
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ, start_response):
            self.requests[(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))] += 1
            return app(environ, start_response)

        self._server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=_Quiet)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)

    def count(self, method: str | None = None, contains: str = "") -> int:
        return sum(n for (m, path), n in self.requests.items() if (method is None or m == method) and contains in path)


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        return None
