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


@pytest.mark.parametrize("route", ["/ws/chat/", "/ws/advisor/"])
def test_a_socket_from_another_port_of_the_same_host_is_refused_with_403(daphne_server, route):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    other_port = f"http://127.0.0.1:{daphne_server.port + 1}"
    with pytest.raises(InvalidStatus) as refused:
        connect(daphne_server.ws_url + route, origin=other_port, open_timeout=5)
    assert refused.value.response.status_code == 403
    if route == "/ws/chat/":  # the advisor's needs a session besides
        with connect(daphne_server.ws_url + route, origin=daphne_server.url, open_timeout=5):
            pass
