"""Workflows run end to end on real ComfyUI, outputs delivered to OSS (moto) and inline."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import uuid

import oss2
import pytest
import requests

from tests.conftest import ApiHarness
from tests.support import media
from tests.support import workflows as wf

pytestmark = pytest.mark.integration


def _results(response: requests.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["type"] == "serverless_api"
    return list(document["data"]["results"])


def test_demo_workflow_two_outputs_in_oss(api: ApiHarness, bucket: oss2.Bucket) -> None:
    response = api.run(wf.example("image-invert-blur.json"), headers={"x-fc-request-id": "req-demo-1"})
    results = _results(response)

    assert [entry["node_id"] for entry in results] == ["4", "5"]
    assert response.json()["data"]["task_id"] == "req-demo-1"
    for entry in results:
        output = entry["output"]
        assert output["type"] == "images"
        assert output["raw"]["type"] == "output"
        assert output["base64"]["content"] is None
        key = output["oss"]["object"]
        assert key.startswith("funart/tasks/req-demo-1/")
        assert key.endswith(".png")
        stored = bucket.get_object(key)
        assert stored.headers["Content-Type"] == "image/png"
        assert media.png_size(stored.read()) == (256, 256)
        fetched = requests.get(output["oss"]["url"], timeout=10)
        assert fetched.status_code == 200
        assert media.png_size(fetched.content) == (256, 256)


def test_job_files_removed_after_upload(api: ApiHarness) -> None:
    results = _results(api.run(wf.image_save(prefix="cleanup/img")))

    job_folder = results[0]["output"]["raw"]["subfolder"].split("/")[0]
    assert job_folder.startswith("funart-")
    assert not (api.output_dir / job_folder).exists()


def test_base64_inline_without_oss(api: ApiHarness) -> None:
    results = _results(api.run(wf.image_save(40, 30), query="?output_base64=true&output_oss=false"))

    assert len(results) == 1
    output = results[0]["output"]
    assert output["oss"] is None
    assert media.png_size(base64.b64decode(output["base64"]["content"])) == (40, 30)


def test_preview_excluded_unless_requested(api: ApiHarness) -> None:
    workflow = {
        "1": wf.empty_image(32, 32, batch=2),
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "3": wf.save_image("1", "preview/saved"),
    }

    default = _results(api.run(workflow))
    with_temp = _results(api.run(workflow, query="?output_temp=true"))

    assert [(e["node_id"], e["batch_id"]) for e in default] == [("3", 0), ("3", 1)]
    temp = [e for e in with_temp if e["output"]["raw"]["type"] == "temp"]
    assert [(e["node_id"], e["batch_id"]) for e in temp] == [("2", 0), ("2", 1)]
    assert all("/2/temp/" in e["output"]["oss"]["object"] for e in temp)


def test_audio_output_is_flac(api: ApiHarness, bucket: oss2.Bucket) -> None:
    name = f"tone-{uuid.uuid4().hex[:8]}.wav"
    (api.input_dir / name).write_bytes(media.wav_tone())
    workflow = {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": name}},
        "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "audio/t"}},
    }

    results = _results(api.run(workflow))

    assert len(results) == 1
    output = results[0]["output"]
    assert output["type"] == "audio"
    assert output["raw"]["filename"].endswith(".flac")
    stored = bucket.get_object(output["oss"]["object"])
    assert stored.headers["Content-Type"] == "audio/flac"
    assert stored.read()[:4] == b"fLaC"


def test_animated_webp_output(api: ApiHarness, bucket: oss2.Bucket) -> None:
    # Two frames of different colours: identical frames may be merged into a still image.
    workflow = {
        "1": wf.empty_image(32, 32, color=0xFF0000),
        "2": wf.empty_image(32, 32, color=0x0000FF),
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {"images": ["3", 0], "filename_prefix": "anim/a", "fps": 6.0,
                       "lossless": False, "quality": 50, "method": "fastest"},
        },
    }

    results = _results(api.run(workflow))

    assert len(results) == 1
    output = results[0]["output"]
    assert output["type"] == "images"
    assert output["raw"]["filename"].endswith(".webp")
    data = bucket.get_object(output["oss"]["object"]).read()
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"
    assert b"ANIM" in data[:200]


def test_text_output(api: ApiHarness) -> None:
    workflow = {
        "1": wf.empty_image(33, 17),
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }

    results = _results(api.run(workflow))

    assert results == [{
        "node_id": "3",
        "batch_id": 0,
        "output": {"type": "text", "raw": {"text": "33"}, "base64": {"content": None}, "oss": None},
    }]


def test_latent_output(api: ApiHarness, bucket: oss2.Bucket) -> None:
    workflow = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "lat/l"}},
    }

    results = _results(api.run(workflow))

    assert len(results) == 1
    output = results[0]["output"]
    assert output["type"] == "latents"
    assert output["raw"]["filename"].endswith(".latent")
    assert bucket.object_exists(output["oss"]["object"])


def test_cached_resubmission_returns_outputs(api: ApiHarness, bucket: oss2.Bucket) -> None:
    workflow = wf.image_save(50, 20, prefix="cache/same")

    first = _results(api.run(workflow))
    second = _results(api.run(workflow))

    assert len(first) == len(second) == 1
    assert first[0]["output"]["oss"]["object"] != second[0]["output"]["oss"]["object"]
    data = bucket.get_object(second[0]["output"]["oss"]["object"]).read()
    assert media.png_size(data) == (50, 20)


def test_concurrent_jobs_get_their_own_outputs(api: ApiHarness) -> None:
    sizes = [(24 + 8 * index, 16 + 4 * index) for index in range(8)]

    def run_one(size: tuple[int, int]) -> tuple[tuple[int, int], list[dict]]:
        # Same prefix in every job: only the runtime's per-job folder keeps files apart.
        return size, _results(api.run(wf.image_save(*size, prefix="same/prefix")))

    with concurrent.futures.ThreadPoolExecutor(len(sizes)) as pool:
        outcomes = list(pool.map(run_one, sizes))

    for size, results in outcomes:
        assert len(results) == 1
        data = requests.get(results[0]["output"]["oss"]["url"], timeout=10).content
        assert media.png_size(data) == size


def test_invoke_reports_success_header(api: ApiHarness) -> None:
    response = requests.post(
        f"{api.url}/invoke", data=json.dumps({"prompt": wf.image_save()}).encode(),
        headers={"content-type": "application/octet-stream"}, timeout=120,
    )

    assert response.status_code == 200, response.text
    assert response.headers["x-fc-status"] == "200"
    assert len(response.json()["data"]["results"]) == 1


def test_logs_carry_ids_and_no_secret(api: ApiHarness) -> None:
    _results(api.run(wf.image_save(), headers={"x-fc-request-id": "req-log-check"}))

    log = api.log()
    assert "s3cret-never-in-logs" not in log
    lines = [line for line in log.splitlines() if "request_id=req-log-check" in line]
    assert any("comfyui.post_prompt" in line for line in lines)
    assert any("oss.put_object" in line and "prompt_id=" in line and "prompt_id=-" not in line
               for line in lines)
