"""A reverse proxy on 127.0.0.1 that answers as nginx does when its upstream fails: an
HTML 504 when the upstream takes longer than ``read_timeout`` (the upstream goes on with
the request), an HTML 502 when nothing listens upstream.  Standard library only."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _page(status: int, title: str) -> bytes:
    return (
        f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


class Gateway:
    def __init__(self, upstream_port: int, *, read_timeout: float = 30.0):
        self.upstream_port = upstream_port
        self.read_timeout = read_timeout
        #: (path, status) of every answer given, the gateway's own included.
        self.answers: list[tuple[str, int]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (name fixed by http.server)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream = http.client.HTTPConnection(
                    "127.0.0.1", gateway.upstream_port, timeout=gateway.read_timeout
                )
                try:
                    upstream.request("POST", self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    status, content = answer.status, answer.read()
                    answer_headers = [
                        (k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP
                    ]
                except ConnectionRefusedError:
                    status, content, answer_headers = 502, _page(502, "Bad Gateway"), []
                except TimeoutError:
                    status, content = 504, _page(504, "Gateway Time-out")
                    answer_headers = []
                finally:
                    upstream.close()
                if not answer_headers:
                    answer_headers = [("Content-Type", "text/html")]
                gateway.answers.append((self.path, status))
                self.send_response(status)
                for name, value in answer_headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format, *args) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Gateway:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def statuses(self, path_end: str) -> list[int]:
        """The statuses answered on ``path_end``, the door probes' 204 left out."""
        return [
            status for path, status in self.answers if path.endswith(path_end) and status != 204
        ]
