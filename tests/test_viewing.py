"""Frames for looking at (media.viewing): the mask overlay contrasts with the object it covers, contact sheets
label their rows and frames and show every frame (or say which), small videos are enlarged (issue 22)."""

from __future__ import annotations

import numpy as np

from media.viewing import (
    LABEL_HEIGHT,
    PALETTE,
    contrast_colour,
    enlarge,
    label_band,
    labelled_panels,
    labelled_sheet,
    outlined_overlay,
    sheet_picks,
)


def red_disc(t: int = 9, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.zeros((t, size, size, 3), np.uint8)
    frames[...] = (90, 140, 90)
    masks = np.stack([(xx - 8 - i) ** 2 + (yy - 16) ** 2 <= 36 for i in range(t)])
    frames[masks] = (205, 40, 35)
    return frames, masks


def test_the_overlay_on_a_red_object_is_not_red_and_kept_pixels_are_untouched():
    frames, masks = red_disc()
    name, colour = contrast_colour(frames, masks)
    assert name != "red" and np.abs(np.asarray(colour) - (205, 40, 35)).sum() > 300
    shown = outlined_overlay(frames, masks)
    assert np.array_equal(shown[~masks], frames[~masks])
    inside = shown[masks].astype(int)
    assert np.abs(inside - (205, 40, 35)).sum(1).mean() > 60  # the region visibly changes colour
    edge = masks[0] & ~np.roll(masks[0], 1, axis=1)  # left border pixels: the outline at full strength
    assert (shown[0][edge] == colour).all()
    blue, _ = contrast_colour(np.full_like(frames, (40, 90, 255)), masks)
    assert blue != "blue" and set(PALETTE) >= {name, blue}


def test_a_sheet_of_nine_frames_shows_all_nine_labelled():
    frames, masks = red_disc(9)
    sheet = labelled_sheet([("source", frames), ("mask", outlined_overlay(frames, masks))], thumb_width=96)
    assert sheet.shape[1] == 9 * (96 + 2) - 2  # every frame, frame 4 included
    assert sheet.shape[0] == 2 * (LABEL_HEIGHT + LABEL_HEIGHT + 96) + 4
    row_band = sheet[:LABEL_HEIGHT]
    assert (row_band == 255).any() and np.array_equal(row_band, label_band(sheet.shape[1], "source (all frames)"))
    frame_band = sheet[LABEL_HEIGHT:2 * LABEL_HEIGHT, 4 * 98:4 * 98 + 96]
    assert np.array_equal(frame_band, label_band(96, "frame 4"))
    thumb = sheet[2 * LABEL_HEIGHT:2 * LABEL_HEIGHT + 96, 4 * 98:4 * 98 + 96]
    assert np.array_equal(thumb, enlarge(frames[4], 3))  # small frames: nearest, crisp blocks


def test_a_long_clip_says_which_frames_it_shows():
    assert list(sheet_picks(9, 17)) == list(range(9))
    picks = sheet_picks(49, 17)
    assert len(picks) == 17 and picks[0] == 0 and picks[-1] == 48
    frames = np.zeros((49, 16, 16, 3), np.uint8)
    sheet = labelled_sheet([("condition", frames)], thumb_width=64)
    text = f"condition (frames {', '.join(map(str, picks))} of 0-48)"
    assert np.array_equal(sheet[:LABEL_HEIGHT], label_band(sheet.shape[1], text))


def test_labelled_panels_keeps_its_behaviour():
    video = np.zeros((2, 32, 32, 3), np.uint8)
    out = labelled_panels([("a", video), ("b", video)])
    assert out.shape == (2, LABEL_HEIGHT + 256, 2 * 256 + 4, 3)
