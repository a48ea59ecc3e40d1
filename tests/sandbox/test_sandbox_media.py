"""The files simulated renders produce open in standard readers with the asked-for length."""

from __future__ import annotations

import io
import wave

import av

from sandbox.media import mp4_video, png_image, wav_audio


def test_png_wav_and_mp4_decode() -> None:
    with av.open(io.BytesIO(png_image(7)), "r") as image:
        frame = next(image.decode(video=0))
    assert (frame.width, frame.height) == (64, 64)

    with wave.open(io.BytesIO(wav_audio(1.5, rate=8000))) as audio:
        assert audio.getnframes() == 12000 and audio.getframerate() == 8000

    with av.open(io.BytesIO(mp4_video(3.0, seed=1, width=48, height=32, fps=4)), "r") as clip:
        stream = clip.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [frame.to_ndarray(format="gray") for frame in clip.decode(video=0)]
        assert clip.duration == 3_000_000  # microseconds
    assert len(frames) == 12 and frames[0].shape == (32, 48)
    # Each frame is the flat grey it was written with: the decoder read real samples.
    assert frames[0].min() == frames[0].max() and frames[0][0][0] != frames[1][0][0]
