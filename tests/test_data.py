"""Datasets (FOMM layout, pairs, evaluation sequences) and video I/O."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from mcc_fast.training.data import (
    FramePairDataset,
    UnreadableVideoWarning,
    VideoFolder,
    VideoReadError,
    VideoSequenceDataset,
    identity_of,
    probe_video,
    read_image,
    read_video_frames,
    read_video_frames_at,
    to_model_range,
    write_image,
    write_video,
)

S = 32
FRAMES = 12


def _frames(video: int, n: int = FRAMES, size: int = S) -> np.ndarray:
    """uint8 (n, size, size, 3): R = video id, G = 16 * frame index, B = a left-to-right
    ramp (so a horizontal flip is visible)."""
    out = np.zeros((n, size, size, 3), np.uint8)
    out[..., 0] = 30 + 20 * video
    out[..., 1] = (16 * np.arange(n))[:, None, None]
    out[..., 2] = np.linspace(0, 255, size).astype(np.uint8)[None, None, :]
    return out


def _make_layout(root: Path, fmt: str, names: dict[str, list[str]]) -> Path:
    for split, videos in names.items():
        for v, name in enumerate(videos):
            frames = _frames(v + (10 if split == "test" else 0) % 8)
            if fmt == "png":
                for k, frame in enumerate(frames):
                    write_image(root / split / name / f"{k}.png", frame)  # natural order: 2 < 10
            else:
                write_video(root / split / f"{name}.mp4", frames, fps=25)
    return root


NAMES = {"train": ["a#1", "a#2", "b#1", "c#7"], "test": ["d#1", "e#1"]}


@pytest.fixture(scope="module")
def png_root(tmp_path_factory) -> Path:
    return _make_layout(tmp_path_factory.mktemp("png"), "png", NAMES)


@pytest.fixture(scope="module")
def mp4_root(tmp_path_factory) -> Path:
    return _make_layout(tmp_path_factory.mktemp("mp4"), "mp4", NAMES)


# ---------------------------------------------------------------------------- video_io
def test_write_read_video_roundtrip(tmp_path):
    frames = _frames(1)
    path = write_video(tmp_path / "v.mp4", frames, fps=30)
    assert path == tmp_path / "v.mp4" and [p.name for p in tmp_path.iterdir()] == ["v.mp4"]
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames) == (S, S, FRAMES) and info.fps == pytest.approx(30)
    back = read_video_frames(path)
    assert back.dtype == np.uint8 and back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 3
    picked = read_video_frames_at(path, [5, 2, FRAMES + 3, 5])  # past the end -> last frame
    assert np.array_equal(picked, back[[5, 2, FRAMES - 1, 5]])
    assert read_video_frames(path, max_frames=4).shape[0] == 4


def test_write_video_odd_size_and_other_containers(tmp_path):
    frames = _frames(0, n=4, size=17)
    for name in ("odd.mp4", "x.avi"):
        assert read_video_frames(write_video(tmp_path / name, frames)).shape == frames.shape


def test_write_video_bad_input_and_atomicity(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="frames"):
        write_video(tmp_path / "a.mp4", np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="path"):
        write_video(tmp_path / "a.xyz", _frames(0))
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.mp4", _frames(0), fps=0)
    with pytest.raises(Exception):
        write_video(tmp_path / "a.mp4", _frames(0), codec="no-such-codec")
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left


def test_read_errors(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 50)
    with pytest.raises(VideoReadError, match="bad.mp4"):
        read_video_frames(tmp_path / "bad.mp4")
    with pytest.raises(VideoReadError, match="missing.mp4"):
        read_video_frames(tmp_path / "missing.mp4")


def test_identity_of():
    assert identity_of("id10001#abc#00001.mp4") == "id10001"
    assert identity_of("clip.mp4") == "clip" and identity_of("frames_dir") == "frames_dir"
    # only a video suffix is dropped: a frame folder with a dot in its name is its own identity
    assert identity_of("take.v2") == "take.v2" and identity_of("Clip.MP4") == "Clip"


# ------------------------------------------------------------------------- pair dataset
@pytest.mark.parametrize("layout", ["png", "mp4"])
def test_pairs_shapes_ranges(layout, png_root, mp4_root):
    root = png_root if layout == "png" else mp4_root
    ds = FramePairDataset(root, size=24, repeats=3, seed=0)  # 32 px sources resized to 24
    assert len(ds) == 3 * 4
    for i in range(len(ds)):
        item = ds[i]
        for key in ("source", "driving"):
            x = item[key]
            assert x.dtype == torch.float32 and x.shape == (3, 24, 24)
            assert x.min() >= -1 and x.max() <= 1
        assert item["frame_idx"].dtype == torch.int64 and item["frame_idx"].shape == (2,)
        assert 0 <= int(item["frame_idx"].min()) and int(item["frame_idx"].max()) < FRAMES
        assert item["name"] == ds.videos.entries[i % 4].name
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["source"].shape == (4, 3, 24, 24) and len(batch["name"]) == 4


def test_pairs_pick_the_right_frames(png_root):
    ds = FramePairDataset(png_root, size=S, repeats=2, hflip_prob=0.0, time_flip_prob=0.0)
    for i in range(len(ds)):
        item = ds[i]
        src, drv = item["frame_idx"].tolist()
        assert src <= drv  # sorted without time flip (FOMM)
        raw = _frames(i % 4)
        assert torch.equal(item["source"], to_model_range(raw[src]))
        assert torch.equal(item["driving"], to_model_range(raw[drv]))


def test_hflip_and_time_flip(png_root):
    plain = FramePairDataset(png_root, size=S, repeats=4, hflip_prob=0.0, time_flip_prob=0.0, seed=3)
    flipped = FramePairDataset(png_root, size=S, repeats=4, hflip_prob=1.0, time_flip_prob=0.0, seed=3)
    timed = FramePairDataset(png_root, size=S, repeats=4, hflip_prob=0.0, time_flip_prob=1.0, seed=3)
    for i in range(len(plain)):
        a, b, c = plain[i], flipped[i], timed[i]
        assert b["hflip"] and not a["hflip"] and c["time_flip"]
        # the same frames, mirrored left-right: the blue ramp now decreases
        assert torch.equal(b["source"], a["source"].flip(-1)) and torch.equal(b["driving"], a["driving"].flip(-1))
        assert b["source"][2, 0, 0] > b["source"][2, 0, -1]
        # the same frames, source and driving swapped: later frame first
        assert c["frame_idx"].tolist() == a["frame_idx"].flip(0).tolist()
        assert torch.equal(c["source"], a["driving"]) and torch.equal(c["driving"], a["source"])
        assert c["frame_idx"][0] >= c["frame_idx"][1]
    mixed = FramePairDataset(png_root, size=S, repeats=25, seed=0)
    flags = [(mixed[i]["hflip"], mixed[i]["time_flip"]) for i in range(len(mixed))]
    assert 20 < sum(f for f, _ in flags) < 80 and 20 < sum(t for _, t in flags) < 80


def test_identity_sampling(mp4_root):
    ds = FramePairDataset(mp4_root, size=S, repeats=5, id_sampling=True, seed=1)
    assert ds.identities == ["a", "b", "c"] and len(ds) == 15
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["identity"] == ds.identities[i % 3]
        seen.add(item["name"])
    assert {"a#1.mp4", "a#2.mp4"} <= seen  # both videos of identity a get used


def _equal_items(x: dict, y: dict) -> bool:
    return all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)


def test_seeded_determinism_and_epochs(mp4_root):
    a = FramePairDataset(mp4_root, size=S, repeats=4, seed=7)
    b = FramePairDataset(mp4_root, size=S, repeats=4, seed=7)
    c = FramePairDataset(mp4_root, size=S, repeats=4, seed=8)
    order = list(range(len(a)))[::-1]  # access order must not matter
    first = [a[i] for i in range(len(a))]
    assert all(_equal_items(first[i], b[i]) for i in order)
    key = lambda d: [(d[i]["frame_idx"].tolist(), d[i]["hflip"], d[i]["time_flip"]) for i in range(len(d))]  # noqa
    assert key(a) != key(c)
    a.set_epoch(1)
    assert a.epoch == 1 and key(a) != [(x["frame_idx"].tolist(), x["hflip"], x["time_flip"]) for x in first]
    a.set_epoch(0)
    assert key(a) == key(b)


def _collect(loader) -> list[dict]:
    return [batch for batch in loader]


def _equal_batches(xs: list[dict], ys: list[dict]) -> bool:
    return len(xs) == len(ys) and all(_equal_items(x, y) for x, y in zip(xs, ys))


@pytest.mark.parametrize("layout", ["png", "mp4"])
def test_worker_count_does_not_change_batches(layout, png_root, mp4_root):
    root = png_root if layout == "png" else mp4_root
    ds = FramePairDataset(root, size=S, repeats=3, seed=11)
    ds.set_epoch(2)
    runs = []
    for workers in (0, 2):
        g = torch.Generator().manual_seed(5)
        runs.append(_collect(DataLoader(ds, batch_size=4, shuffle=True, generator=g, num_workers=workers)))
    assert _equal_batches(*runs)


def test_distributed_sampler(mp4_root):
    ds = FramePairDataset(mp4_root, size=S, repeats=2, seed=2)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        seen = []
        for rank in (0, 1):
            sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
            sampler.set_epoch(epoch)
            indices = list(sampler)
            batches = _collect(DataLoader(ds, batch_size=2, sampler=sampler, num_workers=0))
            items = [ds[i] for i in indices]
            assert [n for b in batches for n in b["name"]] == [x["name"] for x in items]
            assert torch.equal(torch.cat([b["source"] for b in batches]), torch.stack([x["source"] for x in items]))
            seen += indices
        assert sorted(seen) == list(range(len(ds)))


def test_persistent_workers_follow_set_epoch(png_root):
    ds = FramePairDataset(png_root, size=S, repeats=2, seed=4)
    loader = DataLoader(ds, batch_size=8, num_workers=1, persistent_workers=True)
    got = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        got.append(_collect(loader))
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        assert _equal_batches(got[epoch], _collect(DataLoader(ds, batch_size=8)))
    assert not _equal_batches(got[0], got[1])


# ------------------------------------------------------------------ unreadable / empty
@pytest.fixture()
def corrupt_root(tmp_path, mp4_root) -> Path:
    root = tmp_path / "corrupt"
    shutil.copytree(mp4_root, root)
    (root / "train" / "x#1.mp4").write_bytes(b"\x00garbage" * 100)  # not a video
    good = (root / "train" / "a#1.mp4").read_bytes()
    (root / "train" / "y#1.mp4").write_bytes(good[: len(good) // 3])  # truncated
    (root / "train" / "z#1").mkdir()  # a frame folder without frames
    (root / "train" / "notes.json").write_text("{}")  # not a video: ignored
    return root


def test_corrupt_videos_are_skipped_and_counted(corrupt_root):
    ds = FramePairDataset(corrupt_root, size=S, repeats=3, seed=0)
    bad = {"x#1.mp4", "z#1"}
    assert len(ds.videos) == 7
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    assert all(x["name"] not in bad for x in items)
    assert bad <= set(ds.videos.unreadable_videos())
    assert ds.num_unreadable == len(ds.videos.unreadable_videos()) >= 2
    ours = [w for w in caught if issubclass(w.category, UnreadableVideoWarning)]
    assert len(ours) == ds.num_unreadable  # one warning per video, not per item
    assert all("x#1.mp4" in str(w.message) or "y#1" in str(w.message) or "z#1" in str(w.message) for w in ours)


def test_corrupt_count_seen_from_workers(corrupt_root):
    ds = FramePairDataset(corrupt_root, size=S, repeats=2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run2 = _collect(DataLoader(ds, batch_size=4, num_workers=2))
        assert ds.num_unreadable >= 2  # recorded by the workers, visible here
        run0 = _collect(DataLoader(FramePairDataset(corrupt_root, size=S, repeats=2, seed=0), batch_size=4))
    assert _equal_batches(run0, run2)


def test_all_unreadable_raises(tmp_path):
    (tmp_path / "train").mkdir()
    for k in range(2):
        (tmp_path / "train" / f"v{k}.mp4").write_bytes(b"junk")
    ds = FramePairDataset(tmp_path, size=S, max_attempts=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError,
                           match=r"5 draws in a row picked an unreadable video .*\(2 of its 2 videos unreadable so far"):
            ds[0]


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "readme.txt").write_text("no videos here")
    with pytest.raises(ValueError, match=r"no videos in .*train"):
        FramePairDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="test"):
        VideoSequenceDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VideoFolder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        FramePairDataset(tmp_path, split="val")


def test_bad_arguments(png_root):
    with pytest.raises(ValueError, match="repeats"):
        FramePairDataset(png_root, repeats=0)
    with pytest.raises(ValueError, match="hflip_prob"):
        FramePairDataset(png_root, hflip_prob=2)
    with pytest.raises(ValueError, match="size"):
        FramePairDataset(png_root, size=0)
    with pytest.raises(IndexError):
        FramePairDataset(png_root, repeats=1)[4]


# ------------------------------------------------------------------ evaluation dataset
@pytest.mark.parametrize("layout", ["png", "mp4"])
def test_sequences_whole_videos_in_order(layout, png_root, mp4_root):
    root = png_root if layout == "png" else mp4_root
    ds = VideoSequenceDataset(root, size=S)
    assert len(ds) == 2
    item = ds[0]
    video = item["video"]
    assert item["ok"] and video.dtype == torch.float32 and video.shape == (FRAMES, 3, S, S)
    assert video.min() >= -1 and video.max() <= 1 and item["num_frames"] == FRAMES
    green = (video[:, 1].mean((1, 2)) + 1) * 127.5
    assert np.allclose(green.numpy(), 16 * np.arange(FRAMES), atol=4)  # frames in order
    short = VideoSequenceDataset(root, size=20, max_frames=5)[1]
    assert short["video"].shape == (5, 3, 20, 20)


def test_sequence_unreadable_video(corrupt_root):
    ds = VideoSequenceDataset(corrupt_root, split="train", size=S)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = {ds.videos.entries[i].name: ds[i] for i in range(len(ds))}
    messages = [str(w.message) for w in caught if issubclass(w.category, UnreadableVideoWarning)]
    assert len(messages) == ds.num_unreadable and any("x#1.mp4" in m for m in messages)
    assert not items["x#1.mp4"]["ok"] and items["x#1.mp4"]["video"].shape == (0, 3, S, S)
    assert items["a#1.mp4"]["ok"] and ds.num_unreadable >= 2


def test_a_stream_whose_frame_size_changes_is_an_unreadable_video(tmp_path):
    """Two MPEG-2 program streams of different sizes, concatenated (a resolution change
    mid-stream): VideoReadError naming the file, which the datasets skip and count."""
    av = pytest.importorskip("av")

    def write(path, w, h):
        container = av.open(str(path), "w", format="mpeg")
        stream = container.add_stream("mpeg2video", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        return path.read_bytes()

    joined = tmp_path / "joined.mpg"
    joined.write_bytes(write(tmp_path / "a.mpg", 64, 64) + write(tmp_path / "b.mpg", 96, 48))
    with pytest.raises(VideoReadError, match=r"joined\.mpg.*different sizes"):
        read_video_frames_at(joined, list(range(12)))
    with pytest.raises(VideoReadError, match="different sizes"):
        read_video_frames(joined)


def test_stretched_videos_warn_once_each(tmp_path):
    import warnings

    from mcc_fast.training.data.datasets import AspectRatioWarning

    folder = tmp_path / "clips"
    folder.mkdir()
    write_video(folder / "wide.mp4", np.zeros((4, 48, 80, 3), np.uint8), fps=25)
    write_video(folder / "square.mp4", np.zeros((4, 64, 64, 3), np.uint8), fps=25)
    videos = VideoFolder(folder, size=S)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            for index in range(len(videos)):
                assert videos.frames(index).shape[1:] == (S, S, 3)
                videos.frames(index, [0, 2])
    stretched = [w for w in caught if issubclass(w.category, AspectRatioWarning)]
    assert len(stretched) == 1 and "wide.mp4: 80x48 frames stretched to 32x32" in str(stretched[0].message)


def test_stretched_video_warns_once_across_workers(tmp_path):
    from mcc_fast.training.data.datasets import AspectRatioWarning

    (tmp_path / "train").mkdir()
    write_video(tmp_path / "train" / "wide.mp4", np.zeros((4, 48, 80, 3), np.uint8), fps=25)
    ds = FramePairDataset(tmp_path, size=S, repeats=4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the workers warn (their stderr)
        _collect(DataLoader(ds, batch_size=2, num_workers=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds[0]
    assert not [w for w in caught if issubclass(w.category, AspectRatioWarning)]  # already warned by a worker


def test_broken_symlinks_are_reported_not_silently_dropped(tmp_path):
    """A split folder of links into storage that is not mounted: each broken link named like
    a video (or a frame folder) is an unreadable video, warned about (naming the link and its
    missing target) and counted; a broken link with another suffix is ignored like any file."""
    train = tmp_path / "train"
    write_video(train / "a#1.mp4", _frames(0, n=3), fps=25)
    (train / "b#1.mp4").symlink_to(tmp_path / "unmounted" / "b#1.mp4")
    (train / "c#1").symlink_to(tmp_path / "unmounted" / "c#1")
    (train / "notes.txt").symlink_to(tmp_path / "unmounted" / "notes.txt")
    ds = FramePairDataset(tmp_path, size=S, repeats=2, seed=0)
    assert [e.name for e in ds.videos.entries] == ["a#1.mp4", "b#1.mp4", "c#1"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    assert {x["name"] for x in items} == {"a#1.mp4"}
    assert sorted(ds.videos.unreadable_videos()) == ["b#1.mp4", "c#1"]
    messages = [str(w.message) for w in caught if issubclass(w.category, UnreadableVideoWarning)]
    assert len(messages) == 2 and all("symbolic link to missing" in m and "unmounted" in m for m in messages)


def _claim_size(png: Path, width: int, height: int) -> None:
    """Rewrite a PNG's header (IHDR, with a valid CRC) to claim another size, as a corrupt file can."""
    import struct
    import zlib

    data = bytearray(png.read_bytes())
    k = data.find(b"IHDR")
    data[k + 4:k + 12] = struct.pack(">II", width, height)
    data[k + 17:k + 21] = struct.pack(">I", zlib.crc32(bytes(data[k:k + 17])) & 0xFFFFFFFF)
    png.write_bytes(bytes(data))


def test_a_frame_whose_header_claims_a_huge_size_is_an_unreadable_video(tmp_path):
    """PIL refuses an image claiming > 179 M pixels with DecompressionBombError (not an
    OSError): it must be a VideoReadError naming the file, so the video is skipped and
    counted, not a crash of the DataLoader."""
    for name in ("a#1", "b#1"):
        for k, frame in enumerate(_frames(0, n=3)):
            write_image(tmp_path / "train" / name / f"{k}.png", frame)
    bad = tmp_path / "train" / "a#1" / "1.png"
    _claim_size(bad, 100_000, 100_000)
    with pytest.raises(VideoReadError, match=r"1\.png.*not a readable image"):
        read_image(bad)
    ds = FramePairDataset(tmp_path, size=S, repeats=4, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    assert len(items) == len(ds) and ds.videos.unreadable_videos() == ["a#1"]
    assert any(issubclass(w.category, UnreadableVideoWarning) and "1.png" in str(w.message) for w in caught)


def test_evaluation_clip_of_a_large_video_holds_one_full_size_frame(tmp_path):
    """VideoSequenceDataset (what `mcc-fast evaluate` reads) resizes each frame as it is decoded: peak
    memory is one frame at the file's size plus the clip at the dataset's size, not the whole video at the
    file's size (a long 1080p test video needed F x 6 MB, twice, before its resize)."""
    import tracemalloc

    n, native, size = 40, 192, 16
    (tmp_path / "test").mkdir()
    frames = np.repeat(_frames(2, n=1, size=native), n, axis=0)
    write_video(tmp_path / "test" / "long.mp4", frames)
    VideoSequenceDataset(tmp_path, split="test", size=size)[0]  # warm-up: lazy imports, decoder set-up
    dataset = VideoSequenceDataset(tmp_path, split="test", size=size)  # fresh: nothing cached
    tracemalloc.start()
    try:
        item = dataset[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert item["ok"] and item["video"].shape == (n, 3, size, size)
    frame_bytes = native * native * 3
    assert peak < 8 * frame_bytes, f"peak {peak} bytes = {peak / frame_bytes:.1f} full-size frames"
    from mcc_fast.training.data.video_io import resize_frames

    expected = resize_frames(read_video_frames(tmp_path / "test" / "long.mp4"), size)
    assert torch.equal(item["video"], to_model_range(expected))  # the same pixels as resizing the decoded clip


def test_frame_cache_is_least_recently_used_and_skips_what_cannot_fit():
    from mcc_fast.training.data.datasets import FrameCache

    cache = FrameCache(max_bytes=200)
    a, b, c = (np.full(80, i, np.uint8) for i in range(3))
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # "a" is now the most recent: "b" goes first
    cache.put("c", c)
    assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
    cache.put("huge", np.zeros(201, np.uint8))  # larger than the whole budget: not stored, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2 and cache.get("a") is a


def test_an_index_past_the_end_gives_the_last_frame_cached_or_not(mp4_root):
    """VideoFolder.frames: an index past the last decodable frame gives that frame, whether the clip
    is decoded for the request or already in the cache."""
    fresh = VideoFolder(mp4_root / "train", size=S)
    uncached = fresh.frames(0, [FRAMES - 1, FRAMES + 5])
    cached = VideoFolder(mp4_root / "train", size=S)
    whole = cached.clip(0)  # decodes and caches the clip
    assert len(whole) == FRAMES
    from_cache = cached.frames(0, [FRAMES - 1, FRAMES + 5])
    assert np.array_equal(from_cache[0], whole[-1]) and np.array_equal(from_cache[1], whole[-1])
    assert np.array_equal(uncached, from_cache)


def test_to_model_range_maps_0_255_onto_minus_one_one():
    frames = np.zeros((1, 2, 2, 3), np.uint8)
    frames[..., 1], frames[..., 2] = 51, 255  # channel 0 black, 1 grey, 2 full
    x = to_model_range(frames)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-1.0, 51 / 127.5 - 1, 1.0]))
