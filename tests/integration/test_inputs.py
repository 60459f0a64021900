"""Loader inputs as URLs, oss:// objects and base64, staged per job on real ComfyUI."""

from __future__ import annotations

import base64
import concurrent.futures
import copy
import http.server
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import oss2
import pytest

from tests.conftest import ApiHarness
from tests.support import media
from tests.support import workflows as wf

pytestmark = pytest.mark.integration

NAME = "my image 图.png"


class FileServer:
    """Serves test files on 127.0.0.1, with redirects and bad responses on purpose."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {
            "/images/" + NAME: (media.png_bytes(21, 13), "image/png"),
            "/page.html": (b"<html>not an image</html>", "text/html"),
            "/big.bin": (b"\0" * 4096, "application/octet-stream"),
        }
        files = self.files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = unquote(self.path)
                if path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/images/" + quote(NAME))
                    self.end_headers()
                    return
                if path.startswith("/loop"):
                    self.send_response(302)
                    self.send_header("Location", "/loop")
                    self.end_headers()
                    return
                if path not in files:
                    self.send_error(404)
                    return
                body, kind = files[path]
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.server.shutdown()


def measure(image: str) -> dict[str, Any]:
    """LoadImage → GetImageSize → PreviewAny: the text result is the loaded width."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
    }


def loaded_size(api: ApiHarness, image: str) -> tuple[int, int]:
    response = api.run(measure(image))
    assert response.status_code == 200, response.text
    texts = [entry["output"]["raw"]["text"] for entry in response.json()["data"]["results"]]
    return int(texts[0]), int(texts[1])


@pytest.mark.parametrize(
    "path", ["/images/" + NAME, "/images/" + quote(NAME), "/redirect"],
    ids=["raw-spaces-unicode", "percent-encoded", "redirect"],
)
def test_url_input(api: ApiHarness, files: FileServer, path: str) -> None:
    assert loaded_size(api, files.base + path) == (21, 13)


def test_base64_and_data_uri(api: ApiHarness) -> None:
    raw = base64.b64encode(media.png_bytes(17, 9)).decode()

    assert loaded_size(api, raw) == (17, 9)
    assert loaded_size(api, "data:image/png;base64," + raw) == (17, 9)


def test_oss_input(api: ApiHarness, bucket: oss2.Bucket) -> None:
    bucket.put_object("inputs/source.png", media.png_bytes(11, 7))

    assert loaded_size(api, "oss://funart-test/inputs/source.png") == (11, 7)


def test_concurrent_jobs_see_own_input(api: ApiHarness) -> None:
    sizes = [(10 + index, 5 + index) for index in range(6)]

    def one(size: tuple[int, int]) -> tuple[int, int]:
        return loaded_size(api, base64.b64encode(media.png_bytes(*size)).decode())

    with concurrent.futures.ThreadPoolExecutor(len(sizes)) as pool:
        assert list(pool.map(one, sizes)) == sizes


def test_staged_inputs_removed(api: ApiHarness) -> None:
    loaded_size(api, base64.b64encode(media.png_bytes(8, 8)).decode())

    assert not [p for p in api.input_dir.iterdir() if p.name.startswith("funart-")]


@pytest.mark.parametrize(
    ("image", "code"),
    [
        ("A" * 70 + "!!!", "INVALID_BASE64"),
        ("data:image/png;base64,@@@@" + "A" * 80, "INVALID_BASE64"),
        ("data:image/png,notbase64" + "A" * 80, "INVALID_BASE64"),
        ("../secret.png", "INVALID_INPUT_PATH"),
        ("/etc/passwd", "INVALID_INPUT_PATH"),
        ("sub/../../x.png", "INVALID_INPUT_PATH"),
        ("oss://", "INVALID_INPUT_URL"),
        ("ftp://example.com/x.png", "INVALID_INPUT_URL"),
        ("oss://funart-test/inputs/missing.png", "INPUT_FETCH_FAILED"),
    ],
)
def test_bad_inputs(api: ApiHarness, image: str, code: str) -> None:
    response = api.run(measure(image))

    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == code
    assert response.json()["details"].get("node_id", "1") == "1"


@pytest.mark.parametrize(
    ("path", "code"),
    [("/page.html", "INPUT_TYPE_INVALID"), ("/missing.png", "INPUT_FETCH_FAILED"),
     ("/loop", "INPUT_FETCH_FAILED")],
)
def test_bad_urls(api: ApiHarness, files: FileServer, path: str, code: str) -> None:
    response = api.run(measure(files.base + path))

    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == code


def test_seed_minus_one_randomized(api: ApiHarness) -> None:
    workflow = copy.deepcopy(wf.example("txt2img.json"))
    workflow["3"]["inputs"]["seed"] = -1

    first = api.run(workflow, timeout=300)
    second = api.run(workflow, timeout=300)

    assert first.status_code == 200, first.text
    seeds = [r.json()["data"]["seeds"]["3"]["seed"] for r in (first, second)]
    assert all(isinstance(seed, int) and seed >= 0 for seed in seeds)
    assert seeds[0] != seeds[1]


def test_link_to_missing_node(api: ApiHarness) -> None:
    response = api.run({"1": wf.empty_image(), "2": wf.save_image("99")})

    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "INVALID_WORKFLOW"
    assert body["details"] == {"node_id": "2", "input_name": "images", "missing_node": "99"}


def test_preview_only_reports_no_outputs(api: ApiHarness) -> None:
    workflow = {"1": wf.empty_image(), "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}

    response = api.run(workflow)

    assert response.status_code == 422, response.text
    assert response.json()["error_code"] == "NO_OUTPUTS"
    assert "output_temp=true" in response.json()["error_message"]
