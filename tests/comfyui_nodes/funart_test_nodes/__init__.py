"""Test-only ComfyUI nodes: progress, slow and failing nodes.

No built-in model-free node of ComfyUI 0.3.75 reports progress or fails on request,
so the integration tests load these from the test copy's custom_nodes folder.
"""

import time

import comfy.model_management
import comfy.utils


class FunartTestSlowProgress:
    """Pass the image through, reporting progress once per step."""

    CATEGORY = "testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "steps": ("INT", {"default": 5, "min": 1, "max": 1000}),
                "delay": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 60.0, "step": 0.01}),
            }
        }

    def run(self, image, steps, delay):
        progress = comfy.utils.ProgressBar(steps)
        for step in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(delay)
            progress.update_absolute(step + 1, steps)
        return (image,)


class FunartTestFail:
    """Raise ValueError with the given message."""

    CATEGORY = "testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "message": ("STRING", {"default": "boom"})}}

    def run(self, image, message):
        raise ValueError(message)


NODE_CLASS_MAPPINGS = {
    "FunartTestSlowProgress": FunartTestSlowProgress,
    "FunartTestFail": FunartTestFail,
}
