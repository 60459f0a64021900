"""Build a Stable Diffusion 1.5-layout checkpoint with random weights for tests.

Tests cannot download real model weights, so the project makes its own. This script
builds the UNet, VAE and CLIP text encoder from ComfyUI's own model classes and fills
them from a seeded torch.Generator. It saves one float16 safetensors file that ComfyUI
loads as an SD 1.5 checkpoint. Run it with ComfyUI's interpreter, because it imports
torch, transformers and the `comfy` package from that environment.
"""

import argparse
import hashlib
import json
import os
import sys
import time

SAFETENSORS_METADATA = {"format": "pt", "funart": "random-weights test checkpoint"}
INIT_STD = 0.02

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
# SD 1.5 checkpoints store the text encoder under the transformers 4.x key names,
# which start with "text_model.". CLIPTextModel in transformers 5.25.0 drops that
# level, so build_clip puts it back when it is missing.
CLIP_PREFIX = "cond_stage_model.transformer."
CLIP_TEXT_MODEL_PREFIX = "text_model."

# SD 1.5 UNet arguments for ComfyUI 0.3.75's UNetModel (about 860 M parameters).
UNET_CONFIG = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "num_heads": 8,
    "use_spatial_transformer": True,
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "context_dim": 768,
    "use_linear_in_transformer": False,
    "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "legacy": False,
}

VAE_DDCONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}
VAE_EMBED_DIM = 4

# Keys of comfy/sd1_clip_config.json that describe the file, not the model.
CLIP_CONFIG_SKIPPED_KEYS = ("architectures", "torch_dtype", "transformers_version")


def log(message):
    print(message, file=sys.stderr, flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Write an SD 1.5-layout safetensors checkpoint with random weights."
    )
    parser.add_argument(
        "--comfyui-dir",
        required=True,
        help="ComfyUI source tree, the folder that contains comfy/",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output file, whose name must end with .safetensors",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the torch.Generator that fills the weights (default: 0)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip loading the written file with ComfyUI",
    )
    return parser.parse_args(argv)


def validate_args(args):
    """Exit with status 2 when an argument cannot work, before any slow step."""
    comfy_package = os.path.join(args.comfyui_dir, "comfy")
    if not os.path.isdir(comfy_package):
        log(
            f"error: {comfy_package} not found. Pass --comfyui-dir as the ComfyUI "
            "source tree, the folder that contains comfy/ and main.py."
        )
        sys.exit(2)

    # ComfyUI chooses the loader from the file extension, and any other name
    # would be opened with torch.load.
    if not args.out.lower().endswith(".safetensors"):
        log(f"error: invalid --out {args.out!r}: the name must end with .safetensors.")
        sys.exit(2)


def import_comfy(comfyui_dir):
    """Put ComfyUI on sys.path and import its modules in CPU mode."""
    sys.path.insert(0, os.path.abspath(comfyui_dir))

    import comfy.options

    # comfy.cli_args parses sys.argv once, when it is first imported. Parsing is
    # off unless enabled, and --cpu keeps model_management off any GPU.
    comfy.options.enable_args_parsing()
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], "--cpu"]
    try:
        import comfy.cli_args  # noqa: F401
        import comfy.model_management  # noqa: F401
    finally:
        sys.argv = saved_argv


def is_norm(module):
    import torch

    norm_types = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    return isinstance(module, norm_types)


def init_weights(model, generator):
    """Fill every floating parameter of model in place.

    Weights with two or more dimensions get normal(0, INIT_STD) values from
    generator, norm weights get 1, and biases and other floating tensors get 0.
    """
    import torch

    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.is_floating_point():
                    continue
                if param.dim() >= 2:
                    param.normal_(0.0, INIT_STD, generator=generator)
                elif is_norm(module) and name == "weight":
                    param.fill_(1.0)
                else:
                    param.zero_()


def to_fp16_state_dict(model, prefix):
    """Convert model to float16 in place and return its state dict with prefix on every key."""
    import torch

    model.to(torch.float16)
    return {prefix + key: tensor.detach() for key, tensor in model.state_dict().items()}


def build_unet(generator):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**UNET_CONFIG, operations=comfy.ops.manual_cast)
    init_weights(unet, generator)
    return to_fp16_state_dict(unet, UNET_PREFIX)


def build_vae(generator):
    from comfy.ldm.models.autoencoder import AutoencoderKL

    vae = AutoencoderKL(ddconfig=dict(VAE_DDCONFIG), embed_dim=VAE_EMBED_DIM)
    init_weights(vae, generator)
    return to_fp16_state_dict(vae, VAE_PREFIX)


def build_clip(comfyui_dir, generator):
    from transformers import CLIPTextConfig, CLIPTextModel

    config_path = os.path.join(comfyui_dir, "comfy", "sd1_clip_config.json")
    with open(config_path, encoding="utf-8") as config_file:
        config = json.load(config_file)
    for key in CLIP_CONFIG_SKIPPED_KEYS:
        config.pop(key, None)

    clip = CLIPTextModel(CLIPTextConfig(**config))
    init_weights(clip, generator)

    tensors = {}
    for key, tensor in to_fp16_state_dict(clip, "").items():
        if not key.startswith(CLIP_TEXT_MODEL_PREFIX):
            key = CLIP_TEXT_MODEL_PREFIX + key
        tensors[CLIP_PREFIX + key] = tensor
    return tensors


def build_state_dict(comfyui_dir, seed):
    """Build the three submodels one at a time, so only one float32 model is in memory."""
    import torch

    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)

    # The generator is shared, so the build order is part of the output.
    tensors = {}
    log("building unet")
    tensors.update(build_unet(generator))

    log("building vae")
    tensors.update(build_vae(generator))

    log("building clip text encoder")
    tensors.update(build_clip(comfyui_dir, generator))

    return {key: tensors[key] for key in sorted(tensors)}


def fsync_directory(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sort_header_metadata(path):
    """Rewrite the safetensors header of path with its __metadata__ keys sorted.

    safetensors 0.8.0 writes __metadata__ in hash-map order, which changes from one
    process to the next, so two identical saves would differ in a few header bytes.
    Reordering keeps the header length, and padding with spaces is valid in the format.
    """
    with open(path, "r+b") as file:
        header_size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(header_size))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))

        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        if len(encoded) > header_size:
            raise RuntimeError(
                f"sorted safetensors header of {path} is {len(encoded)} bytes, "
                f"longer than the {header_size} bytes written by safetensors"
            )
        file.seek(8)
        file.write(encoded.ljust(header_size, b" "))


def set_default_mode(path):
    """Give path the mode a new file gets under the current umask.

    safetensors 0.8.0 creates files with mode 0600, which other users, such as
    a ComfyUI server running under another account, cannot read.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_atomically(tensors, path):
    """Save tensors to path through a temporary file, so path is either absent or complete."""
    from safetensors.torch import save_file

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)

    temporary_path = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(tensors, temporary_path, metadata=SAFETENSORS_METADATA)
        sort_header_metadata(temporary_path)
        set_default_mode(temporary_path)
        with open(temporary_path, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary_path, path)
    except BaseException:
        if os.path.exists(temporary_path):
            os.remove(temporary_path)
        raise

    # The rename itself is durable only once the directory entry is flushed.
    fsync_directory(directory)


def sha256_of_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(path):
    """Load path as ComfyUI loads a checkpoint and check that model, CLIP and VAE are present.

    On failure, remove path and exit with status 1.
    """
    import comfy.sd

    try:
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            path, output_vae=True, output_clip=True
        )
    except RuntimeError as error:
        os.remove(path)
        log(
            f"error: ComfyUI failed to load {path}, so the file was removed. "
            f"Rerun with --no-verify to keep it for inspection. {error}"
        )
        sys.exit(1)

    # ComfyUI 0.3.75 returns a VAE object even when the file has no VAE weights,
    # and then only its first_stage_model is None.
    if vae is not None and getattr(vae, "first_stage_model", None) is None:
        vae = None

    missing = [
        name
        for name, part in (("model", model), ("clip", clip), ("vae", vae))
        if part is None
    ]
    if missing:
        # A file that ComfyUI cannot use must not look like a finished build.
        os.remove(path)
        log(
            f"error: ComfyUI loaded {path} without {', '.join(missing)}, so the file "
            "was removed. Rerun with --no-verify to keep it for inspection."
        )
        sys.exit(1)

    base_model = model.model
    log(
        f"verified: {type(base_model.model_config).__name__}, "
        f"model_type {base_model.model_type.name}"
    )


def main(argv=None):
    args = parse_args(argv)
    validate_args(args)
    started = time.monotonic()

    import_comfy(args.comfyui_dir)
    tensors = build_state_dict(args.comfyui_dir, args.seed)

    log(f"saving {len(tensors)} tensors to {args.out}")
    write_atomically(tensors, args.out)
    del tensors

    sha256 = sha256_of_file(args.out)
    log(f"sha256 {sha256}")

    if not args.no_verify:
        log("verifying")
        verify_checkpoint(args.out)

    result = {
        "path": os.path.abspath(args.out),
        "sha256": sha256,
        "bytes": os.path.getsize(args.out),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
