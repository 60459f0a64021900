"""Fuzzing the api function with workflow-shaped JSON: never a 5xx, never a traceback."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ApiHarness

pytestmark = pytest.mark.integration

NODE_IDS = ["1", "2", "3", "4", "99"]
CLASSES = ["EmptyImage", "ImageInvert", "SaveImage", "GetImageSize", "PreviewAny",
           "NoSuchNode", ""]
INPUT_NAMES = ["width", "height", "batch_size", "color", "image", "images", "source",
               "filename_prefix"]

links = st.tuples(st.sampled_from(NODE_IDS), st.integers(-1, 3)).map(list)
scalars = st.one_of(st.integers(-5, 64), st.text(max_size=12), st.booleans(), st.none(),
                    st.floats(allow_nan=False, allow_infinity=False, width=32))
values = st.one_of(scalars, links, st.lists(scalars, max_size=3),
                   st.sampled_from(["../x", "/abs", "ok/prefix"]))
nodes = st.one_of(
    st.fixed_dictionaries(
        {"class_type": st.sampled_from(CLASSES)},
        optional={"inputs": st.one_of(st.dictionaries(st.sampled_from(INPUT_NAMES), values,
                                                      max_size=4), scalars)},
    ),
    scalars,
    st.dictionaries(st.sampled_from(["inputs", "class_type", "x"]), scalars, max_size=2),
)
workflows = st.dictionaries(st.sampled_from(NODE_IDS), nodes, max_size=5)
bodies = st.one_of(
    workflows,
    workflows.map(lambda w: {"prompt": w}),
    st.fixed_dictionaries({"prompt": workflows, "output_base64": st.sampled_from(
        [True, "yes", "maybe", 3])}),
    st.lists(scalars, max_size=3),
    scalars,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=bodies)
def test_workflow_fuzz(api: ApiHarness, body: object) -> None:
    response = api.run(json.dumps(body), timeout=60)

    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        assert response.json()["type"] == "error"
        assert response.json()["error_code"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_raw_body_fuzz(api: ApiHarness, raw: bytes) -> None:
    response = api.run(raw, timeout=30)

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["type"] == "error"
