"""Frame sampling and preprocessing on synthetic videos written here with PyAV (frame i is grey level 12 i)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llava.eval.video_frames import (
    CLIP_MEAN,
    CLIP_STD,
    VideoDecodeError,
    decode_frames,
    frame_indices,
    load_video,
    preprocess_frames,
)

av = pytest.importorskip("av", reason="PyAV (the `video` extra) is not installed")


def write_video(path, n_frames: int = 20, width: int = 40, height: int = 30) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            image = np.full((height, width, 3), 12 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_indices_truncate_like_numpy_linspace_int():
    assert frame_indices(20) == [0, 2, 5, 8, 10, 13, 16, 19]  # 2.71 -> 2, 5.43 -> 5: truncated, not rounded
    assert frame_indices(8) == list(range(8))
    assert frame_indices(3) == [0, 0, 0, 0, 1, 1, 1, 2]


@pytest.mark.parametrize("suffix", [".avi", ".mkv"])  # .mkv stores no frame count: packets are counted
def test_decoded_frames_are_the_sampled_indices(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    write_video(path)
    video = decode_frames(path)
    assert video.shape == (3, 8, 30, 40) and video.dtype == torch.uint8
    grey = video[:, :, 10:20, 10:30].float().mean(dim=(0, 2, 3))
    assert [round(g / 12) for g in grey.tolist()] == frame_indices(20)


def test_preprocess_geometry_and_normalisation():
    video = torch.full((3, 8, 30, 40), 255, dtype=torch.uint8)
    video[:, :, :, :20] = 0  # left half black
    x = preprocess_frames(video)
    assert x.shape == (3, 8, 224, 224)  # short side 30 -> 224, long side floor(40 / 30 * 224) = 298, crop 224
    white = torch.tensor([(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)])
    black = torch.tensor([-m / s for m, s in zip(CLIP_MEAN, CLIP_STD)])
    torch.testing.assert_close(x[:, 0, 100, -1], white)
    torch.testing.assert_close(x[:, 0, 100, 0], black)
    edge = int(round((math.floor(40 / 30 * 224) - 224) / 2))  # the crop's left offset
    assert (x[0, 0, 100] > 0).int().argmax().item() == 149 - edge  # black/white edge at 298 / 2 in the resized clip


def test_flip_is_off_by_default_and_seeded():
    video = torch.zeros(3, 8, 30, 40, dtype=torch.uint8)
    video[:, :, :, 30:] = 255  # not mirror-symmetric
    plain = preprocess_frames(video)
    flips = {seed: torch.equal(preprocess_frames(video, flip_seed=seed), plain.flip(-1)) for seed in range(8)}
    assert set(flips.values()) == {True, False}  # some seeds flip the whole clip, some do not
    for seed, flipped in flips.items():
        assert torch.equal(preprocess_frames(video, flip_seed=seed), plain.flip(-1) if flipped else plain)


def test_load_video_end_to_end(tmp_path):
    path = tmp_path / "clip.avi"
    write_video(path)
    x = load_video(path)
    assert x.shape == (3, 8, 224, 224)
    torch.testing.assert_close(x, preprocess_frames(decode_frames(path)))


def test_corrupt_or_missing_video_is_a_one_line_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    for path in (bad, tmp_path / "missing.mp4"):
        with pytest.raises(VideoDecodeError) as err:
            decode_frames(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
