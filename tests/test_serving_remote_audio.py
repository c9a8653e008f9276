"""http(s) audio URLs: refused addresses in every spelling, redirects checked at each hop, one error text for every
failure, one deadline for the whole download, and a download pool of its own.

Local HTTP servers on loopback stand in for the internet: loopback is refused unless the test allows it through
`remote_audio_allowed_networks`, as a deployment would allow a private network it trusts.
"""

import http.server
import ipaddress
import socket
import socketserver
import threading

import pytest

pytest.importorskip("fastapi", reason="serving needs fastapi (pip install -e '.[dev]')")
from fastapi.testclient import TestClient  # noqa: E402

from speechllm.errors import ConfigError  # noqa: E402
from speechllm.serving import ServerConfig, create_app  # noqa: E402
from speechllm.serving.remote_audio import UNREACHABLE, public_address  # noqa: E402
from speechllm.testing import tiny_model  # noqa: E402
from tests.test_serving import audio_part, chat_body, wav_bytes  # noqa: E402

CLIP = wav_bytes(0.5)


class _Files(http.server.BaseHTTPRequestHandler):
    """/clip.wav: a clip; /to?URL: a 302 to URL; anything else 404. Counts the requests it gets."""

    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path == "/clip.wav":
            self.send_response(200)
            self.send_header("Content-Length", str(len(CLIP)))
            self.end_headers()
            self.wfile.write(CLIP)
        elif self.path.startswith("/to?"):
            self.send_response(302)
            self.send_header("Location", self.path[4:])
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


class _Drip(socketserver.BaseRequestHandler):
    """Promises a large body, then sends one byte every 0.1 s until the server's `stop` event is set."""

    def handle(self):
        self.server.hits.append(1)
        self.request.recv(65536)
        try:
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            while not self.server.stop.wait(0.1):
                self.request.sendall(b"\0")
        except OSError:
            pass


def _serve(server):
    server.daemon_threads, server.hits, server.stop = True, [], threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def files():
    server = _serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files))
    yield server
    server.shutdown()


@pytest.fixture
def drip():
    server = _serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Drip))
    yield server
    server.stop.set()
    server.shutdown()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _client(model, **settings):
    config = ServerConfig(model_name="tiny", allow_remote_audio_urls=True, max_tokens_limit=8,
                          default_max_tokens=2, **settings)
    return TestClient(create_app(model, config))


def _ask(client, url):
    return client.post("/v1/chat/completions", json=chat_body({"type": "audio_url", "audio_url": {"url": url}},
                                                              max_tokens=2))


def test_a_url_inside_an_allowed_network_is_fetched_and_redirects_are_followed(model, files):
    base = f"http://127.0.0.1:{files.server_port}"
    with _client(model, remote_audio_allowed_networks=["127.0.0.0/8"]) as c:
        assert _ask(c, base + "/clip.wav").status_code == 200
        r = _ask(c, f"{base}/to?{base}/clip.wav")
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "0x7f000001", "2130706433", "[::ffff:127.0.0.1]",
                                  "[::1]", "0.0.0.0", "[::]", "10.0.0.1", "192.168.1.1", "169.254.169.254",
                                  "[fe80::1]", "224.0.0.1", "240.0.0.1"])
def test_local_private_and_reserved_addresses_are_refused_in_every_spelling(model, files, host):
    files.hits.clear()
    with _client(model) as c:
        r = _ask(c, f"http://{host}:{files.server_port}/clip.wav")
    assert r.status_code == 400 and r.json()["error"]["message"].endswith(UNREACHABLE)
    assert files.hits == []  # refused before connecting


def test_every_hop_of_a_redirect_is_checked(model, files):
    """Only 127.0.0.1 is allowed: a redirect from it to 127.0.0.2 (the same loopback, another address) or to the
    metadata service is refused, and nothing is fetched from there."""
    other = _serve(http.server.ThreadingHTTPServer(("127.0.0.2", 0), _Files))
    base = f"http://127.0.0.1:{files.server_port}"
    try:
        with _client(model, remote_audio_allowed_networks=["127.0.0.1/32"]) as c:
            for target in (f"http://127.0.0.2:{other.server_port}/clip.wav", "http://169.254.169.254/latest/meta-data/"):
                r = _ask(c, f"{base}/to?{target}")
                assert r.status_code == 400 and r.json()["error"]["message"].endswith(UNREACHABLE)
            assert _ask(c, f"{base}/to?{base}/to?{base}/to?{base}/to?{base}/clip.wav").status_code == 400  # 4 hops
    finally:
        other.shutdown()
    assert other.hits == []


def test_every_failure_reads_the_same_so_ports_cannot_be_scanned(model, files):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    urls = [f"http://127.0.0.1:{files.server_port}/missing.wav",  # a 404 from a live server
            f"http://127.0.0.1:{closed.getsockname()[1]}/clip.wav",  # nothing listens
            f"http://10.255.255.1:{files.server_port}/clip.wav",  # outside the allowed network
            "http://no-such-host.invalid/clip.wav"]  # does not resolve
    with _client(model, remote_audio_allowed_networks=["127.0.0.0/8"]) as c:
        messages = {_ask(c, url).json()["error"]["message"] for url in urls}
    closed.close()
    assert messages == {f"messages[0].content[0].audio_url: {UNREACHABLE}"}


def test_a_slow_drip_download_ends_at_the_deadline(model, drip):
    result = []
    with _client(model, remote_audio_allowed_networks=["127.0.0.0/8"], remote_audio_timeout_s=1) as c:
        thread = threading.Thread(target=lambda: result.append(_ask(c, f"http://127.0.0.1:{drip.server_address[1]}/")))
        thread.start()
        thread.join(20)  # the drip would go on for as long as the server runs: only the deadline ends it
        finished = not thread.is_alive()
        drip.stop.set()
        thread.join(20)
    assert finished and result[0].status_code == 400 and result[0].json()["error"]["message"].endswith(UNREACHABLE)


def test_hanging_downloads_do_not_delay_other_requests(model, drip):
    """Eight downloads hang (more than the default thread pool's six threads on two cores); a request with its
    audio inline is decoded and answered while they still hang."""
    url, downloads, other = f"http://127.0.0.1:{drip.server_address[1]}/", [], []
    with _client(model, remote_audio_allowed_networks=["127.0.0.0/8"], remote_audio_timeout_s=60,
                 max_concurrent_downloads=2) as c:
        threads = [threading.Thread(target=lambda: downloads.append(_ask(c, url))) for _ in range(8)]
        [t.start() for t in threads]
        while len(drip.hits) < 2:  # the downloads are under way
            threading.Event().wait(0.05)
        inline = threading.Thread(target=lambda: other.append(c.post("/v1/chat/completions", json=chat_body(
            audio_part(wav_bytes(0.5)), max_tokens=2))))
        inline.start()
        inline.join(30)
        answered_while_hanging = bool(other) and not downloads
        drip.stop.set()
        [t.join(30) for t in threads]
    assert answered_while_hanging and other[0].status_code == 200
    assert [r.json()["error"]["message"].endswith(UNREACHABLE) for r in downloads] == [True] * 8


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False), ("10.1.2.3", False),
    ("172.16.0.1", False), ("100.64.0.1", False), ("169.254.169.254", False), ("224.0.0.1", False),
    ("255.255.255.255", False), ("0.0.0.0", False), ("::1", False), ("::", False), ("fe80::1", False),
    ("fc00::1", False), ("ff02::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
    ("2002:7f00:1::", False), ("64:ff9b::7f00:1", False)])
def test_public_address(address, public):
    assert public_address(ipaddress.ip_address(address)) is public


def test_allowed_networks_must_be_networks():
    with pytest.raises(ConfigError, match="remote_audio_allowed_networks"):
        ServerConfig(remote_audio_allowed_networks=["not a network"])
