"""Errors the sampling core raises. Each names the input at fault, so the nodes
can tell a user which socket or widget to change."""

from __future__ import annotations


class SamplingInputError(ValueError):
    """An input that cannot work, detected before the first denoising step."""

    def __init__(self, input_name: str, problem: str):
        self.input_name = input_name
        self.problem = problem
        super().__init__(f"{input_name}: {problem}")


class SamplingCancelled(RuntimeError):
    """The per-step callback asked the run to stop."""

    def __init__(self, step: int, total: int):
        self.step = step
        self.total = total
        super().__init__(f"sampling cancelled after step {step} of {total}")
