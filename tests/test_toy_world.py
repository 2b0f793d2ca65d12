"""The toy world (examples/toy/world.py): deterministic clips, exact ground-truth edits, captions from parameters."""

from __future__ import annotations

import numpy as np
import pytest

from examples.toy import jobs, world
from examples.toy.toy_model import TRAIN_CLIPS


def test_a_seed_renders_the_same_clip_every_time():
    a, b = world.render(world.sample_params(123)), world.render(world.sample_params(123))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    frames, masks = a
    assert frames.shape == (world.FRAMES, world.SIZE, world.SIZE, 3) and frames.dtype == np.uint8
    assert (world.FRAMES - 1) % 4 == 0  # the Wan VAE needs 4k+1 frames
    assert not np.array_equal(frames, world.render(world.sample_params(124))[0])
    assert masks.shape[1:] == frames.shape[:3] and masks.any(axis=(2, 3)).all()  # every shape visible in every frame


def test_shapes_move_and_the_background_stays():
    p = world.sample_params(7)
    frames, masks = world.render(p)
    outside = ~masks.any(axis=0)  # pixels no shape ever touches
    assert np.array_equal(frames[0][outside.all(axis=0)], frames[-1][outside.all(axis=0)])
    c0 = np.argwhere(masks[0, 0]).mean(axis=0)
    c8 = np.argwhere(masks[0, -1]).mean(axis=0)
    s = p.shapes[0]
    dx, dy = world.DIRECTIONS[s.direction]
    moved = (c8 - c0)[::-1]  # (x, y)
    assert np.dot(moved, (dx, dy)) > 0.7 * s.speed * (world.FRAMES - 1)


@pytest.mark.parametrize("seed", [world.HELDOUT_SEED0 + i for i in range(6)])
def test_ground_truth_edit_differs_from_the_source_only_inside_the_mask(seed):
    case = world.edit_case(seed)
    changed = (case.source != case.edited).any(axis=-1)
    assert changed.any(), "the edit changed nothing"
    assert not (changed & ~case.mask).any(), "the edit changed pixels outside the edited shape's mask"
    assert case.edited_params.shapes[0].color != case.params.shapes[0].color
    assert case.edited_params.shapes[1:] == case.params.shapes[1:]
    new = world.SHAPE_COLORS[case.edited_params.shapes[0].color]
    assert new not in [world.SHAPE_COLORS[s.color] for s in case.params.shapes]


def test_captions_are_made_from_the_parameters():
    p = world.sample_params(5)
    text = world.caption(p)
    for s in p.shapes:
        assert f"{s.color} {s.kind} moves {s.direction}" in text
    assert text.endswith(f"over a {p.bg_from}-{p.bg_to} gradient")
    case = world.edit_case(world.HELDOUT_SEED0 + 4)
    assert case.caption == "a red disc moves down over a sand-pink gradient"
    assert case.edited_caption == "a cyan disc moves down over a sand-pink gradient"


def test_heldout_clips_are_disjoint_from_pretraining():
    assert world.heldout_seeds(3)[0] >= TRAIN_CLIPS and world.HELDOUT_SEED0 >= TRAIN_CLIPS
    with pytest.raises(ValueError, match="unknown color"):
        world.recolor(world.sample_params(0), 0, "mauve")


def test_written_case_reads_back_exactly(tmp_path):
    case = world.edit_case(world.HELDOUT_SEED0 + 1)
    job = jobs.write_case(case, tmp_path / "job")
    truth, mask = jobs.read_truth(job)
    assert np.array_equal(truth, case.edited) and np.array_equal(mask, case.mask)
    assert (job / "reference" / f"{world.FRAMES - 1}.png").exists() and (job / "edited_first.png").exists()
    assert len(list((job / "source").glob("*.png"))) == world.FRAMES
