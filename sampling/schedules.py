"""Which timesteps a run visits: a step count, or one of IF's tuned timestep lists."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import SamplingInputError

# DeepFloyd tuned these lists for IF; diffusers ships them. "fast27" and
# "smart*" suit Stage I, "super*" suit Stage II (the names are IF's own).
IF_SCHEDULE_NAMES = (
    "fast27",
    "smart27",
    "smart50",
    "smart100",
    "smart185",
    "super27",
    "super40",
    "super100",
)


def if_timestep_schedule(name: str) -> list[int]:
    """The timestep list IF calls ``<name>_timesteps`` (e.g. ``"smart50"``)."""
    if name not in IF_SCHEDULE_NAMES:
        raise SamplingInputError(
            "timesteps", f"unknown IF timestep schedule {name!r}; choose one of {', '.join(IF_SCHEDULE_NAMES)}"
        )
    from diffusers.pipelines.deepfloyd_if import timesteps as if_timesteps

    return list(getattr(if_timesteps, f"{name}_timesteps"))


def resolve_timesteps(scheduler, num_inference_steps: int | None, timesteps: Sequence[int] | str | None) -> None:
    """Set ``scheduler``'s timesteps from a step count, an explicit list or an IF schedule name.

    Timesteps stay on the CPU: the scheduler indexes its CPU tables with them,
    and a CPU timestep costs the UNet only a host-to-device copy, never a sync.
    """
    if isinstance(timesteps, str):
        timesteps = if_timestep_schedule(timesteps)
    if timesteps is not None:
        _check_timestep_list(scheduler, timesteps)
        scheduler.set_timesteps(timesteps=list(timesteps), device="cpu")
        return
    if num_inference_steps is None or int(num_inference_steps) < 1:
        raise SamplingInputError("steps", f"need at least 1 step, got {num_inference_steps}")
    train_steps = scheduler.config.num_train_timesteps
    if num_inference_steps > train_steps:
        raise SamplingInputError(
            "steps", f"{num_inference_steps} steps exceed the scheduler's {train_steps} training timesteps"
        )
    scheduler.set_timesteps(int(num_inference_steps), device="cpu")


def _check_timestep_list(scheduler, timesteps: Sequence[int]) -> None:
    train_steps = scheduler.config.num_train_timesteps
    values = list(timesteps)
    if not values:
        raise SamplingInputError("timesteps", "the timestep list is empty")
    if any(int(t) != t or not 0 <= t < train_steps for t in values):
        raise SamplingInputError("timesteps", f"timesteps must be integers in [0, {train_steps - 1}], got {values}")
    if any(a <= b for a, b in zip(values, values[1:], strict=False)):
        raise SamplingInputError("timesteps", "timesteps must be strictly decreasing (noisiest first)")
