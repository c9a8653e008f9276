"""http(s) audio URLs (off unless `allow_remote_audio_urls`), fetched so that a client cannot aim the server at
what it should not reach.

- The host is resolved once and every address it resolves to is checked: loopback, private, link-local,
  multicast, unspecified and reserved addresses are refused unless inside `remote_audio_allowed_networks`.
  Spellings such as 127.1 or 0x7f000001 resolve to what they mean; IPv6 forms that carry an IPv4 address
  (::ffff:127.0.0.1, 6to4, Teredo) are checked as that address too (Python counts NAT64 as not global: refused).
- The connection goes to the address that was checked, never to a second lookup a rebinding DNS server could
  answer differently; https still verifies the certificate against the host name.
- Each redirect (at most MAX_REDIRECTS) is a new URL, checked the same way.
- One deadline covers the whole fetch, redirects included (`remote_audio_timeout_s`): a watchdog closes the
  socket when it passes, however slowly the server drips bytes.
- Downloads run on their own bounded thread pool (`max_concurrent_downloads`), so slow ones never hold up the
  threads that decode audio for other requests.
- Every refused or failed fetch answers the same text (the server log has the reason), so the server cannot be
  used to tell open ports, closed ports and filtered hosts apart.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin, urlsplit

from .config import ServerConfig
from .errors import APIError

log = logging.getLogger("speechllm.serving")

MAX_REDIRECTS = 3
UNREACHABLE = "the audio URL could not be fetched; send the audio as input_audio (base64) instead"
_REDIRECTS = {301, 302, 303, 307, 308}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


class Refused(Exception):
    """Why a fetch was refused or failed: for the server log, never for the client."""


class TooLarge(Exception):
    pass


async def fetch_remote_audio(url: str, config: ServerConfig, where: str) -> bytes:
    """The bytes at an http(s) `url`, within `config.remote_audio_timeout_s` in all; 400 with one generic text
    when refused or failed, 413 when larger than `max_body_bytes`."""
    deadline = time.monotonic() + config.remote_audio_timeout_s
    loop = asyncio.get_running_loop()
    job = loop.run_in_executor(download_pool(config.max_concurrent_downloads), _fetch, url, config, deadline)
    try:  # also ends a download still queued behind others at the deadline (the queued job is then cancelled)
        return await asyncio.wait_for(job, config.remote_audio_timeout_s)
    except TooLarge:
        raise APIError(413, f"{where}: the audio at this URL is larger than {config.max_body_bytes} bytes",
                       "audio_too_large", where) from None
    except (Refused, OSError, ValueError, http.client.HTTPException, TimeoutError) as e:
        log.info("audio URL %r not fetched: %s", url, e or type(e).__name__)
        raise APIError(400, f"{where}: {UNREACHABLE}", "audio_url_unreachable", where) from None


def download_pool(size: int) -> ThreadPoolExecutor:
    """The process's pool of `size` download threads (created on first use, shared by apps of the same size)."""
    with _pools_lock:
        if size not in _pools:
            _pools[size] = ThreadPoolExecutor(size, thread_name_prefix="speechllm-download")
        return _pools[size]


def public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `ip`, and any IPv4 address it carries, is a public unicast address."""
    carried = [ip]
    if ip.version == 6:
        teredo = ip.teredo[1] if ip.teredo else None
        nat64 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        carried += [a for a in (ip.ipv4_mapped, ip.sixtofour, teredo, nat64) if a is not None]
    return all(a.is_global and not (a.is_multicast or a.is_reserved or a.is_unspecified or a.is_loopback
                                    or a.is_link_local or a.is_private) for a in carried)


def checked_address(host: str, port: int, allowed_networks: list[str]) -> str:
    """The address to connect to for `host`: every address it resolves to must be public or inside one of
    `allowed_networks`; Refused otherwise."""
    networks = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise Refused(f"cannot resolve {host!r} ({e})") from None
    addresses = [ipaddress.ip_address(info[4][0].partition("%")[0]) for info in infos]
    refused = [str(a) for a in addresses if not (public_address(a) or any(a in n for n in networks))]
    if refused or not addresses:
        raise Refused(f"{host!r} resolves to {refused or 'nothing'}, which is not a public address")
    return str(addresses[0])


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to `address` (already checked) that names `host` in its Host header and TLS checks."""

    def __init__(self, host: str, port: int, address: str, tls: bool, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address, self.tls, self.default_port = address, tls, 443 if tls else 80

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host) if self.tls else sock

    def abort(self):
        """Called by the watchdog at the deadline: wakes any blocked read or handshake with an error."""
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _fetch(url: str, config: ServerConfig, deadline: float) -> bytes:
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _get(url, config, deadline)
        if status in _REDIRECTS and location:
            url = urljoin(url, location)  # checked like the first URL on the next round
            continue
        if status != 200:
            raise Refused(f"HTTP {status}")
        return body
    raise Refused(f"more than {MAX_REDIRECTS} redirects")


def _get(url: str, config: ServerConfig, deadline: float) -> tuple[int, str | None, bytes]:
    """(status, Location header, body) of one GET; the body only for a 200."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    address = checked_address(parts.hostname, port, config.remote_audio_allowed_networks)
    left = deadline - time.monotonic()
    if left <= 0:
        raise Refused("the deadline passed")
    connection = _PinnedConnection(parts.hostname, port, address, scheme == "https", timeout=left)
    watchdog = threading.Timer(left, connection.abort)
    watchdog.start()
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", path, headers={"Accept": "audio/*", "User-Agent": "speechllm"})
        response = connection.getresponse()
        if response.status != 200:
            return response.status, response.getheader("location"), b""
        declared = response.getheader("content-length", "")
        if declared.isdigit() and int(declared) > config.max_body_bytes:
            raise TooLarge
        chunks, size = [], 0
        while chunk := response.read1(64 * 1024):
            chunks.append(chunk)
            size += len(chunk)
            if size > config.max_body_bytes:
                raise TooLarge
        if time.monotonic() > deadline:  # the watchdog cut it: what arrived is not the whole file
            raise Refused("the deadline passed")
        if declared.isdigit() and size != int(declared):  # read1 ends quietly when the server closes early
            raise Refused(f"the server sent {size} of {declared} bytes")
        return 200, None, b"".join(chunks)
    finally:
        watchdog.cancel()
        connection.close()
