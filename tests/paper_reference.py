"""An independent, deliberately plain re-statement of the published sampling loop.

github.com/dangeng/visual_anagrams ``sample_stage_1`` / ``sample_stage_2``,
called as its ``generate.py`` does (``generator = torch.manual_seed(seed)``,
Stage II continuing with the same generator), restated step by step: one
unbatched image, a Python loop over views, the inverse applied to the
unconditional and conditional estimates separately, then guidance and the
reduction. It uses the diffusers pipeline objects the published code uses and
nothing from this pack, so the parity tests compare two separate
implementations. The views here are the paper's own definitions.

With ``ref_im`` the loops also restate the paper's inverse problem (Factorized
Diffusion, ``generate.py --ref_im_path``): at the start of every step, the first
view's component of x_t is replaced by that component of the reference noised
to the current timestep, and the second view's component is kept.
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


class PaperLowPass:
    """``HybridLowPassView``: a Gaussian blur of the noise channels, scaled with the image size.

    The published ``inverse_view`` writes into its argument (``noise[:3] = ...``);
    this one works on a copy so callers' tensors are never changed.
    """

    def __init__(self, sigma=2.0, kernel_size=33):
        # generate.py's get_views passes sigma=2.0; kernel_size keeps the class default.
        self.sigma = sigma
        self.kernel_size = kernel_size

    def view(self, im):
        return im  # factorized views do not change the model's input

    def low_pass(self, noise):
        import torchvision.transforms.functional as TF

        # One rule for both stages: 64 px -> kernel 33, sigma 2; 256 px -> kernel 133, sigma 8.
        factor = noise.shape[-2] // 64
        kernel_size = self.kernel_size * factor + ((factor + 1) % 2)
        return TF.gaussian_blur(noise[:3], kernel_size, self.sigma * factor)

    def inverse_view(self, noise):
        component = noise.clone()
        component[:3] = self.low_pass(noise)
        return component


class PaperHighPass(PaperLowPass):
    """``HybridHighPassView``: the noise channels minus their low pass (copying, as PaperLowPass)."""

    def inverse_view(self, noise):
        component = noise.clone()
        component[:3] = noise[:3] - self.low_pass(noise)
        return component


class PaperGrayscale:
    """``GrayscaleView``: the mean over the 3 noise channels, on all three (copying, as PaperLowPass)."""

    def view(self, im):
        return im

    def inverse_view(self, noise):
        component = noise.clone()
        component[:3] = torch.stack([noise[:3].mean(0)] * 3)
        return component


class PaperColor:
    """``ColorView``: the noise channels minus their grayscale mean (copying, as PaperLowPass)."""

    def view(self, im):
        return im

    def inverse_view(self, noise):
        component = noise.clone()
        component[:3] = noise[:3] - torch.stack([noise[:3].mean(0)] * 3)
        return component


PAPER_VIEWS = {
    "identity": PaperIdentity,
    "flip": PaperFlip,
    "rotate_cw": lambda: PaperRotate(-90),
    "rotate_ccw": lambda: PaperRotate(90),
    "rotate_180": lambda: PaperRotate(180),
    "negate": PaperNegate,
    "low_pass": PaperLowPass,
    "high_pass": PaperHighPass,
    "grayscale": PaperGrayscale,
    "color": PaperColor,
}


def _replace_reference_component(images, ref_im, views, scheduler, t, generator):
    """The paper's inverse-problem step, done first in every iteration (the last one too).

    ``ref_im`` is noised to the current timestep ``t`` with fresh noise each step;
    its ``views[0]`` component replaces that of x_t, and x_t keeps its ``views[1]``
    component. The published code draws that noise with ``torch.randn_like(ref_im)``,
    i.e. from the global generator of ref_im's device. Run as generate.py runs it
    on CPU, ``generator = torch.manual_seed(seed)`` *is* that global CPU generator,
    so drawing from ``generator`` here gives exactly randn_like's values, in the
    same place in the stream (before this step's UNet call and variance draw),
    while keeping this restatement explicit about its randomness.
    """
    alpha_cumprod = scheduler.alphas_cumprod[t]
    noise = torch.randn(ref_im.shape, generator=generator, dtype=ref_im.dtype, device=ref_im.device)
    ref_noisy = torch.sqrt(alpha_cumprod) * ref_im + torch.sqrt(1 - alpha_cumprod) * noise
    return (views[0].inverse_view(ref_noisy) + views[1].inverse_view(images[0]))[None]


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
    ref_im=None,
):
    """``ref_im``: optional (3, H, W) reference in model space ([-1, 1]) at the UNet's sample size.

    The published code resizes it itself (``TF.resize(ref_im, height)``); here the caller does.
    """
    device = pipe.unet.device  # the published code runs on the pipeline's execution device
    size = pipe.unet.config.sample_size
    embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
    if timesteps is None:
        pipe.scheduler.set_timesteps(steps, device=device)
    else:
        pipe.scheduler.set_timesteps(timesteps=timesteps, device=device)
    images = pipe.prepare_intermediate_images(
        1, pipe.unet.config.in_channels, size, size, embeds.dtype, device, generator
    )
    if ref_im is not None:
        ref_im = ref_im.to(images.device, images.dtype)
    for i, t in enumerate(pipe.scheduler.timesteps):
        if ref_im is not None:
            images = _replace_reference_component(images, ref_im, views, pipe.scheduler, t, generator)
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
    ref_im=None,
):
    """``ref_im``: as in ``paper_stage_1``, at this UNet's size; it acts on the noisy image, never the condition."""
    device = pipe.unet.device  # the published code runs on the pipeline's execution device
    size = pipe.unet.config.sample_size
    embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
    pipe.scheduler.set_timesteps(steps, device=device)
    images = pipe.prepare_intermediate_images(
        1, pipe.unet.config.in_channels // 2, size, size, embeds.dtype, device, generator
    )
    if ref_im is not None:
        ref_im = ref_im.to(images.device, images.dtype)
    image = pipe.preprocess_image(image, 1, device)
    upscaled = F.interpolate(image, (size, size), mode="bilinear", align_corners=True)
    levels = torch.tensor([noise_level] * upscaled.shape[0], device=device)
    noise = randn_tensor(upscaled.shape, generator=generator, device=device, dtype=upscaled.dtype)
    upscaled = pipe.image_noising_scheduler.add_noise(upscaled, noise, timesteps=levels)
    levels = torch.cat([levels] * len(views) * 2)
    for i, t in enumerate(pipe.scheduler.timesteps):
        if ref_im is not None:
            images = _replace_reference_component(images, ref_im, views, pipe.scheduler, t, generator)
        model_input = torch.cat([images, upscaled], dim=1)
        viewed = torch.stack([view.view(model_input[0]) for view in views])
        model_input = pipe.scheduler.scale_model_input(torch.cat([viewed] * 2), t)
        noise_pred = pipe.unet(model_input, t, encoder_hidden_states=embeds, class_labels=levels, return_dict=False)[0]
        noise_pred = _combine(noise_pred, views, guidance_scale, reduction, i, model_input.shape[1] // 2)
        images = pipe.scheduler.step(noise_pred, t, images, generator=generator, return_dict=False)[0]
    return images
