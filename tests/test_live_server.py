import urllib.request

import pytest

pytestmark = pytest.mark.server


def test_a_real_daphne_serves_the_start_page(daphne_server):
    with urllib.request.urlopen(daphne_server.url + "/", timeout=5) as response:
        assert response.status == 200
        assert "no-store" in response.headers["Cache-Control"]
