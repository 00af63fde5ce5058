"""Debian's nginx with the documented config, in front of a test server.

The config is ``docs/nginx/warrantysync.conf``, the one copy that
docs/deployment.md ("4. nginx") shows verbatim. ``render`` changes only its
addresses, ports and certificate paths, and refuses to run when one of them
is no longer written the way it expects, so an edited config can never go
untested by accident. Every ``listen`` moves to a free loopback port (the
IPv6 ones too, so the test needs no IPv6), every upstream server becomes the
one test node, and the certificate is a self-signed one made with openssl.

``NginxServer`` runs a private master process (``daemon off``, its pid file,
logs and temporary files in its own directory, its own process group) and is
stopped through that group, like the servers in tests/servers.py. The
``http {}`` block around the config mirrors what Debian's
``/etc/nginx/nginx.conf`` puts around ``conf.d/*.conf``::

    with NginxServer(upstream="127.0.0.1:8123") as nginx:
        httpx.get(f"https://127.0.0.1:{nginx.port}/healthz", verify=False)
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import httpx

from servers import HOST, _require, _Server, free_port

__all__ = ["DOCUMENTED_CONFIG", "SERVER_NAME", "NginxServer", "render"]

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED_CONFIG = ROOT / "docs" / "nginx" / "warrantysync.conf"
SERVER_NAME = "warranty.example.com"
_CERT_DIR = f"/etc/letsencrypt/live/{SERVER_NAME}"
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def render(
    text: str,
    *,
    upstream: str,
    tls_ports: tuple[int, int],
    http_ports: tuple[int, int],
    certificate: Path,
    key: Path,
) -> str:
    """The documented config with only addresses, ports and certificate paths replaced."""
    substitutions = [
        *((f"server 10.0.0.1{n}:8000 ", f"server {upstream} ") for n in (1, 2, 3)),
        ("listen 443 ssl", f"listen {HOST}:{tls_ports[0]} ssl"),
        ("listen [::]:443 ssl", f"listen {HOST}:{tls_ports[1]} ssl"),
        ("listen 80;", f"listen {HOST}:{http_ports[0]};"),
        ("listen [::]:80;", f"listen {HOST}:{http_ports[1]};"),
        (f"{_CERT_DIR}/fullchain.pem;", f"{certificate};"),
        (f"{_CERT_DIR}/privkey.pem;", f"{key};"),
    ]
    for old, new in substitutions:
        found = text.count(old)
        if found != 1:
            raise ValueError(
                f"{old!r} occurs {found} times in the documented nginx config, not once:"
                " make tests/nginx.py render the config as the docs now write it"
            )
        text = text.replace(old, new)
    return text


def _main_config(directory: Path, include: Path) -> str:
    temp = "\n".join(f"    {name}_temp_path {directory / 'temp' / name};" for name in _TEMP_PATHS)
    return f"""\
daemon off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log stderr notice;

events {{
    worker_connections 1024;
}}

http {{
    # What Debian's /etc/nginx/nginx.conf sets around conf.d/*.conf.
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    gzip on;

    access_log {directory / "access.log"};
{temp}

    include {include};
}}
"""


class NginxServer(_Server):
    """A private nginx (TLS, HTTP/2) with the documented config in front of ``upstream``.

    ``port`` is the TLS port browsers use; ``http_port`` the plain one that
    redirects. The certificate is for ``SERVER_NAME`` and 127.0.0.1.
    """

    name = "nginx"
    # Fast shutdown: SIGQUIT would wait for the open event streams to end.
    stop_signal = signal.SIGTERM

    def __init__(self, *, upstream: str, config: Path = DOCUMENTED_CONFIG) -> None:
        super().__init__()
        self.upstream = upstream
        self.config = config
        self.http_port = 0

    @property
    def certificate(self) -> Path:
        return self.dir / "cert.pem"

    def access_log(self) -> str:
        path = self.dir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _prepare(self) -> None:
        # As root, the workers run as `nobody`: they must reach the temp paths.
        self.dir.chmod(0o755)
        for name in _TEMP_PATHS:
            (self.dir / "temp" / name).mkdir(parents=True)
        key = self.dir / "key.pem"
        self._run_tool(
            [
                _require("openssl"),
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                f"/CN={SERVER_NAME}",
                "-addext",
                f"subjectAltName=DNS:{SERVER_NAME},IP:{HOST}",
                "-keyout",
                str(key),
                "-out",
                str(self.certificate),
            ]
        )
        key.chmod(0o600)  # only the master reads it

    def _command(self) -> list[str]:
        # self.port is fresh on every attempt; the other listeners get fresh ones too.
        self.http_port = free_port()
        include = self.dir / "warrantysync.conf"
        include.write_text(
            render(
                self.config.read_text(),
                upstream=self.upstream,
                tls_ports=(self.port, free_port()),
                http_ports=(self.http_port, free_port()),
                certificate=self.certificate,
                key=self.dir / "key.pem",
            )
        )
        main = self.dir / "nginx.conf"
        main.write_text(_main_config(self.dir, include))
        return [_require("nginx"), "-p", str(self.dir), "-c", str(main), "-e", "stderr"]

    def _answers(self) -> bool:
        # Any HTTP answer over TLS counts: nginx itself answers, whatever the upstream does.
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"https://{HOST}:{self.port}/metrics", verify=False, timeout=1)
            return True
        return False
