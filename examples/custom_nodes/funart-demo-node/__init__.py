"""A small custom node shipped with funart-runtime for the demo and the tests.

FunartDemoTint mixes an image with a colour. It needs nothing beyond ComfyUI, so it
shows the install path of a custom node (git through the mirror, requirements, import
check) without network access.
"""

import torch


class FunartDemoTint:
    CATEGORY = "funart"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "tint"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "red": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "green": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
                "blue": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    def tint(self, image, red, green, blue, strength):
        colour = torch.tensor([red, green, blue], dtype=image.dtype, device=image.device)
        return (image * (1.0 - strength) + colour * strength,)


NODE_CLASS_MAPPINGS = {"FunartDemoTint": FunartDemoTint}
NODE_DISPLAY_NAME_MAPPINGS = {"FunartDemoTint": "Funart Demo Tint"}
