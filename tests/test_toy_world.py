"""The toy world (examples/toy/world.py): deterministic clips, exact ground-truth edits, captions from parameters."""

from __future__ import annotations

import dataclasses

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


@pytest.mark.parametrize("kind", world.EDIT_KINDS)
@pytest.mark.parametrize("seed", [world.HELDOUT_SEED0 + i for i in range(4)])
def test_every_edit_kind_is_deterministic_and_changes_only_pixels_inside_its_mask(seed, kind):
    case = world.edit_case(seed, kind)
    again = world.edit_case(seed, kind)
    assert np.array_equal(case.source, again.source) and np.array_equal(case.edited, again.edited)
    assert np.array_equal(case.mask, again.mask) and case.kind == kind
    changed = (case.source != case.edited).any(axis=-1)
    assert changed[0].sum() >= 4, "the edit is not visible in the edited first frame"
    assert not (changed & ~case.mask).any(), "the edit changed pixels outside its mask"
    assert case.edited_params.shapes[1:] == case.params.shapes[1:]  # other shapes untouched
    assert case.edited_caption != case.caption  # the caption describes the edit
    s, e = case.params.shapes[0], case.edited_params.shapes[0]
    expected = {"recolor": lambda: e.color != s.color and e.kind == s.kind,
                "shape": lambda: e.kind != s.kind and e.color == s.color,
                "pattern": lambda: (s.pattern, e.pattern) == ("solid", "striped"),
                "size": lambda: abs(e.size / s.size - 1) > 0.3,
                "add_object": lambda: s.badge is None and e.badge is not None}[kind]
    assert expected(), (s, e)
    # The added object and the resized shape move with the shape: same path, same motion.
    assert (e.x, e.y, e.direction, e.speed) == (s.x, s.y, s.direction, s.speed)


def test_recolor_picks_a_color_no_shape_of_the_clip_has():
    for seed in world.heldout_seeds(6):
        case = world.edit_case(seed)
        new = world.SHAPE_COLORS[case.edited_params.shapes[0].color]
        assert new not in [world.SHAPE_COLORS[s.color] for s in case.params.shapes]


def test_stripes_and_badges_ride_on_their_shape():
    p = world.sample_params(1)
    s = dataclasses.replace(p.shapes[0], pattern="striped", color2="white", spin=0.0, growth=0.0,
                            badge=world.Badge("disc", "yellow", 0.5, 0.0, 0.4))
    frames, masks = world.render(dataclasses.replace(p, shapes=(s,)))
    # The same pixels relative to the shape at every whole-pixel shift: rigid motion.
    dx, dy = world.DIRECTIONS[s.direction]
    still = dataclasses.replace(s, speed=0.0)
    ref, _ = world.render(dataclasses.replace(p, shapes=(still,)))
    inside = masks[0, 0]
    assert len(np.unique(frames[0][inside].reshape(-1, 3), axis=0)) > 3  # stripes + badge: several colors
    assert np.array_equal(frames[0][inside], ref[0][inside])


def test_captions_are_made_from_the_parameters():
    p = world.sample_params(5)
    text = world.caption(p)
    for s in p.shapes:
        pace = "quickly" if s.speed > world.FAST * p.size else "slowly"
        assert f"{world.describe(s)} moves {pace} {s.direction}" in text
    assert text.endswith(f"over a {p.bg_from}-{p.bg_to} gradient")
    s = world.Shape("disc", "red", 10, 10, "down", 1.0, 0.26 * world.SIZE, 0.0, 0.0, pattern="striped",
                    color2="white", badge=world.Badge("square", "yellow", 0.5, 0, 0.4))
    assert world.describe(s) == "a big red and white striped disc with a small yellow block"
    with pytest.raises(ValueError, match="unknown edit kind"):
        world.edit_case(world.HELDOUT_SEED0, "blur")


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


def test_long_clips_bounce_inside_the_frame_and_keep_the_short_world():
    """Long clips (benchmarks/long_clips.py) are new renders; the 9-frame world stays bit-identical (pinned)."""
    import hashlib

    short = world.edit_case(1000000, "recolor")
    digest = hashlib.sha256(short.source.tobytes() + short.edited.tobytes()).hexdigest()[:16]
    assert digest == "6e3d235619f81e2e"
    for seed, kind in zip(range(1000000, 1000005), world.EDIT_KINDS):
        case = world.long_edit_case(seed, kind, frames=33)
        assert case.source.shape == (33, world.SIZE, world.SIZE, 3) and case.mask.any(axis=(1, 2)).all()
        assert not (case.source != case.edited).any(axis=-1)[~case.mask].any()  # edits only inside the mask
        assert np.array_equal(case.source[0], world.edit_case(seed, kind).source[0])


@pytest.mark.parametrize("seed", [1_000_000, 1_000_001, 1_000_002, 1_000_003])
def test_prior_diagnostic_measures_the_first_shapes_path_and_reverses_captions(seed):
    """benchmarks/toy_prior.py: the path it measures on a true clip points the way the caption says; a clip
    that repeats its first frame has not moved; reversed captions swap every motion word."""
    from benchmarks.toy_prior import first_shape_path, reverse_motion

    p = world.sample_params(seed)
    frames = world.render(p)[0]
    path = first_shape_path(frames, p)
    s = p.shapes[0]
    true = np.array(world.shape_state(s, world.FRAMES - 1)[:2]) - np.array(world.shape_state(s, 0)[:2])
    assert path is not None and path @ true > 0.8 * (true @ true)  # at least 80% of the way, the right way
    assert np.allclose(first_shape_path(np.repeat(frames[:1], world.FRAMES, 0), p), 0)
    assert reverse_motion(world.caption(p)) != world.caption(p)
    assert reverse_motion(reverse_motion(world.caption(p))) == world.caption(p)
    assert reverse_motion("a square moves slowly left, grows and spins clockwise over a blue-teal gradient") == \
        "a square moves slowly right, shrinks and spins counterclockwise over a blue-teal gradient"
