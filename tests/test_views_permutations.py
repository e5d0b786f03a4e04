"""Permutation views: exact inverses, i.i.d. noise, one geometry at every size, and each view's meaning."""

import pytest
import torch

from pack import import_submodule

views = import_submodule("views")
jigsaw = import_submodule("views.jigsaw")
geometry = import_submodule("views.geometry")

CASES = [
    ("identity", {}),
    ("flip", {}),
    ("rotate_cw", {}),
    ("rotate_ccw", {}),
    ("rotate_180", {}),
    ("skew", {}),
    ("skew", {"factor": -0.7}),
    ("skew", {"factor": 3.3}),
    ("patch_permute", {}),
    ("patch_permute", {"patches_per_side": 4, "seed": 3}),
    ("patch_permute", {"patches_per_side": 16, "seed": 11}),
    ("pixel_permute", {}),
    ("pixel_permute", {"seed": 5}),
    ("jigsaw", {}),
    ("jigsaw", {"seed": 1}),
    ("jigsaw", {"seed": 7}),
    ("inner_circle", {}),
    ("inner_circle", {"radius": 0.5}),
    ("inner_circle", {"radius": 0.11}),
    ("square_hinge", {}),
]
SMALL_SIZE = 16


def case_id(case):
    name, params = case
    return name + "".join(f"-{key}={value}" for key, value in params.items())


def applies(case, size):
    try:
        views.make_view(case[0], **case[1]).check_size(size)
    except views.ViewError:
        return False
    return True


SIZED_CASES = [
    pytest.param(case, size, id=f"{case_id(case)}@{size}")
    for size in (SMALL_SIZE, 64, 256)
    for case in CASES
    if applies(case, size)
]


def noise(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def upsample(x, factor):
    return x.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def test_every_permutation_view_is_covered():
    permutation_names = {name for name in views.view_names() if views.VIEW_CLASSES[name].kind == "permutation"}
    assert {name for name, _ in CASES} == permutation_names
    assert all(isinstance(views.make_view(name), views.PermutationView) for name in permutation_names)
    assert any(size == SMALL_SIZE for _, size in (p.values for p in SIZED_CASES))


@pytest.mark.parametrize("case, size", SIZED_CASES)
def test_inverse_undoes_view_exactly_and_view_only_moves_values(case, size):
    view = views.make_view(case[0], **case[1])
    x = noise(2, 6, size, size, seed=size)
    viewed = view.view(x)
    assert torch.equal(view.inverse(viewed), x)
    assert torch.equal(view.view(view.inverse(x)), x)
    if case[0] != "identity":
        assert not torch.equal(viewed, x)
    # Unique values: the view is a permutation of each channel, every value exactly once,
    # and it moves all channels alike.
    unique = torch.randperm(2 * 6 * size * size, generator=torch.Generator().manual_seed(1)).to(torch.float64)
    unique = unique.reshape(2, 6, size, size)
    moved = view.view(unique)
    assert torch.equal(moved.flatten(2).sort(-1).values, unique.flatten(2).sort(-1).values)
    assert torch.equal(moved[:, 4:5], view.view(unique[:, 4:5]))


def neighbour_statistics(viewed):
    centred = viewed - viewed.mean()
    variance = centred.square().mean()
    across = (centred[..., :, 1:] * centred[..., :, :-1]).mean() / variance
    down = (centred[..., 1:, :] * centred[..., :-1, :]).mean() / variance
    return viewed.mean().item(), variance.item(), across.item(), down.item()


def is_iid_standard_normal(statistics, tolerance=0.02):
    mean, variance, across, down = statistics
    return abs(mean) < tolerance and abs(variance - 1) < tolerance and abs(across) < tolerance and abs(down) < tolerance


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_views_keep_gaussian_noise_iid(case):
    size = SMALL_SIZE if applies(case, SMALL_SIZE) else 64
    count = 2000 if size == SMALL_SIZE else 150
    samples = noise(count, 1, size, size, seed=3)
    assert is_iid_standard_normal(neighbour_statistics(views.make_view(case[0], **case[1]).view(samples)))


@pytest.mark.parametrize(
    "name, params",
    [("blur_failure", {}), ("inner_circle_failure", {}), ("inner_circle_failure", {"interpolation": "nearest"})],
)
def test_the_iid_check_catches_the_documented_failures(name, params):
    samples = noise(2000, 1, SMALL_SIZE, SMALL_SIZE, seed=3)
    assert not is_iid_standard_normal(neighbour_statistics(views.make_view(name, **params).view(samples)))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_256_px_applies_the_64_px_permutation_to_4x4_blocks(case):
    view = views.make_view(case[0], **case[1])
    x = noise(1, 6, 64, 64)
    assert torch.equal(view.view(upsample(x, 4)), upsample(view.view(x), 4))
    assert torch.equal(view.inverse(upsample(x, 4)), upsample(view.inverse(x), 4))


@pytest.mark.parametrize(
    "name, params",
    [
        ("rotate_cw", {}),
        ("flip", {}),
        ("skew", {}),
        ("pixel_permute", {}),
        ("jigsaw", {"seed": 3}),
        ("inner_circle", {}),
        ("square_hinge", {}),
    ],
)
def test_1024_px_applies_the_64_px_permutation_to_16x16_blocks(name, params):
    view = views.make_view(name, **params)
    x = noise(1, 3, 64, 64)
    assert torch.equal(view.view(upsample(x, 16)), upsample(view.view(x), 16))


# --- what each view means -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 17, 64])
def test_rotations_match_torchvision_and_flip_mirrors_rows(size):
    tf = pytest.importorskip("torchvision.transforms.functional")
    nearest = tf.InterpolationMode.NEAREST
    x = noise(2, 6, size, size)
    for name, angle in [("rotate_cw", -90), ("rotate_ccw", 90), ("rotate_180", 180)]:
        assert torch.equal(views.make_view(name).view(x), tf.rotate(x, angle, interpolation=nearest))
    assert torch.equal(views.make_view("rotate_cw").view(x), torch.rot90(x, -1, dims=(-2, -1)))
    assert torch.equal(views.make_view("flip").view(x), torch.flip(x, [2]))


@pytest.mark.parametrize("size, factor", [(64, 1.5), (64, -2.2), (256, 1.5), (16, 0.9)])
def test_skew_rolls_base_grid_columns_like_the_paper(size, factor):
    x = noise(1, 2, size, size)
    block = max(1, size // 64)
    cells = size // block
    expected = torch.stack(
        [x[..., j].roll(block * int(factor * (j // block - cells / 2)), dims=-1) for j in range(size)], dim=-1
    )
    assert torch.equal(views.make_view("skew", factor=factor).view(x), expected)


@pytest.mark.parametrize("size, patches, seed", [(64, 8, 0), (256, 8, 5), (16, 4, 2), (256, 64, 1)])
def test_patch_permute_shows_input_patch_perm_i_at_patch_i(size, patches, seed):
    x = noise(1, 3, size, size)
    viewed = views.make_view("patch_permute", patches_per_side=patches, seed=seed).view(x)
    perm = torch.randperm(patches * patches, generator=torch.Generator().manual_seed(seed))
    side = size // patches

    def patch(image, index):
        row, col = divmod(int(index), patches)
        return image[..., row * side : (row + 1) * side, col * side : (col + 1) * side]

    for index in range(patches * patches):
        assert torch.equal(patch(viewed, index), patch(x, perm[index]))


@pytest.mark.parametrize("size, radius", [(64, 0.375), (256, 0.375), (16, 0.5), (64, 0.2)])
def test_inner_circle_turns_the_disc_half_way_round(size, radius):
    x = noise(1, 3, size, size)
    cells = min(size, 64)
    disc = upsample(geometry.disc_mask(cells, radius)[None, None], size // cells)[0, 0]
    viewed = views.make_view("inner_circle", radius=radius).view(x)
    assert disc.any() and torch.equal(disc, torch.rot90(disc, 2))
    assert torch.equal(viewed[..., ~disc], x[..., ~disc])
    assert torch.equal(viewed[..., disc], torch.rot90(x, 2, dims=(-2, -1))[..., disc])


@pytest.mark.parametrize("size", [64, 256, 16])
def test_square_hinge_turns_nine_squares_alternately(size):
    x = noise(1, 3, size, size)
    viewed = views.make_view("square_hinge").view(x)
    side = (min(size, 64) // 3) * (size // min(size, 64))
    for i in range(3):
        for j in range(3):
            rows, cols = slice(i * side, (i + 1) * side), slice(j * side, (j + 1) * side)
            clockwise = (i + j) % 2 == 0  # corners and centre clockwise, the paper's convention
            expected = torch.rot90(x[..., rows, cols], -1 if clockwise else 1, dims=(-2, -1))
            assert torch.equal(viewed[..., rows, cols], expected)
    assert torch.equal(viewed[..., 3 * side :, :], x[..., 3 * side :, :])
    assert torch.equal(viewed[..., :, 3 * side :], x[..., :, 3 * side :])


# --- jigsaw ---------------------------------------------------------------------------------------


def piece_masks(size):
    labels = views.make_view("jigsaw").layout(size).labels
    return [labels == piece for piece in range(16)]


def test_jigsaw_pieces_in_an_orbit_are_quarter_turns_of_each_other():
    pieces = piece_masks(64)
    for orbit in range(4):
        for member in range(4):
            turned = torch.rot90(pieces[4 * orbit + member], -1)  # clockwise about the image centre
            assert torch.equal(turned, pieces[4 * orbit + (member + 1) % 4])


def test_jigsaw_edge_pieces_on_a_side_are_translates():
    pieces = piece_masks(64)
    e_orbit, f_orbit = jigsaw.ORBITS.index("e"), jigsaw.ORBITS.index("f")
    for side in range(4):
        e_piece, f_piece = pieces[4 * e_orbit + side], pieces[4 * f_orbit + side]
        e_cells = torch.nonzero(e_piece).float().mean(0)
        f_cells = torch.nonzero(f_piece).float().mean(0)
        shift = [int(v) for v in (f_cells - e_cells).round()]
        assert sorted(abs(v) for v in shift) == [0, 16]
        assert torch.equal(torch.roll(e_piece, shifts=shift, dims=(0, 1)), f_piece)


def test_jigsaw_pieces_have_real_tabs():
    pieces = piece_masks(64)
    assert torch.equal(sum(mask.to(torch.int64) for mask in pieces), torch.ones(64, 64, dtype=torch.int64))
    for piece in pieces:
        rows, cols = torch.nonzero(piece).unbind(-1)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert max(height, width) > 16  # a knob reaches past the cell
        cell = torch.zeros(64, 64, dtype=torch.bool)
        cell[rows.min() : rows.min() + 16, cols.min() : cols.min() + 16] = True
        assert not torch.equal(piece, cell)
    for inner in range(4, 8):
        assert pieces[inner].sum() != 16 * 16


def rigid_piece_moves(view, size, piece_labels):
    """For each piece, the piece it lands on and the quarter turns it made; asserts rigidity."""
    coordinates = torch.arange(size * size, dtype=torch.float64).reshape(1, 1, size, size)
    source = view.view(coordinates).flatten().to(torch.int64)  # source pixel shown at each pixel
    destination = torch.empty_like(source)
    destination[source] = torch.arange(size * size)
    labels = piece_labels.flatten()
    moves = []
    for piece in range(16):
        pixels = torch.nonzero(labels == piece).flatten()
        landed = destination[pixels]
        landing = labels[landed].unique()
        assert landing.numel() == 1
        assert torch.equal(landed.sort().values, torch.nonzero(labels == landing).flatten())
        start = torch.stack([pixels // size, pixels % size], dim=-1)
        end = torch.stack([landed // size, landed % size], dim=-1)
        turns = []
        for quarter_turns in range(4):
            turned = start
            for _ in range(quarter_turns):
                turned = torch.stack([turned[:, 1], -turned[:, 0]], dim=-1)  # clockwise as displayed
            offset = end - turned
            if torch.equal(offset, offset[:1].expand_as(offset)):
                turns.append(quarter_turns)
        assert len(turns) == 1, "each piece lands as a turned and shifted copy of itself"
        moves.append((int(landing), turns[0]))
    return moves


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 11])
def test_jigsaw_moves_whole_pieces_onto_whole_pieces(seed):
    view = views.make_view("jigsaw", seed=seed)
    moves = rigid_piece_moves(view, 64, view.layout(64).labels)
    assert sorted(landing for landing, _ in moves) == list(range(16))
    for piece, (landing, _) in enumerate(moves):
        same_orbit = landing // 4 == piece // 4
        edge_swap = {piece // 4, landing // 4} == {2, 3}
        assert same_orbit or edge_swap
    assert rigid_piece_moves(view, 256, view.layout(256).labels) == moves


def test_jigsaw_seeds_give_different_puzzles():
    arrangements = {
        tuple(views.make_view("jigsaw", seed=seed).index_maps(64, "cpu").source.tolist()) for seed in range(6)
    }
    assert len(arrangements) >= 5
