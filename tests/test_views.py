"""Views: registry, parameters and errors, negate, factorized and failure views, dtypes and devices.

Permutation views are tested in test_views_permutations.py, animation frames in
test_views_frames.py.
"""

import json

import pytest
import torch

from pack import import_submodule

views = import_submodule("views")
filters = import_submodule("views.filters")

ANAGRAM_NAMES = [
    "identity",
    "flip",
    "rotate_cw",
    "rotate_ccw",
    "rotate_180",
    "negate",
    "skew",
    "patch_permute",
    "pixel_permute",
    "jigsaw",
    "inner_circle",
    "square_hinge",
]
FACTORIZED_NAMES = [
    "low_pass",
    "high_pass",
    "triple_low_pass",
    "triple_medium_pass",
    "triple_high_pass",
    "grayscale",
    "color",
    "motion_blur",
    "motion_blur_res",
    "scale",
]
FAILURE_NAMES = ["inner_circle_failure", "blur_failure", "white_balance_failure"]
GRID_VIEWS = ["skew", "patch_permute", "pixel_permute", "jigsaw", "inner_circle", "square_hinge"]


def noise(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- registry -----------------------------------------------------------------------------------


def test_registry_lists_anagram_then_factorized_then_failure_views():
    assert views.view_names() == ANAGRAM_NAMES + FACTORIZED_NAMES + FAILURE_NAMES
    assert list(views.VIEW_CLASSES) == views.view_names()
    assert views.view_names(include_failures=False) == ANAGRAM_NAMES + FACTORIZED_NAMES


@pytest.mark.parametrize("name", ANAGRAM_NAMES + FACTORIZED_NAMES + FAILURE_NAMES)
def test_every_view_describes_itself(name):
    view_class = views.VIEW_CLASSES[name]
    assert view_class.name == name
    assert view_class.label and view_class.description
    expected_kind = (
        "negate"
        if name == "negate"
        else "factorized"
        if name in FACTORIZED_NAMES
        else "failure"
        if name in FAILURE_NAMES
        else "permutation"
    )
    assert view_class.kind == expected_kind
    assert view_class.is_failure == (name in FAILURE_NAMES)
    assert bool(view_class.failure_note) == (name in FAILURE_NAMES)
    assert view_class.reduction == ("sum" if name in FACTORIZED_NAMES else "mean")
    view = views.make_view(name)
    assert isinstance(view, views.View)
    assert view.params() == {spec.name: spec.default for spec in view_class.PARAMS}
    assert json.loads(json.dumps(view.params())) == view.params()
    assert all(isinstance(spec, views.ParamSpec) and spec.description for spec in view_class.PARAMS)


def test_published_defaults():
    defaults = {name: views.make_view(name).params() for name in views.view_names()}
    assert defaults["patch_permute"] == {"patches_per_side": 8, "seed": 0}
    assert defaults["pixel_permute"] == {"patches_per_side": 64, "seed": 0}
    assert defaults["skew"] == {"factor": 1.5}
    assert defaults["inner_circle"] == {"radius": 0.375}
    assert defaults["low_pass"] == {"sigma": 2.0, "kernel_size": 33}
    assert defaults["triple_high_pass"] == {"sigma_1": 1.0, "sigma_2": 2.0, "kernel_size": 25}
    assert defaults["motion_blur"] == {"kernel": 7}
    assert defaults["scale"] == {"factor": 0.5}
    assert defaults["inner_circle_failure"] == {"angle": 135.0, "interpolation": "bilinear"}
    assert defaults["blur_failure"] == {"factor": 8}
    assert defaults["white_balance_failure"] == {"factor": 1.5}


def test_pixel_permute_is_patch_permute_with_a_patch_per_pixel():
    pixel = views.make_view("pixel_permute", seed=4)
    patch = views.make_view("patch_permute", patches_per_side=64, seed=4)
    assert isinstance(pixel, type(patch))
    assert pixel.label == "Pixel permutation" != patch.label
    x = noise(1, 3, 64, 64)
    assert torch.equal(pixel.view(x), patch.view(x))


# --- parameters and errors ------------------------------------------------------------------------


def test_parameters_are_converted_to_their_type():
    assert views.make_view("skew", factor=2).params() == {"factor": 2.0}
    assert isinstance(views.make_view("skew", factor=2).params()["factor"], float)
    assert views.make_view("jigsaw", seed=3.0).params() == {"seed": 3}
    assert repr(views.make_view("skew", factor=2)) == "skew(factor=2.0)"


def test_unknown_view_name_lists_the_valid_names():
    with pytest.raises(views.ViewError) as error:
        views.make_view("spin")
    assert "spin" in str(error.value)
    assert all(name in str(error.value) for name in views.view_names())


@pytest.mark.parametrize(
    "name, params, expected",
    [
        ("patch_permute", {"patches_per_side": 0}, "patches_per_side"),
        ("patch_permute", {"patches_per_side": 65}, "<= 64"),
        ("inner_circle", {"radius": 0.0}, "0.0 < radius <= 0.5"),
        ("inner_circle", {"radius": 0.51}, "radius"),
        ("inner_circle", {"radius": -0.2}, "radius"),
        ("skew", {"factor": "big"}, "factor"),
        ("skew", {"factor": float("nan")}, "factor"),
        ("jigsaw", {"seed": -1}, "seed"),
        ("jigsaw", {"seed": 1.5}, "an integer"),
        ("jigsaw", {"seed": True}, "seed"),
        ("low_pass", {"sigma": 0}, "sigma"),
        ("inner_circle_failure", {"interpolation": "bicubic"}, "'bilinear', 'nearest'"),
        ("flip", {"angle": 3}, "no parameter angle"),
        ("skew", {"factr": 1.0}, "its parameters: factor"),
    ],
)
def test_bad_parameters_say_what_is_allowed(name, params, expected):
    with pytest.raises(views.ViewError) as error:
        views.make_view(name, **params)
    message = str(error.value)
    assert name in message and expected in message


def test_patches_must_divide_the_size():
    view = views.make_view("patch_permute", patches_per_side=5)
    with pytest.raises(views.ViewError) as error:
        view.check_size(64)
    assert "patches_per_side=5" in str(error.value) and "1, 2, 4, 8, 16, 32, 64" in str(error.value)
    with pytest.raises(views.ViewError):
        view.view(torch.zeros(1, 3, 256, 256))
    with pytest.raises(views.ViewError) as error:
        views.make_view("pixel_permute").check_size(32)
    assert "1, 2, 4, 8, 16, 32" in str(error.value)
    views.make_view("patch_permute", patches_per_side=8).check_size(24)
    views.make_view("patch_permute", patches_per_side=64).check_size(1024)


@pytest.mark.parametrize("name", GRID_VIEWS)
def test_grid_views_refuse_sizes_that_are_not_refinements_of_64(name):
    view = views.make_view(name, **({"patches_per_side": 4} if "permute" in name else {}))
    view.check_size(128)
    with pytest.raises(views.ViewError) as error:
        view.check_size(96)
    assert name in str(error.value) and "at most 64 or a multiple of 64" in str(error.value)


def test_whole_image_views_apply_at_any_size():
    for name in ["identity", "flip", "rotate_cw", "rotate_ccw", "rotate_180"]:
        x = noise(1, 3, 96, 96)
        assert torch.equal(views.make_view(name).inverse(views.make_view(name).view(x)), x)


def test_view_specific_size_rules():
    with pytest.raises(views.ViewError, match="multiple of 4"):
        views.make_view("jigsaw").check_size(30)
    with pytest.raises(views.ViewError, match="at least factor=8"):
        views.make_view("blur_failure").check_size(4)
    with pytest.raises(views.ViewError, match="at least 3"):
        views.make_view("square_hinge").check_size(2)
    with pytest.raises(views.ViewError, match="positive"):
        views.make_view("negate").check_size(0)


@pytest.mark.parametrize("name", views.view_names())
def test_non_square_inputs_are_refused(name):
    view = views.make_view(name)
    for bad in (torch.zeros(1, 3, 64, 32), torch.zeros(3, 64, 64)):
        for method in (view.view, view.inverse, view.preview, lambda x: view.frame(x, 0.5)):
            with pytest.raises(views.ViewError, match="square"):
                method(bad)


# --- negate ---------------------------------------------------------------------------------------


def test_negate_negates_inputs_but_only_the_noise_of_estimates():
    negate = views.make_view("negate")
    x = noise(2, 6, 16, 16)
    assert torch.equal(negate.view(x), -x)
    back = negate.inverse(x)
    assert torch.equal(back[:, :3], -x[:, :3])
    assert torch.equal(back[:, 3:], x[:, 3:])
    assert torch.equal(negate.preview(x[:, :3]), -x[:, :3])


# --- factorized views -----------------------------------------------------------------------------

SPLITS = [
    (("low_pass", "high_pass"), {}),
    (("low_pass", "high_pass"), {"sigma": 0.7, "kernel_size": 9}),
    (("triple_low_pass", "triple_medium_pass", "triple_high_pass"), {}),
    (
        ("triple_low_pass", "triple_medium_pass", "triple_high_pass"),
        {"sigma_1": 0.5, "sigma_2": 3.0, "kernel_size": 41},
    ),
    (("grayscale", "color"), {}),
    (("motion_blur", "motion_blur_res"), {}),
    (("motion_blur", "motion_blur_res"), {"kernel": 11}),
]


@pytest.mark.parametrize("size", [16, 64, 256])
@pytest.mark.parametrize("names, params", SPLITS)
def test_factorized_components_sum_back_and_leave_the_variance_alone(names, params, size):
    parts = [views.make_view(name, **params) for name in names]
    estimate = noise(1, 6, size, size, seed=size)
    inverted = [part.inverse(estimate) for part in parts]
    torch.testing.assert_close(sum(part[:, :3] for part in inverted), estimate[:, :3], atol=1e-5, rtol=0)
    for part, back in zip(parts, inverted, strict=True):
        assert torch.equal(back[:, 3:], estimate[:, 3:])
        if size >= 64:  # at 16 px a 0.7 px (at 64) blur scales to nothing, rightly
            assert not torch.allclose(back[:, :3], estimate[:, :3], atol=1e-3)  # each part really filters
        assert part.view(estimate) is estimate
        torch.testing.assert_close(part.preview(estimate[:, :3]), back[:, :3])


def test_low_pass_matches_the_papers_gaussian_blur_at_every_stage():
    tf = pytest.importorskip("torchvision.transforms.functional")
    low = views.make_view("low_pass")
    for size, kernel_size, sigma in [(64, 33, 2.0), (256, 133, 8.0)]:
        estimate = noise(1, 6, size, size)
        expected = tf.gaussian_blur(estimate[:, :3], [kernel_size, kernel_size], [sigma, sigma])
        torch.testing.assert_close(low.inverse(estimate)[:, :3], expected, atol=1e-5, rtol=0)


def test_kernel_sizes_scale_like_the_paper_and_stay_odd():
    assert [filters.scaled_kernel_size(33, size) for size in (64, 256, 1024)] == [33, 133, 529]
    assert [filters.scaled_kernel_size(7, size) for size in (64, 256)] == [7, 29]
    assert filters.scaled_kernel_size(25, 256) == 101
    assert all(filters.scaled_kernel_size(33, size) % 2 == 1 for size in range(1, 80))
    assert filters.scaled_kernel_size(7, 8) == 3


def test_motion_blur_is_the_diagonal_line_kernel():
    blur = views.make_view("motion_blur")
    estimate = noise(1, 3, 64, 64)
    kernel = torch.eye(7).expand(3, 1, 7, 7) / 7
    expected = torch.nn.functional.conv2d(estimate, kernel, padding=3, groups=3)
    # Away from the borders (where this pack reflects instead of zero-padding) it is the paper's filter.
    torch.testing.assert_close(blur.inverse(estimate)[..., 3:-3, 3:-3], expected[..., 3:-3, 3:-3])


def test_grayscale_and_color_components():
    image = noise(2, 3, 16, 16)
    grey = views.make_view("grayscale").preview(image)
    colour = views.make_view("color").preview(image)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    torch.testing.assert_close(grey[:, 0], image.mean(1))
    torch.testing.assert_close(colour.mean(1), torch.zeros(2, 16, 16), atol=1e-6, rtol=0)


def test_scale_multiplies_only_the_noise():
    scale = views.make_view("scale", factor=0.25)
    estimate = noise(1, 6, 16, 16)
    back = scale.inverse(estimate)
    torch.testing.assert_close(back[:, :3], 0.25 * estimate[:, :3])
    assert torch.equal(back[:, 3:], estimate[:, 3:])


def test_high_pass_preview_is_the_detail_left_by_the_low_pass():
    image = noise(1, 3, 64, 64)
    low = views.make_view("low_pass").preview(image)
    high = views.make_view("high_pass").preview(image)
    torch.testing.assert_close(high, image - low)
    assert low.diff(dim=-1).abs().mean() < 0.5 * image.diff(dim=-1).abs().mean()


# --- failures -------------------------------------------------------------------------------------


def test_white_balance_failure_scales_the_input_and_divides_the_noise():
    view = views.make_view("white_balance_failure", factor=2.0)
    x = noise(1, 6, 16, 16)
    assert torch.equal(view.view(x), x * 2)
    back = view.inverse(x)
    torch.testing.assert_close(back[:, :3], x[:, :3] / 2)
    assert torch.equal(back[:, 3:], x[:, 3:])


def test_blur_failure_blurs_and_passes_the_estimate_through():
    view = views.make_view("blur_failure", factor=4)
    x = noise(1, 6, 32, 32)
    assert view.inverse(x) is x
    assert view.view(x).diff(dim=-1).abs().mean() < 0.3 * x.diff(dim=-1).abs().mean()


def test_inner_circle_failure_turns_the_disc_counter_clockwise_and_back():
    x = noise(1, 6, 64, 64)
    disc = import_submodule("views.geometry").disc_mask(64, 0.375)
    quarter = views.make_view("inner_circle_failure", angle=90, interpolation="nearest")
    turned = quarter.view(x)
    assert torch.equal(turned[..., ~disc], x[..., ~disc])
    assert torch.equal(turned[..., disc], torch.rot90(x, 1, dims=(-2, -1))[..., disc])
    assert torch.equal(quarter.inverse(turned), x)
    # Other angles resample exactly as the paper's torchvision rotation does.
    tf = pytest.importorskip("torchvision.transforms.functional")
    for angle, mode in [(135, "bilinear"), (-30, "nearest")]:
        turned = views.make_view("inner_circle_failure", angle=angle, interpolation=mode).view(x)
        expected = tf.rotate(x, angle, interpolation=tf.InterpolationMode(mode))
        assert torch.equal(turned[..., ~disc], x[..., ~disc])
        torch.testing.assert_close(turned[..., disc], expected[..., disc], atol=1e-4, rtol=0)
    # The published 135° bilinear version cannot be undone: resampling lost information.
    failing = views.make_view("inner_circle_failure")
    assert not torch.allclose(failing.inverse(failing.view(x)), x, atol=0.1)
    assert torch.equal(views.make_view("inner_circle_failure", angle=360).view(x), x)


@pytest.mark.parametrize("name", FAILURE_NAMES)
def test_failure_notes_explain_the_broken_noise_statistics(name):
    note = views.VIEW_CLASSES[name].failure_note
    assert "Gaussian" in note and ("i.i.d." in note or "variance" in note)


# --- dtypes and devices ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", views.view_names())
def test_dtype_and_device_are_preserved(name, dtype):
    view = views.make_view(name)
    x = noise(1, 6, 64, 64).to(dtype)
    for out in (view.view(x), view.inverse(x), view.preview(x[:, :3]), view.frame(x[:, :3], 0.5)):
        assert out.dtype == dtype and out.device == x.device
        assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", views.view_names())
def test_view_and_inverse_never_read_tensor_values(name):
    """Meta tensors have no values: any host sync or branch on data would fail here."""
    view = views.make_view(name)
    x = torch.empty(2, 6, 64, 64, device="meta")
    for out in (view.view(x), view.inverse(x)):
        assert out.device.type == "meta" and out.shape == x.shape


def test_permutations_are_built_once_per_size_and_device(monkeypatch):
    view = views.make_view("jigsaw", seed=2)
    built = []
    original = view.base_layout
    monkeypatch.setattr(view, "base_layout", lambda cells: built.append(cells) or original(cells))
    x = noise(1, 6, 64, 64)
    for _ in range(3):
        view.view(x)
        view.inverse(x)
    view.view(x.half())
    view.frame(x[:, :3], 0.5)
    assert built == [64]
    assert view.index_maps(64, torch.device("cpu")) is view.index_maps(64, "cpu")
    view.view(noise(1, 3, 256, 256))
    view.inverse(noise(1, 3, 256, 256))
    assert built == [64, 64]  # 256 px refines the same 64-cell layout
    maps = view.index_maps(64, "meta")
    assert maps.source.device.type == "meta" and view.index_maps(64, "meta") is maps
    assert built == [64, 64]
