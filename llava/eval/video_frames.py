"""Video-LLaVA's frame sampling and preprocessing, decoded with PyAV (the `video` extra).

As in the original (LanguageBind's video processor, decord backend): 8 frame indices
`numpy.linspace(0, n - 1, 8, dtype=int)` (truncated, not rounded), values / 255, CLIP mean / std, short side
scaled to 224 (bilinear, `align_corners=False`, long side floored), centre crop 224. The original also flips the
whole clip horizontally with p = 0.5 at inference; here that is an option, off by default, seeded per call.
PyAV is used instead of decord (decord's last wheels are from 2021, x86-64 Linux only). Both decode through
FFmpeg; on synthetic 320x240 test clips (MPEG-4 in .avi / .mkv, H.264 in .mp4) the sampled indices and the RGB
frames were identical to decord 0.6.0's, but other codecs or FFmpeg builds may round colour conversion
differently. The frame count is the stream header's, else the number of video packets (as decord's index).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NUM_FRAMES = 8
SIZE = 224


class VideoDecodeError(ValueError):
    """A video that cannot be opened or decoded; the message is one line naming the file."""


def frame_indices(n_frames: int, num_frames: int = NUM_FRAMES) -> list[int]:
    """The original's sampled frame indices: linspace(0, n - 1, num_frames) truncated to int."""
    return np.linspace(0, n_frames - 1, num_frames, dtype=int).tolist()


def _count_frames(container) -> int:
    """Frames in the first video stream: the header's count, else the number of video packets."""
    stream = container.streams.video[0]
    if stream.frames:
        return stream.frames
    n = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    return n


def decode_frames(path: str | Path, num_frames: int = NUM_FRAMES) -> torch.Tensor:
    """The sampled RGB frames of a video as uint8 [3, T, H, W]; VideoDecodeError for an unreadable file."""
    import av  # the `video` extra

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            wanted = frame_indices(_count_frames(container), num_frames)
            decoded = [frame.to_ndarray(format="rgb24") for frame in _frames_at(container, set(wanted))]
    except (av.FFmpegError, OSError, IndexError) as err:
        raise VideoDecodeError(f"{path}: cannot decode video ({err.__class__.__name__}: {err}); "
                               "re-download or re-encode the file") from None
    if len(decoded) < len(set(wanted)) or not decoded:
        raise VideoDecodeError(f"{path}: only {len(decoded)} of the {len(set(wanted))} sampled frames decode; "
                               "the file is truncated, re-download it")
    by_index = dict(zip(sorted(set(wanted)), decoded))
    video = np.stack([by_index[i] for i in wanted])  # [T, H, W, 3]
    return torch.from_numpy(video).permute(3, 0, 1, 2)


def _frames_at(container, wanted: set[int]):
    """Decode the first video stream in order, yielding the frames whose index is in `wanted`."""
    last = max(wanted)
    for index, frame in enumerate(container.decode(video=0)):
        if index in wanted:
            yield frame
        if index >= last:
            return


def preprocess_frames(video: torch.Tensor, flip_seed: int | None = None, size: int = SIZE) -> torch.Tensor:
    """uint8 [3, T, H, W] -> normalised float [3, T, size, size] (short side, centre crop, optional flip)."""
    x = video.float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1, 1)
    x = (x - mean) / std
    _, _, h, w = x.shape
    new_h, new_w = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    x = x[..., top:top + size, left:left + size]
    if flip_seed is not None and torch.rand(1, generator=torch.Generator().manual_seed(flip_seed)).item() < 0.5:
        x = x.flip(-1)
    return x


def load_video(path: str | Path, num_frames: int = NUM_FRAMES, flip_seed: int | None = None) -> torch.Tensor:
    """A video file -> the tower's input [3, T, 224, 224] (the original's random flip only with `flip_seed`)."""
    return preprocess_frames(decode_frames(path, num_frames), flip_seed)
