"""What DeepFloyd IF's stages are: their Hub ids, sizes, names and the files a stage folder holds.

Pure data (and one lookup), shared by the stage loader, the T5 loader, the folder inspection and the
Hub download, so each fact has one home.
"""

from __future__ import annotations

from pathlib import Path

STAGES = (1, 2, 3)
STAGE_1_HUB_IDS = ("DeepFloyd/IF-I-M-v1.0", "DeepFloyd/IF-I-L-v1.0", "DeepFloyd/IF-I-XL-v1.0")
STAGE_2_HUB_IDS = ("DeepFloyd/IF-II-M-v1.0", "DeepFloyd/IF-II-L-v1.0")
STAGE_3_HUB_IDS = ("stabilityai/stable-diffusion-x4-upscaler",)
HUB_IDS = {1: STAGE_1_HUB_IDS, 2: STAGE_2_HUB_IDS, 3: STAGE_3_HUB_IDS}
T5_HUB_ID = "DeepFloyd/IF-I-XL-v1.0"  # every IF-I repo ships the same T5-XXL in text_encoder/
COMFY_DIFFUSERS_DIR = "ComfyUI/models/diffusers"

#: Models that ship inside the pack, by the name the Stage I and T5 loaders list them under: the embedded
#: digits demo (a tiny Stage I folder with its own tiny T5). Found from the pack's own folder, so nothing
#: is registered with ComfyUI's model folders.
EMBEDDED_DEMO = "embedded: digits demo (64 px)"
EMBEDDED_MODELS = {EMBEDDED_DEMO: Path(__file__).resolve().parents[1] / "demo" / "IF-I-digits"}

# Approximate parameter counts of what each stage loads (UNet; Stage III also its
# VAE and CLIP text encoder), for memory planning before a download or load.
HUB_PARAMETER_COUNTS = {
    "DeepFloyd/IF-I-M-v1.0": 400_000_000,
    "DeepFloyd/IF-I-L-v1.0": 900_000_000,
    "DeepFloyd/IF-I-XL-v1.0": 4_300_000_000,
    "DeepFloyd/IF-II-M-v1.0": 450_000_000,
    "DeepFloyd/IF-II-L-v1.0": 1_200_000_000,
    # UNet ~473M + VAE ~55M + OpenCLIP ViT-H text encoder ~354M
    "stabilityai/stable-diffusion-x4-upscaler": 880_000_000,
}
T5_XXL_PARAMETER_COUNT = 4_760_000_000  # T5 v1.1 XXL encoder: 24 x 193M + 132M embedding

STAGE_LABELS = {
    1: "Stage I model (IF-I-M, IF-I-L or IF-I-XL)",
    2: "Stage II model (IF-II-M or IF-II-L)",
    3: "Stage III model (stabilityai/stable-diffusion-x4-upscaler)",
}
STAGE_NAMES = {1: "Stage I", 2: "Stage II", 3: "Stage III"}
STAGE_PIPELINE_CLASSES = {
    1: frozenset({"IFPipeline", "IFImg2ImgPipeline", "IFInpaintingPipeline"}),
    2: frozenset(
        {"IFSuperResolutionPipeline", "IFImg2ImgSuperResolutionPipeline", "IFInpaintingSuperResolutionPipeline"}
    ),
    3: frozenset({"StableDiffusionUpscalePipeline"}),
}

# What a stage folder must hold, for messages.
STAGE_LAYOUTS = {
    1: "model_index.json, unet/ (config.json + diffusion_pytorch_model.safetensors or its .fp16 variant), "
    "scheduler/ (scheduler_config.json)",
    2: "model_index.json, unet/ (config.json + diffusion_pytorch_model.safetensors or its .fp16 variant), "
    "scheduler/ and image_noising_scheduler/ (scheduler_config.json)",
    3: "model_index.json, unet/ and vae/ (config.json + diffusion_pytorch_model.safetensors), text_encoder/ "
    "(config.json + model.safetensors), tokenizer/ (vocab.json + merges.txt, or tokenizer.json), scheduler/ and "
    "low_res_scheduler/",
}
#: The pipeline components each stage loads weights for (checked for safetensors, counted for estimates).
STAGE_WEIGHT_COMPONENTS = {1: ("unet",), 2: ("unet",), 3: ("unet", "vae", "text_encoder")}
#: The folders of small files (schedulers, tokenizer) each stage loads besides its weights.
STAGE_CONFIG_FOLDERS = {
    1: ("scheduler",),
    2: ("scheduler", "image_noising_scheduler"),
    3: ("scheduler", "low_res_scheduler", "tokenizer"),
}


def known_hub_stage(repo_id: str) -> int | None:
    """The stage a known Hub id holds, or None for any other id."""
    for stage, ids in HUB_IDS.items():
        if repo_id in ids:
            return stage
    return None
