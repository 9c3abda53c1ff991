"""Video and image files through PyAV and PIL: the package's one video module.

Frames are ``uint8`` RGB arrays ``(H, W, 3)`` everywhere in this module.

- `probe_video(path)`: metadata (size, exact frame rate as a Fraction, frame count, audio).
- `iter_video_frames(path)`: streaming decode, one frame at a time (never the whole video
  in memory).
- `read_image(path)`: a still image (png, jpg, ...) as RGB.
- `VideoWriter(path, fps, audio_from=...)`: streaming H.264 encode at the given (possibly
  fractional) frame rate; copies the audio stream of `audio_from` when it has one
  (re-encoded to AAC when the output container cannot hold its codec), interleaved with
  the video; writes a temporary file next to `path` and renames it when complete.
- `atomic_output(path)`: the same temp-file + fsync + rename protocol for any writer.

Output frames are constant-rate: frame i is shown at i / fps (a variable-rate input is
written at its average rate).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .atomic import real_target, temporary_sibling

#: Suffixes of still images `read_image` is meant for.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
#: Output suffix -> container format for `VideoWriter` (all hold H.264 and AAC).
VIDEO_OUTPUT_EXTENSIONS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_OUTPUT_EXTENSIONS",
    "VideoInfo",
    "TruncatedVideoWarning",
    "VideoReadError",
    "VideoWriteError",
    "VideoWriter",
    "atomic_output",
    "temporary_sibling",
    "upright",
    "iter_video_frames",
    "pil_to_rgb8",
    "probe_video",
    "read_image",
]


class VideoReadError(RuntimeError):
    """A video or image file that cannot be opened, is not a video, or fails to decode."""


class TruncatedVideoWarning(UserWarning):
    """A video that decoded to fewer frames than its container lists (a truncated download)."""


class VideoWriteError(RuntimeError):
    """A video file that cannot be written (bad suffix, encoder failure, no frames)."""


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a video file.

    width, height: as displayed (after the display rotation, which `iter_video_frames`
    applies); fps: exact frame rate (e.g. Fraction(30000, 1001)), or for a variable-rate
    stream whose container records no average (Matroska, WebM) its frames over its
    timestamps' span; num_frames: as the container records it, else counted from the packets
    (0 when unknown); duration: seconds or None; audio_codec: None when there is no audio
    stream; rotation: the display rotation in degrees counterclockwise (0, 90, 180 or 270).
    """

    width: int
    height: int
    fps: Fraction
    num_frames: int
    duration: float | None
    codec: str
    container: str
    audio_codec: str | None
    rotation: int = 0

    @property
    def has_audio(self) -> bool:
        """True when the file has an audio stream."""
        return self.audio_codec is not None

    def estimated_frames(self) -> int | None:
        """The frame count, from the container or from duration x fps; None when unknown."""
        if self.num_frames > 0:
            return self.num_frames
        if self.duration:
            return max(1, round(self.duration * float(self.fps)))
        return None


def _av():
    import av  # local import: PyAV loads FFmpeg, keep `import mcc_fast` light

    return av


# ---- reading ---------------------------------------------------------------------------------

# Demuxers FFmpeg uses for single still images: not videos.
_IMAGE_DEMUXERS = ("image2", "image2pipe")


def _is_image_demuxer(name: str) -> bool:
    return any(part in _IMAGE_DEMUXERS or part.endswith("_pipe") for part in name.split(","))


def _broken_link_note(path: Path) -> str:
    """' (a symbolic link to missing TARGET)' for a broken link, else ''."""
    try:
        return f" (a symbolic link to missing {os.readlink(path)!r})" if path.is_symlink() else ""
    except OSError:
        return ""


def _refuse_special(path: Path, what: str) -> None:
    """VideoReadError for a named pipe or socket: opening one waits for a writer, for ever."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return  # reported by the open
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket"
        raise VideoReadError(f"{what} {str(path)!r} is not a regular file ({kind}: reading it would wait for a "
                             "writer)")


@contextmanager
def _open_video(path: str | os.PathLike, what: str) -> Iterator[Any]:
    """Open `path` for reading with PyAV; `what` names it in errors (e.g. "driving video")."""
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"{what} {str(path)!r} does not exist{_broken_link_note(path)}")
    if path.is_dir():
        raise VideoReadError(f"{what} {str(path)!r} is a folder, not a video file")
    _refuse_special(path, what)
    av = _av()
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise VideoReadError(f"{what} {str(path)!r} is not a readable video ({reason})") from None
    try:
        if _is_image_demuxer(container.format.name):
            raise VideoReadError(f"{what} {str(path)!r} is a still image, not a video")
        if not container.streams.video:
            raise VideoReadError(f"{what} {str(path)!r} has no video stream")
        yield container
    finally:
        container.close()


def _frame_rate(stream: Any) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    return Fraction(25)


def quarter_turns(frame: Any) -> int:
    """Counterclockwise quarter turns (0..3) that display a decoded PyAV frame upright (its
    display matrix: phone videos shot in portrait carry one)."""
    rotation = getattr(frame, "rotation", 0) or 0
    return int(round(float(rotation) / 90.0)) % 4


def upright(frame: Any) -> np.ndarray:
    """uint8 RGB (H, W, 3) of a decoded PyAV frame, turned as it is displayed."""
    image = frame.to_ndarray(format="rgb24")
    turns = quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _scan_packets(container: Any, stream: Any) -> tuple[int, float | None]:
    """(video packets, seconds their timestamps span) by demuxing without decoding."""
    count, first, end = 0, None, None
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue
        count += 1
        start = float(packet.pts * packet.time_base)
        stop = start + float((packet.duration or 0) * packet.time_base)
        first = start if first is None else min(first, start)
        end = stop if end is None else max(end, stop)
    return count, (end - first if first is not None and end > first else None)


def _first_frame_turns(container: Any, stream: Any) -> int:
    try:
        for frame in container.decode(stream):
            return quarter_turns(frame)
    except Exception:  # noqa: BLE001 - a broken first frame is reported when the video is decoded
        return 0
    return 0


def _turns_of(path: str | os.PathLike) -> int:
    av = _av()
    try:
        with av.open(str(path), mode="r") as container:
            return _first_frame_turns(container, container.streams.video[0])
    except Exception:  # noqa: BLE001
        return 0


def probe_video(path: str | os.PathLike, what: str = "video") -> VideoInfo:
    """Read a video file's metadata (see VideoInfo) without decoding it beyond its first frame
    (for the display rotation); a container that records no frame count has its packets
    counted. Raises VideoReadError (naming it `what`) when the file is missing, unreadable, a
    still image, or has no video stream."""
    with _open_video(path, what) as container:
        stream = container.streams.video[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        fps, frames = _frame_rate(stream), int(stream.frames or 0)
        rewound = True
        if frames == 0:
            try:
                frames, span = _scan_packets(container, stream)
            except Exception:  # noqa: BLE001 - unreadable packets: reported when decoding
                frames, span = 0, None
            if frames > 1 and span:
                measured = Fraction(frames / span).limit_denominator(1001)
                if abs(float(measured) / float(fps) - 1) > 0.02:  # a nominal rate, not the average
                    fps = measured
            try:
                container.seek(0)
            except Exception:  # noqa: BLE001 - not seekable: the rotation is read from a fresh open
                rewound = False
        turns = _first_frame_turns(container, stream) if rewound else _turns_of(path)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if turns % 2:
            width, height = height, width
        return VideoInfo(
            width=width,
            height=height,
            fps=fps,
            num_frames=frames,
            duration=duration,
            codec=str(stream.codec_context.name),
            container=str(container.format.name),
            audio_codec=audio,
            rotation=90 * turns,
        )


def iter_video_frames(path: str | os.PathLike, max_frames: int | None = None,
                      what: str = "video", *, strict: bool = False) -> Iterator[np.ndarray]:
    """Decode a video file frame by frame: yields uint8 (H, W, 3) RGB arrays, turned upright
    as players display them (the stream's display rotation applied).

    Streaming: one decoded frame at a time. Raises VideoReadError (naming it `what`) when
    the file cannot be opened or a packet fails to decode (frames already yielded stay valid).
    A file that ends with fewer frames than its container lists (a truncated download: with
    frame-threaded decoding FFmpeg drops the error of the cut-off packet) gives a
    TruncatedVideoWarning after its last frame, or with `strict` a VideoReadError.
    """
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0 or None, got {max_frames!r}")
    av = _av()
    with _open_video(path, what) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        listed = int(stream.frames or 0)  # 0 where the container does not say (mkv, webm, ...)
        count = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and count >= max_frames:
                    return
                yield upright(frame)
                count += 1
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoReadError(f"{what} {str(path)!r}: decoding failed after {count} frames ({exc})") from None
        if count < listed and (max_frames is None or count < max_frames):
            message = (f"{what} {str(path)!r}: decoded {count} frames but its container lists {listed}; "
                       "the file looks truncated")
            if strict:
                raise VideoReadError(message)
            import warnings

            warnings.warn(message, TruncatedVideoWarning, stacklevel=2)


def pil_to_rgb8(img: Any) -> np.ndarray:
    """uint8 RGB (H, W, 3) of a loaded PIL image, turned upright by its EXIF orientation.

    16-bit grey (modes I;16*, and I with values above 255) is scaled to 0..255 (value / 257,
    rounded), not clipped; mode I within 0..255 is 8-bit grey; float grey (mode F) in 0..1 is
    scaled by 255, in 0..255 rounded; other ranges are a ValueError naming them.
    """
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16") or img.mode == "I":
        grey = np.asarray(img).astype(np.int64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise ValueError(f"mode {img.mode} values {grey.min()}..{grey.max()}; expected 16-bit values 0..65535")
        if img.mode.startswith("I;16") or (grey.size and grey.max() > 255):
            grey = (grey + 128) // 257
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)
    if img.mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        if grey.size and not np.isfinite(grey).all():
            raise ValueError("mode F image holds NaN or Inf")
        low, high = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
        if low < 0 or high > 255:
            raise ValueError(f"mode F values {low:.4g}..{high:.4g}; expected 0..1 or 0..255")
        scale = 255.0 if high <= 1.0 else 1.0
        grey = np.clip(np.rint(grey * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read a still image as uint8 RGB (H, W, 3), upright by its EXIF orientation (grey,
    16- and 32-bit grey, float grey, palette and RGBA are converted; see pil_to_rgb8).

    Raises VideoReadError (naming it `what`) when it is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise VideoReadError(f"{what} {str(path)!r} is a folder, not an image file")
    _refuse_special(path, what)
    try:
        with Image.open(path) as img:
            img.load()
            return pil_to_rgb8(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # DecompressionBombError: a header claiming > 179 M pixels (e.g. a corrupt PNG header)
        raise VideoReadError(f"{what} {str(path)!r} is not a readable image ({exc})") from None


# ---- atomic outputs --------------------------------------------------------------------------

def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on every platform/filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_destination(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"output {str(path)!r} is a folder")
    if path.exists() and not overwrite:
        raise FileExistsError(f"output {str(path)!r} exists (pass overwrite=True / --overwrite to replace it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist")


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    """fsync `tmp`, rename it onto `path` (refusing to replace unless `overwrite`), fsync the folder."""
    _fsync_file(tmp)
    if path.exists() and not overwrite:  # appeared while we were writing
        raise FileExistsError(f"output {str(path)!r} appeared while writing; not replaced (temporary file {tmp} removed)")
    os.replace(tmp, path)
    _fsync_folder(path.parent)


@contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path next to `path` (same suffix, not created); when the block
    succeeds, fsync it and rename it onto `path`; when it raises, delete it.

    An existing `path` is refused (FileExistsError) unless `overwrite`. The folder must exist.
    """
    path = real_target(path)
    _check_destination(path, overwrite)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        _commit(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


# ---- writing ---------------------------------------------------------------------------------

#: Channel count -> FFmpeg's default layout of that many channels (the AAC encoder refuses the
#: unnamed "N channels" layouts of, e.g., PCM tracks in Matroska).
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _named_layout(layout: Any) -> str:
    """The name of an audio layout, or the default layout of its channel count when its channels
    are unnamed (FFmpeg's "2 channels")."""
    channels = list(layout.channels)
    if channels and all(channel.name == "NONE" for channel in channels):
        return _DEFAULT_LAYOUTS.get(len(channels), layout.name)
    return layout.name


def _template_stream(output: Any, stream: Any) -> Any:
    """An output stream of `output` that copies the packets of the input `stream`."""
    add = getattr(output, "add_stream_from_template", None)
    return add(stream) if add is not None else output.add_stream(template=stream)


def _copy_muxes(source: Path, format_name: str, packets: int = 8) -> bool:
    """True when the first audio stream of `source` can be stream-copied into a `format_name`
    container: a trial mux of its first `packets` packets into memory (header, packets, trailer)
    succeeds. FFmpeg's codec lists accept some codecs its muxers then refuse (Opus in MOV,
    unnamed-layout PCM in MP4), so the muxer itself is asked."""
    import io

    av = _av()
    try:
        with av.open(str(source), mode="r") as source_file:
            stream = source_file.streams.audio[0]
            with av.open(io.BytesIO(), mode="w", format=format_name) as trial:
                copy = _template_stream(trial, stream)
                for count, packet in enumerate(source_file.demux(stream)):
                    if count >= packets:
                        break
                    if packet.dts is None and packet.pts is None:
                        continue
                    packet.stream = copy
                    trial.mux(packet)
        return True
    except (av.error.FFmpegError, OSError, ValueError):
        return False


class _AudioTrack:
    """The first audio stream of a file, copied (or re-encoded to AAC) into an output
    container, released in time order so it interleaves with the video being written."""

    def __init__(self, source: Path, output: Any, mode: str, video_start: float) -> None:
        av = _av()
        try:
            self._input = av.open(str(source), mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VideoReadError(f"audio source {str(source)!r} is not readable ({exc})") from None
        self._output = output
        self._in_stream = stream = self._input.streams.audio[0]
        self._time_base = stream.time_base
        self.mode = "copy" if mode == "copy" or (mode == "auto" and _copy_muxes(source, output.format.name)) else "aac"
        if self.mode == "copy":
            self._out_stream = _template_stream(output, stream)
        else:
            self._out_stream = output.add_stream("aac", rate=stream.codec_context.sample_rate or 48000)
            self._out_stream.layout = _named_layout(stream.codec_context.layout)
        # The output's first video frame is at t = 0: shift the audio by the input video's start.
        self._shift = round(video_start / self._time_base) if video_start and self._time_base else 0
        self._packets = self._input.demux(stream)
        self._pending = None
        self._done = False

    def _time(self, packet: Any) -> float:
        stamp = packet.pts if packet.pts is not None else packet.dts
        return float((stamp - self._shift) * self._time_base)

    def _emit(self, packet: Any) -> None:
        if self.mode == "copy":
            if packet.pts is not None:
                packet.pts -= self._shift
            if packet.dts is not None:
                packet.dts -= self._shift
            packet.stream = self._out_stream
            self._output.mux(packet)
            return
        for frame in packet.decode():
            if frame.pts is not None:
                frame.pts -= self._shift
            for out_packet in self._out_stream.encode(frame):
                self._output.mux(out_packet)

    def mux_until(self, seconds: float | None) -> None:
        """Mux every audio packet that starts before `seconds` (all of them for None)."""
        while not self._done:
            packet = self._pending if self._pending is not None else next(self._packets, None)
            self._pending = None
            if packet is None:
                self._done = True
                return
            if packet.dts is None and packet.pts is None:  # the demuxer's empty flush packet
                continue
            if seconds is not None and self._time(packet) >= seconds:
                self._pending = packet
                return
            self._emit(packet)

    def finish(self) -> None:
        """Mux the rest of the stream (and flush the AAC encoder when re-encoding)."""
        self.mux_until(None)
        if self.mode == "aac":
            for out_packet in self._out_stream.encode(None):
                self._output.mux(out_packet)
        self.close()

    def close(self) -> None:
        self._input.close()


class VideoWriter:
    """Streaming, atomic video writer: `write(frame)` one uint8 (H, W, 3) RGB frame at a time.

    path: .mp4/.m4v/.mov/.mkv. fps: frames per second (a Fraction keeps rates such as
    30000/1001 exact; floats are converted with denominator <= 1001). codec: H.264 (libx264,
    crf 18, yuv420p; yuv444p when a side is odd). audio_from: a media file whose first
    audio stream is copied (audio="copy"), re-encoded to AAC (audio="aac"), or copied when
    the container can hold its codec and re-encoded otherwise ("auto", the default); no
    audio stream there: none written.

    The file is written under a temporary name next to `path` and renamed onto it by
    `close()` (after fsync); `abort()`, or leaving the `with` block by an exception, deletes
    it. An existing `path` is refused unless `overwrite`. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, *, audio_from: str | os.PathLike | None = None,
                 overwrite: bool = False, codec: str = "libx264", crf: int | None = 18,
                 preset: str | None = None, audio: str = "auto") -> None:
        self.path = real_target(path)
        self._format = VIDEO_OUTPUT_EXTENSIONS.get(self.path.suffix.lower())
        if self._format is None:
            raise VideoWriteError(f"output {str(self.path)!r}: unsupported suffix; use one of "
                                  f"{', '.join(sorted(VIDEO_OUTPUT_EXTENSIONS))}")
        fps = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        if audio not in ("auto", "copy", "aac"):
            raise ValueError(f"audio must be 'auto', 'copy' or 'aac', got {audio!r}")
        _check_destination(self.path, overwrite)
        self.fps = fps
        self.overwrite = overwrite
        self.audio_from = None if audio_from is None else Path(audio_from)
        self._codec, self._crf, self._preset, self._audio_mode = codec, crf, preset, audio
        self._tmp = temporary_sibling(self.path)
        self._container = None
        self._video = None
        self._audio: _AudioTrack | None = None
        self._size: tuple[int, int] | None = None
        self.frames_written = 0
        self._closed = False

    @property
    def audio(self) -> str | None:
        """How audio is written: "copy", "aac", or None (no audio)."""
        return None if self._audio is None else self._audio.mode

    def _open(self, height: int, width: int) -> None:
        av = _av()
        try:
            self._container = av.open(str(self._tmp), mode="w", format=self._format)
            stream = self._container.add_stream(self._codec, rate=self.fps)
            stream.width, stream.height = width, height
            even = height % 2 == 0 and width % 2 == 0
            stream.pix_fmt = "yuv420p" if even or self._codec != "libx264" else "yuv444p"
            options = {}
            if self._crf is not None and self._codec in ("libx264", "libx265"):
                options["crf"] = str(int(self._crf))
            if self._preset is not None:
                options["preset"] = self._preset
            if options:
                stream.options = options
            self._video = stream
            if self.audio_from is not None:
                start = self._video_start(self.audio_from)
                if start is not None:  # None: no audio stream there
                    self._audio = _AudioTrack(self.audio_from, self._container, self._audio_mode, start)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self.abort()
            raise VideoWriteError(f"output {str(self.path)!r}: cannot start encoding ({exc})") from None

    @staticmethod
    def _video_start(source: Path) -> float | None:
        """Start time (seconds) of `source`'s video stream, or None when it has no audio."""
        av = _av()
        try:
            with av.open(str(source), mode="r") as container:
                if not container.streams.audio:
                    return None
                if not container.streams.video:
                    return 0.0
                video = container.streams.video[0]
                if video.start_time is None or video.time_base is None:
                    return 0.0
                return float(video.start_time * video.time_base)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VideoReadError(f"audio source {str(source)!r} is not readable ({exc})") from None

    def write(self, frame: np.ndarray) -> None:
        """Encode one uint8 (H, W, 3) RGB frame (every frame must have the first one's size)."""
        if self._closed:
            raise VideoWriteError("write() after close() or abort()")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be a uint8 (H, W, 3) array, got {frame.dtype} {frame.shape}")
        if self._container is None:
            self._size = frame.shape[:2]
            self._open(*self._size)
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame {self.frames_written} has size {frame.shape[:2]}, the video has {self._size}")
        av = _av()
        try:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = self.frames_written
            video_frame.time_base = 1 / self.fps
            for packet in self._video.encode(video_frame):
                self._container.mux(packet)
            self.frames_written += 1
            if self._audio is not None:
                self._audio.mux_until(float(self.frames_written / self.fps))
        except (av.error.FFmpegError, OSError) as exc:
            self.abort()
            raise VideoWriteError(f"output {str(self.path)!r}: encoding failed at frame {self.frames_written} ({exc})") from None

    def close(self) -> Path:
        """Flush the encoders, finish the file and rename it onto `path`. Returns `path`."""
        if self._closed:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise VideoWriteError(f"output {str(self.path)!r}: no frames were written; nothing created")
        av = _av()
        try:
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.finish()
            self._container.close()
            self._container = None
            _commit(self._tmp, self.path, self.overwrite)
        except (av.error.FFmpegError, OSError) as exc:
            self.abort()
            if isinstance(exc, FileExistsError):
                raise
            raise VideoWriteError(f"output {str(self.path)!r}: finishing the file failed ({exc})") from None
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; `path` is left as it was."""
        self._closed = True
        for closer in (getattr(self._audio, "close", None), getattr(self._container, "close", None)):
            if closer is not None:
                try:
                    closer()
                except Exception:  # closing a half-written container may complain; the file goes anyway
                    pass
        self._audio = None
        self._container = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
