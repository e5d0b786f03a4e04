"""An independent, deliberately plain re-statement of the published sampling loop.

github.com/dangeng/visual_anagrams ``sample_stage_1`` / ``sample_stage_2``,
called as its ``generate.py`` does (``generator = torch.manual_seed(seed)``,
Stage II continuing with the same generator), restated step by step: one
unbatched image, a Python loop over views, the inverse applied to the
unconditional and conditional estimates separately, then guidance and the
reduction. It uses the diffusers pipeline objects the published code uses and
nothing from this pack, so the parity tests compare two separate
implementations. The views here are the paper's own definitions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor


class PaperIdentity:
    def view(self, im):
        return im

    def inverse_view(self, noise):
        return noise


class PaperFlip:
    def view(self, im):
        return torch.flip(im, [1])

    def inverse_view(self, noise):
        return torch.flip(noise, [1])


class PaperRotate:
    """The paper rotates with torchvision's nearest-neighbour ``rotate``."""

    def __init__(self, degrees):
        self.degrees = degrees

    def view(self, im):
        import torchvision.transforms.functional as TF

        return TF.rotate(im, self.degrees, interpolation=TF.InterpolationMode.NEAREST)

    def inverse_view(self, noise):
        import torchvision.transforms.functional as TF

        return TF.rotate(noise, -self.degrees, interpolation=TF.InterpolationMode.NEAREST)


class PaperNegate:
    def view(self, im):
        return -im

    def inverse_view(self, noise):
        mask = torch.ones_like(noise)
        mask[:3] = -1  # the variance channels are left alone
        return noise * mask


PAPER_VIEWS = {
    "identity": PaperIdentity,
    "flip": PaperFlip,
    "rotate_cw": lambda: PaperRotate(-90),
    "rotate_ccw": lambda: PaperRotate(90),
    "rotate_180": lambda: PaperRotate(180),
    "negate": PaperNegate,
}


def _combine(noise_pred, views, guidance_scale, reduction, step, noise_channels):
    uncond, cond = noise_pred.chunk(2)
    uncond = torch.stack([view.inverse_view(pred) for pred, view in zip(uncond, views, strict=True)])
    cond = torch.stack([view.inverse_view(pred) for pred, view in zip(cond, views, strict=True)])
    uncond, _ = uncond.split(noise_channels, dim=1)
    cond, variance = cond.split(noise_channels, dim=1)
    noise = uncond + guidance_scale * (cond - uncond)
    if reduction == "mean":
        noise, variance = noise.mean(0, keepdim=True), variance.mean(0, keepdim=True)
    elif reduction == "sum":
        noise, variance = noise.sum(0, keepdim=True), variance.mean(0, keepdim=True)
    else:  # alternate
        index = step % len(views)
        noise, variance = noise[index : index + 1], variance[index : index + 1]
    return torch.cat([noise, variance], dim=1)


@torch.no_grad()
def paper_stage_1(
    pipe,
    prompt_embeds,
    negative_prompt_embeds,
    views,
    steps,
    guidance_scale,
    generator,
    reduction="mean",
    timesteps=None,
):
    device = torch.device("cpu")
    size = pipe.unet.config.sample_size
    embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
    if timesteps is None:
        pipe.scheduler.set_timesteps(steps, device=device)
    else:
        pipe.scheduler.set_timesteps(timesteps=timesteps, device=device)
    images = pipe.prepare_intermediate_images(
        1, pipe.unet.config.in_channels, size, size, embeds.dtype, device, generator
    )
    for i, t in enumerate(pipe.scheduler.timesteps):
        viewed = torch.stack([view.view(images[0]) for view in views])
        model_input = pipe.scheduler.scale_model_input(torch.cat([viewed] * 2), t)
        noise_pred = pipe.unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
        noise_pred = _combine(noise_pred, views, guidance_scale, reduction, i, model_input.shape[1])
        images = pipe.scheduler.step(noise_pred, t, images, generator=generator, return_dict=False)[0]
    return images


@torch.no_grad()
def paper_stage_2(
    pipe,
    image,
    prompt_embeds,
    negative_prompt_embeds,
    views,
    steps,
    guidance_scale,
    noise_level,
    generator,
    reduction="mean",
):
    device = torch.device("cpu")
    size = pipe.unet.config.sample_size
    embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
    pipe.scheduler.set_timesteps(steps, device=device)
    images = pipe.prepare_intermediate_images(
        1, pipe.unet.config.in_channels // 2, size, size, embeds.dtype, device, generator
    )
    image = pipe.preprocess_image(image, 1, device)
    upscaled = F.interpolate(image, (size, size), mode="bilinear", align_corners=True)
    levels = torch.tensor([noise_level] * upscaled.shape[0], device=device)
    noise = randn_tensor(upscaled.shape, generator=generator, device=device, dtype=upscaled.dtype)
    upscaled = pipe.image_noising_scheduler.add_noise(upscaled, noise, timesteps=levels)
    levels = torch.cat([levels] * len(views) * 2)
    for i, t in enumerate(pipe.scheduler.timesteps):
        model_input = torch.cat([images, upscaled], dim=1)
        viewed = torch.stack([view.view(model_input[0]) for view in views])
        model_input = pipe.scheduler.scale_model_input(torch.cat([viewed] * 2), t)
        noise_pred = pipe.unet(model_input, t, encoder_hidden_states=embeds, class_labels=levels, return_dict=False)[0]
        noise_pred = _combine(noise_pred, views, guidance_scale, reduction, i, model_input.shape[1] // 2)
        images = pipe.scheduler.step(noise_pred, t, images, generator=generator, return_dict=False)[0]
    return images
