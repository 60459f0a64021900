"""Bad input and failing workflows: each gets the one error shape and the instance stays healthy."""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import ApiHarness
from tests.support import workflows as wf

pytestmark = pytest.mark.integration


def _error(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error_code"] == code
    assert body["error_message"]
    assert body["request_id"]
    assert "Traceback" not in response.text
    return dict(body)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "EMPTY_BODY"),
        (b"{not json", "INVALID_JSON"),
        (b"[1, 2]", "INVALID_WORKFLOW"),
        (b'{"hello": "world"}', "INVALID_WORKFLOW"),
        (b'{"prompt": [1]}', "INVALID_WORKFLOW"),
        (b'{"1": {"inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {}}}', "INVALID_WORKFLOW"),
        (b'{"nodes": [], "links": [], "version": 0.4}', "UI_FORMAT_WORKFLOW"),
        (b'{"prompt": {"nodes": [{"id": 1}], "links": []}}', "UI_FORMAT_WORKFLOW"),
    ],
    ids=["empty", "not-json", "array", "no-workflow", "prompt-not-object", "no-class-type",
         "ui-format", "ui-format-wrapped"],
)
def test_bad_body_rejected(api: ApiHarness, body: bytes, code: str) -> None:
    _error(api.run(body), 400, code)


def test_no_delivery_rejected(api: ApiHarness) -> None:
    body = _error(api.run(wf.image_save(), query="?output_oss=false"), 400, "NO_OUTPUT_DELIVERY")

    assert "output_base64=true" in body["error_message"]


def test_ui_format_message_says_export_api(api: ApiHarness) -> None:
    body = _error(api.run({"nodes": [], "links": []}), 400, "UI_FORMAT_WORKFLOW")

    assert "Export (API)" in body["error_message"]


def test_invalid_flag_value(api: ApiHarness) -> None:
    body = _error(api.run(wf.image_save(), query="?output_base64=maybe"), 400, "INVALID_PARAMETER")

    assert body["details"] == {"parameter": "output_base64", "value": "maybe"}


def test_escaping_prefix_rejected(api: ApiHarness) -> None:
    body = _error(api.run(wf.image_save(prefix="../escape")), 400, "INVALID_WORKFLOW")

    assert body["details"]["node_id"] == "2"


def test_validation_error_passes_node_errors(api: ApiHarness) -> None:
    workflow = wf.image_save(width=-5)

    body = _error(api.run(workflow), 400, "WORKFLOW_VALIDATION_FAILED")

    [node_error] = body["details"]["node_errors"]
    assert node_error["node_id"] == "1"
    assert node_error["class_type"] == "EmptyImage"
    assert node_error["input_name"] == "width"
    assert node_error["type"] == "value_smaller_than_min"
    assert node_error["received_value"] == -5
    assert "width" in body["error_message"]


def test_wrong_input_type(api: ApiHarness) -> None:
    workflow = wf.image_save()
    workflow["1"]["inputs"]["width"] = "abc"

    body = _error(api.run(workflow), 400, "WORKFLOW_VALIDATION_FAILED")

    [node_error] = body["details"]["node_errors"]
    assert node_error["type"] == "invalid_input_type"
    assert node_error["input_name"] == "width"
    assert node_error["received_value"] == "abc"


def test_missing_input_file_lists_existing(api: ApiHarness) -> None:
    (api.input_dir / "present.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "does_not_exist.png"}},
        "2": wf.save_image("1"),
    }

    body = _error(api.run(workflow), 400, "WORKFLOW_VALIDATION_FAILED")

    [node_error] = body["details"]["node_errors"]
    assert node_error["class_type"] == "LoadImage"
    assert node_error["input_name"] == "image"
    assert "present.png" in node_error["available"]
    assert "present.png" in body["error_message"]


def test_missing_checkpoint_lists_available(api: ApiHarness) -> None:
    checkpoints = api.nas_root / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "exists.safetensors").write_bytes(b"")
    workflow = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}},
        "2": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": wf.save_image("2"),
    }

    body = _error(api.run(workflow), 400, "WORKFLOW_VALIDATION_FAILED")

    errors = [e for e in body["details"]["node_errors"] if e["input_name"] == "ckpt_name"]
    assert errors[0]["node_id"] == "1"
    assert errors[0]["type"] == "value_not_in_list"
    assert errors[0]["available"] == ["exists.safetensors", "funart-test-sd15.safetensors"]
    assert "funart-test-sd15.safetensors" in body["error_message"]


def test_unknown_node_named(api: ApiHarness) -> None:
    workflow = {"1": {"class_type": "NoSuchNode", "inputs": {}}, "2": wf.save_image("1")}

    body = _error(api.run(workflow), 400, "UNKNOWN_NODE_CLASS")

    assert body["details"] == {"node_id": "1", "class_type": "NoSuchNode"}
    assert "NoSuchNode" in body["error_message"]


def test_no_output_node(api: ApiHarness) -> None:
    workflow = {"1": wf.empty_image()}

    body = _error(api.run(workflow), 400, "INVALID_WORKFLOW")

    assert "no output node" in body["error_message"]


def test_execution_error_names_node(api: ApiHarness) -> None:
    body = _error(api.run(wf.failing("exploded on purpose")), 500, "EXECUTION_FAILED")

    assert body["details"] == {
        "node_id": "2",
        "node_type": "FunartTestFail",
        "exception_type": "ValueError",
        "exception_message": "exploded on purpose",
    }
    assert "traceback" not in json.dumps(body).lower()


def test_invoke_failure_sets_fc_status(api: ApiHarness) -> None:
    response = requests.post(f"{api.url}/invoke", data=b"{broken", timeout=30)

    body = _error(response, 400, "INVALID_JSON")
    assert response.headers["x-fc-status"] == "404"
    assert body["request_id"]


def test_unknown_route_uses_error_shape(api: ApiHarness) -> None:
    _error(requests.get(f"{api.url}/no/such/route", timeout=10), 404, "NOT_FOUND")


def test_instance_healthy_after_errors(api: ApiHarness) -> None:
    _error(api.run(wf.failing()), 500, "EXECUTION_FAILED")

    response = api.run(wf.image_save())

    assert response.status_code == 200, response.text
    assert api.health()["comfyui"] == "ready"
