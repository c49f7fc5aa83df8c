import urllib.request

import pytest

pytestmark = pytest.mark.server


def test_a_real_daphne_serves_the_start_page(daphne_server):
    with urllib.request.urlopen(daphne_server.url + "/", timeout=5) as response:
        assert response.status == 200
        assert "no-store" in response.headers["Cache-Control"]


def test_a_frame_over_the_limit_gets_a_typed_error_and_the_socket_stays_open(daphne_server):
    import json

    from websockets.sync.client import connect

    from realtime.sockets import MAX_FRAME_BYTES

    with connect(
        daphne_server.ws_url + "/ws/chat/", origin=daphne_server.url, open_timeout=5
    ) as socket:
        socket.send(json.dumps({"type": "ping", "pad": "x" * (MAX_FRAME_BYTES + 100)}))
        error = json.loads(socket.recv(timeout=5))
        assert (error["type"], error["code"]) == ("error", "frame_too_large")
        socket.send(json.dumps({"type": "ping"}))
        assert json.loads(socket.recv(timeout=5))["type"] == "pong"
