"""funart-runtime: ComfyUI on Alibaba Cloud Function Compute, from workspace to elastic API."""

__version__ = "0.1.0"
