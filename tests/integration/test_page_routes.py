"""The page's routes on a real adapter process (in front of the predictor's test double): the page and
its files without a token, the parameter table behind it, and the table's agreement with the schema."""

from __future__ import annotations

import os
import socket
import subprocess

import requests

from contract.params import PARAMETERS
from contract.variants import LANGUAGES, SAMPLE_RATE, VARIANT_NAMES
from scripts.processes import ROOT, adapter_command


def test_page_and_its_files_are_served(adapter):
    page = requests.get(f"{adapter.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="web/app.js"' in page.text and 'href="web/style.css"' in page.text
    for name in ("app.js", "api.js", "player.js", "wav.js", "style.css"):  # app.js imports the other modules
        asset = requests.get(f"{adapter.url}/web/{name}")
        assert asset.status_code == 200 and asset.content, name
    assert requests.get(f"{adapter.url}/web/../adapter/app.py").status_code == 404


def test_parameter_table_is_the_contracts(adapter):
    table = requests.get(f"{adapter.url}/api/parameters").json()
    by_name = {p["name"]: p for p in table["parameters"]}
    numeric = [p for p in PARAMETERS if p.type in (int, float)]
    assert list(by_name) == [p.name for p in numeric]
    for p in numeric:
        sent = by_name[p.name]
        assert (sent["minimum"], sent["maximum"], sent["models"]) == (p.low, p.high, list(p.variants)), p.name
        assert sent["default"] == {model: p.default_for(model) for model in VARIANT_NAMES}, p.name
    # The seed's defaults, as the page shows them.
    assert by_name["top_p"]["default"]["standard"] == 0.95 and by_name["exaggeration"]["models"] == [
        "standard",
        "multilingual",
    ]
    assert table["languages"] == list(LANGUAGES) and table["language_models"] == ["multilingual"]
    assert (
        table["formats"] == ["wav", "pcm_s16le"] and table["default_format"] == "pcm_s16le"
    )  # what Web Audio can play as it streams
    assert table["sample_rate"] == SAMPLE_RATE  # raw PCM carries no rate: the page plays it at this one
    assert table["tags"] == {}  # the predictor's to list (this test double declares none): no tag buttons


def test_with_a_token_the_page_loads_but_its_data_needs_the_token(adapter_factory, adapter_voices_dir):
    guarded = adapter_factory(adapter_voices_dir, API_TOKEN="s3cret")
    assert requests.get(f"{guarded.url}/").status_code == 200
    assert requests.get(f"{guarded.url}/web/app.js").status_code == 200
    refused = requests.get(f"{guarded.url}/api/parameters")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == 401
    allowed = requests.get(f"{guarded.url}/api/parameters", headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200


def test_a_taken_wyoming_port_stops_the_adapter_with_a_message(adapter_voices_dir, predictor_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": "1",  # never reached: start-up fails first
            "PREDICTOR_URL": predictor_url,
            "VOICES_DIR": str(adapter_voices_dir),
            "WYOMING_PORT": str(port),
        }
        result = subprocess.run(
            adapter_command(), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode != 0 and f"cannot listen on WYOMING_PORT {port}" in result.stderr
