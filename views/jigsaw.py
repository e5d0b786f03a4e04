"""A 4 x 4 jigsaw puzzle with real interlocking tabs, rearranged by rotating and swapping pieces.

The layout is drawn from continuous geometry tested at pixel centres of the base
grid: square cells a quarter of the side, and on each of the 24 internal edges
a round knob (a disc just past the edge midpoint, joined by a narrower neck)
that its owner pushes into the neighbouring cell. Tab directions are chosen so
that

* the layout is invariant under a quarter turn about the image centre, so the
  16 pieces fall into 4 orbits of 4 (corners, inner 2 x 2, and two kinds of edge
  pieces "e" and "f"), each member the previous one turned clockwise; and
* on every side the e and f pieces are translates of each other by a quarter of
  the side, so they can trade places.

Pieces are numbered ``4 * orbit + member`` with orbits in ``ORBITS`` order:

    c0 e0 f0 c1
    f3 i0 i1 e1
    e3 i3 i2 f1
    c3 f2 e2 c2

A rearrangement (seeded, via ``torch.Generator``) sends, within each orbit, the
member at rotation index a to rotation index ``perm[a]`` (a turn about the image
centre by ``perm[a] - a`` quarter turns), then on each side, if that side's
swap bit is set, exchanges the e and f pieces that landed there by a shift of
a quarter side along it — the paper's scheme.
"""

from __future__ import annotations

import torch

from .anagrams import SEED
from .base import ViewError
from .geometry import pixel_centres
from .motions import RegionLayout, random_swings
from .permutations import PermutationView

PIECES_PER_SIDE = 4
ORBITS = ("corner", "inner", "e", "f")
#: Cell (row, col) of member 0 of each orbit; member a is it turned a quarter turns clockwise.
ORBIT_HOMES = ((0, 0), (1, 1), (0, 1), (0, 2))

#: One internal edge from each of the 6 orbits of edges under quarter turns, as (owner, receiver):
#: the owner's knob goes into the receiver. Along the border the knobs all point clockwise; that is
#: forced up to mirroring, since e and f must match edge for edge to be translates. Inner pieces push
#: knobs into the edge pieces, and around the centre they point clockwise.
TAB_EDGES = (
    ((0, 0), (0, 1)),  # c0 -> e0
    ((0, 1), (0, 2)),  # e0 -> f0
    ((0, 2), (0, 3)),  # f0 -> c1
    ((1, 1), (0, 1)),  # i0 -> e0
    ((1, 2), (0, 2)),  # i1 -> f0
    ((1, 1), (1, 2)),  # i0 -> i1
)

#: Knob geometry, in cells: disc radius, distance of its centre past the edge, half-width of the neck.
KNOB_RADIUS = 0.16
KNOB_REACH = 0.2
NECK_HALF_WIDTH = 0.07


def turn_cell(cell: tuple[int, int], quarter_turns: int) -> tuple[int, int]:
    """A cell of the 4 x 4 grid after turning the grid clockwise about its centre."""
    row, col = cell
    for _ in range(quarter_turns % 4):
        row, col = col, PIECES_PER_SIDE - 1 - row
    return row, col


def piece_cell(orbit: int, member: int) -> tuple[int, int]:
    return turn_cell(ORBIT_HOMES[orbit], member)


def piece_of_cells() -> torch.Tensor:
    """(4, 4) piece number of every cell."""
    grid = torch.empty(PIECES_PER_SIDE, PIECES_PER_SIDE, dtype=torch.int64)
    for orbit in range(len(ORBITS)):
        for member in range(4):
            grid[piece_cell(orbit, member)] = 4 * orbit + member
    return grid


def piece_labels(cells: int) -> torch.Tensor:
    """(cells, cells) piece number of every pixel of the base grid."""
    cell_size = cells / PIECES_PER_SIDE
    centres = pixel_centres(cells)
    cell_index = torch.div(centres, cell_size, rounding_mode="floor").to(torch.int64)
    pieces = piece_of_cells()
    labels = pieces[cell_index[..., 0], cell_index[..., 1]]
    for owner, receiver in TAB_EDGES:
        for turns in range(4):
            owner_cell, receiver_cell = turn_cell(owner, turns), turn_cell(receiver, turns)
            normal = torch.tensor(receiver_cell, dtype=torch.float64) - torch.tensor(owner_cell, dtype=torch.float64)
            midpoint = (torch.tensor(owner_cell) + torch.tensor(receiver_cell) + 1).to(torch.float64) * cell_size / 2
            offset = centres - midpoint
            depth = offset @ normal / cell_size
            lateral = offset @ torch.stack([-normal[1], normal[0]]) / cell_size
            disc = (depth - KNOB_REACH).square() + lateral.square() < KNOB_RADIUS**2
            neck = (depth > 0) & (depth < KNOB_REACH) & (lateral.abs() < NECK_HALF_WIDTH)
            in_receiver = (cell_index == torch.tensor(receiver_cell)).all(-1)
            labels = torch.where((disc | neck) & in_receiver, pieces[owner_cell], labels)
    return labels


class JigsawView(PermutationView):
    """A 4 x 4 jigsaw puzzle whose pieces are rotated and swapped into a second picture."""

    name = "jigsaw"
    label = "Jigsaw puzzle"
    description = "A 4 x 4 jigsaw whose pieces rearrange (turning and trading places) into another picture."
    PARAMS = (SEED,)

    def check_cells(self, cells: int, size: int) -> None:
        if cells % PIECES_PER_SIDE:
            raise ViewError(
                f"view '{self.name}': size must be a multiple of {PIECES_PER_SIDE} for a 4 x 4 puzzle, got {size}"
            )

    def base_layout(self, cells: int) -> RegionLayout:
        generator = torch.Generator().manual_seed(self._params["seed"])
        destinations = [torch.randperm(4, generator=generator).tolist() for _ in ORBITS]
        swaps = torch.randint(0, 2, (4,), generator=generator).tolist()
        e_orbit, f_orbit = ORBITS.index("e"), ORBITS.index("f")

        cell_size = cells / PIECES_PER_SIDE
        pivots, turns, shifts = [], [], []
        for orbit in range(len(ORBITS)):
            for member in range(4):
                landing = destinations[orbit][member]
                final_orbit = orbit
                if orbit in (e_orbit, f_orbit) and swaps[landing]:
                    final_orbit = f_orbit if orbit == e_orbit else e_orbit
                home = torch.tensor(piece_cell(orbit, member), dtype=torch.float64)
                final = torch.tensor(piece_cell(final_orbit, landing), dtype=torch.float64)
                # Turning about the home cell's centre, then shifting it onto the final cell's centre,
                # is the same rigid motion as turning about the image centre (then trading places).
                pivots.append((home + 0.5) * cell_size)
                shifts.append((final - home) * cell_size)
                # The shorter way round: three quarter turns clockwise is one counter-clockwise.
                turns.append((landing - member + 1) % 4 - 1)
        shift = torch.stack(shifts)
        swing = random_swings(shift, generator, cells / 8)
        return RegionLayout.build(
            piece_labels(cells), pivot=torch.stack(pivots), quarter_turns=turns, shift=shift, swing=swing
        )
