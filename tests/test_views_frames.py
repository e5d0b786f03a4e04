"""Animation frames: the image on a white 1.5x canvas, moving from itself (t = 0) to its view (t = 1)."""

import math

import pytest
import torch

from pack import import_submodule

views = import_submodule("views")

MOVING_VIEWS = [name for name in views.view_names() if name != "identity"]
EXACT_END_VIEWS = [name for name in views.view_names() if views.VIEW_CLASSES[name].kind in ("permutation", "negate")]


def image(size, batch=2, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def centre(frame, size):
    margin = size // 4
    return frame[..., margin : margin + size, margin : margin + size]


def outside_centre(frame, size):
    keep = torch.ones(frame.shape[-2:], dtype=torch.bool)
    margin = size // 4
    keep[margin : margin + size, margin : margin + size] = False
    return frame[..., keep]


def applies(name, size):
    try:
        views.make_view(name).check_size(size)
    except views.ViewError:
        return False
    return True


@pytest.mark.parametrize(
    "name, size", [(name, size) for size in (64, 17) for name in views.view_names() if applies(name, size)]
)
def test_first_frame_is_the_image_on_a_white_canvas(name, size):
    x = image(size)
    frame = views.make_view(name).frame(x, 0.0)
    assert frame.shape == (2, 3, size + 2 * (size // 4), size + 2 * (size // 4))
    assert torch.equal(centre(frame, size), x)
    assert torch.equal(outside_centre(frame, size), torch.ones_like(outside_centre(frame, size)))


@pytest.mark.parametrize("size", [16, 64, 256])
@pytest.mark.parametrize("name", EXACT_END_VIEWS)
def test_last_frame_shows_exactly_the_view(name, size):
    params = {"patches_per_side": 8} if name == "pixel_permute" and size == 16 else {}
    view = views.make_view(name, **params)
    x = image(size, batch=1 if size == 256 else 2)
    frame = view.frame(x, 1.0)
    torch.testing.assert_close(centre(frame, size), view.view(x), atol=1e-6, rtol=0)
    assert torch.equal(outside_centre(frame, size), torch.ones_like(outside_centre(frame, size)))


@pytest.mark.parametrize("name", MOVING_VIEWS)
def test_middle_frame_differs_from_both_ends(name):
    view = views.make_view(name)
    x = image(64)
    middle = view.frame(x, 0.5)
    assert middle.shape == (2, 3, 96, 96)
    assert not torch.allclose(middle, view.frame(x, 0.0), atol=1e-3)
    assert not torch.allclose(middle, view.frame(x, 1.0), atol=1e-3)


@pytest.mark.parametrize("name", ["rotate_cw", "inner_circle", "square_hinge", "jigsaw", "skew"])
def test_frames_in_between_have_no_pinholes(name):
    """Content moving rigidly covers the canvas it passes over: no stray white pixels inside it."""
    view = views.make_view(name)
    x = torch.full((1, 3, 64, 64), -1.0)
    for t in (0.13, 0.37, 0.5, 0.81):
        white = (view.frame(x, t) == 1.0).all(1)[0]
        # A pinhole is a white pixel whose four neighbours are all dark.
        dark = ~white
        pinholes = white[1:-1, 1:-1] & dark[:-2, 1:-1] & dark[2:, 1:-1] & dark[1:-1, :-2] & dark[1:-1, 2:]
        assert not pinholes.any()


def test_flip_is_a_card_flip():
    x = torch.full((1, 3, 64, 64), -1.0)
    frame = views.make_view("flip").frame(x, 0.25)
    dark_rows = (frame[0, 0, :, 48] < 0).sum().item()
    assert abs(dark_rows - 64 * math.cos(math.pi / 4)) <= 2  # rows squeezed about the centre


def test_rotation_frames_turn_the_whole_image():
    x = torch.full((1, 3, 64, 64), -1.0)
    frame = views.make_view("rotate_cw").frame(x, 0.5)
    dark = frame[0, 0] < 0
    assert dark.sum().item() == pytest.approx(64 * 64, rel=0.02)  # area kept
    # Half-way, the square stands on a corner: its diagonal spans the middle row,
    # and its former corners are empty.
    assert dark[48].sum() >= 88 and dark[:, 48].sum() >= 88
    assert not dark[17, 17] and not dark[78, 78]


def test_square_hinge_frames_spread_the_squares_beyond_the_image():
    x = torch.full((1, 3, 64, 64), -1.0)
    middle = views.make_view("square_hinge").frame(x, 0.5)
    assert (outside_centre(middle, 64) < 0).any()


def test_inner_circle_frames_spin_only_the_disc():
    view = views.make_view("inner_circle")
    x = image(64)
    disc = import_submodule("views.geometry").disc_mask(64, 0.375)
    middle = centre(view.frame(x, 0.5), 64)
    assert torch.equal(middle[..., ~disc], x[..., ~disc])
    assert not torch.allclose(middle[..., disc], x[..., disc])


def test_negate_crossfades_through_grey():
    x = image(16)
    torch.testing.assert_close(centre(views.make_view("negate").frame(x, 0.5), 16), torch.zeros_like(x))


def test_grayscale_and_color_frames_drain_the_colour():
    x = image(16)
    for name in ("grayscale", "color"):
        last = centre(views.make_view(name).frame(x, 1.0), 16)
        torch.testing.assert_close(last, x.mean(1, keepdim=True).expand_as(x))


def test_hybrid_frames_shrink_towards_the_centre():
    x = torch.full((1, 3, 64, 64), -1.0)
    for name, factor in (("low_pass", 12), ("triple_high_pass", 12), ("blur_failure", 8)):
        last = views.make_view(name).frame(x, 1.0)
        dark_side = (last[0, 0] < 0).any(0).sum().item()
        assert dark_side == round(64 / factor)


def test_motion_blur_frames_shake_along_the_diagonal():
    x = torch.full((1, 3, 64, 64), -1.0)
    view = views.make_view("motion_blur")
    middle = (view.frame(x, 0.5)[0, 0] < 0).nonzero().float().mean(0)
    home = (view.frame(x, 0.0)[0, 0] < 0).nonzero().float().mean(0)
    shift = middle - home
    assert abs(shift[0]) >= 2 and torch.equal(shift[0], shift[1])


def test_inner_circle_failure_frames_spin_the_disc_by_the_angle():
    x = image(64)
    view = views.make_view("inner_circle_failure", angle=90, interpolation="nearest")
    torch.testing.assert_close(centre(view.frame(x, 1.0), 64), view.view(x))


def test_pixel_permute_frames_render_4096_pieces_at_once():
    view = views.make_view("pixel_permute")
    x = image(64, batch=1)
    frames = [view.frame(x, t) for t in (0.2, 0.4, 0.6, 0.8)]
    assert all(frame.shape == (1, 3, 96, 96) for frame in frames)
    assert not torch.equal(frames[0], frames[1])


def test_frame_time_must_be_in_the_unit_interval():
    with pytest.raises(views.ViewError, match=r"\[0, 1\]"):
        views.make_view("flip").frame(image(16), 1.5)
