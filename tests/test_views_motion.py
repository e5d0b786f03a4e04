"""Views that are one motion of the whole picture say so, and say it right: the illusion viewer
(nodes/viewer.py, js/viewer.js) plays them as a CSS transform instead of rendered frames, so
the description must be exactly what the view does."""

from __future__ import annotations

import pytest
import torch

from pack import import_submodule

views = import_submodule("views")

WHOLE_IMAGE = {"identity", "flip", "rotate_cw", "rotate_ccw", "rotate_180", "negate"}


def apply_motion(motion, x: torch.Tensor) -> torch.Tensor:
    """The described motion, done independently of the views: mirror rows, then turn clockwise as displayed."""
    if motion.negate:
        x = -x
    if motion.mirror_rows:
        x = torch.flip(x, [-2])
    # torch.rot90 with dims (-2, -1) turns counter-clockwise as displayed (rows down, columns right).
    return torch.rot90(x, -motion.quarter_turns, dims=(-2, -1))


@pytest.mark.parametrize("name", views.view_names())
def test_whole_image_motion_is_exactly_the_view(name):
    view = views.make_view(name)
    motion = view.whole_image_motion()
    if name not in WHOLE_IMAGE:
        assert motion is None, f"{name} moves regions of the picture, not the whole picture"
        return
    assert isinstance(motion, views.WholeImageMotion)
    x = torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16) ** 3
    assert torch.equal(apply_motion(motion, x), view.view(x))
    assert motion.is_still == (name == "identity")


def test_rotations_turn_the_way_their_names_say():
    assert views.make_view("rotate_cw").whole_image_motion() == views.WholeImageMotion(quarter_turns=1)
    assert views.make_view("rotate_ccw").whole_image_motion() == views.WholeImageMotion(quarter_turns=-1)
    assert views.make_view("flip").whole_image_motion() == views.WholeImageMotion(mirror_rows=True)
    # Clockwise as displayed: the top-left corner goes to the top-right.
    x = torch.zeros(1, 1, 4, 4)
    x[..., 0, 0] = 1
    assert views.make_view("rotate_cw").view(x)[0, 0, 0, 3] == 1


def test_views_seen_at_rest_are_the_picture_half_of_a_factorized_pair():
    at_rest = {name for name, view_class in views.VIEW_CLASSES.items() if view_class.seen_at_rest}
    assert at_rest == {"high_pass", "triple_high_pass", "color", "motion_blur_res"}
    # Their frames show the other reading (a hybrid steps back, colour drains, the picture
    # shakes): the end of the animation is not how they are seen, the picture at rest is.
    picture = torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32)
    for name in at_rest:
        view = views.make_view(name)
        assert not torch.equal(view.frame(picture, 0.5), view.frame(picture, 0.0)), name
