"""Real, small media files for simulated renders: PNG images, WAV audio, MP4 video.

Each is a valid file a standard reader opens (the tests decode them), made with the
standard library only. The MP4 carries H.264 video whose macroblocks are all I_PCM (raw
samples, no prediction or transform), the simplest stream any H.264 decoder accepts.
"""

from __future__ import annotations

import io
import math
import struct
import wave

from sandbox.images import png


def png_image(seed: int, width: int = 64, height: int = 64) -> bytes:
    """A flat PNG whose colour depends on `seed` (so two renders differ)."""
    rgb = ((seed * 97) % 200 + 40, (seed * 57) % 200 + 40, (seed * 31) % 200 + 40)
    return png(width, height, rgb)


def wav_audio(seconds: float, seed: int = 0, rate: int = 8000) -> bytes:
    """Mono 16-bit PCM: a quiet sine tone of `seconds` length."""
    frequency = 220 + (seed % 8) * 55
    frames = max(1, int(seconds * rate))
    samples = (
        int(3000 * math.sin(2 * math.pi * frequency * index / rate)) for index in range(frames)
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"".join(struct.pack("<h", sample) for sample in samples))
    return out.getvalue()


# --- H.264 (baseline profile, I_PCM macroblocks) ------------------------------------------


class _Bits:
    def __init__(self) -> None:
        self._bits: list[int] = []

    def u(self, count: int, value: int) -> None:
        self._bits.extend((value >> shift) & 1 for shift in range(count - 1, -1, -1))

    def ue(self, value: int) -> None:  # unsigned Exp-Golomb
        code = value + 1
        self.u(code.bit_length() * 2 - 1, code)

    def se(self, value: int) -> None:  # signed Exp-Golomb
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align_zero(self) -> None:
        while len(self._bits) % 8:
            self._bits.append(0)

    def raw(self, data: bytes) -> None:
        for byte in data:
            self.u(8, byte)

    def trailing(self) -> bytes:
        self._bits.append(1)
        self.align_zero()
        return bytes(
            int("".join(map(str, self._bits[index : index + 8])), 2)
            for index in range(0, len(self._bits), 8)
        )


def _nal(ref_idc: int, unit_type: int, rbsp: bytes) -> bytes:
    """A NAL unit with emulation prevention (no 00 00 0x inside the payload)."""
    out = bytearray([(ref_idc << 5) | unit_type])
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


_PROFILE_BASELINE = 66
_LEVEL = 30  # 3.0: far above what a 64x64 clip needs
_I_PCM = 25


def _sps(width_mbs: int, height_mbs: int) -> bytes:
    bits = _Bits()
    bits.u(8, _PROFILE_BASELINE)
    bits.u(8, 0b11000000)  # constraint_set0/1: a baseline stream every decoder takes
    bits.u(8, _LEVEL)
    bits.ue(0)  # seq_parameter_set_id
    bits.ue(0)  # log2_max_frame_num_minus4
    bits.ue(2)  # pic_order_cnt_type 2: output order = decoding order
    bits.ue(0)  # max_num_ref_frames
    bits.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(width_mbs - 1)
    bits.ue(height_mbs - 1)
    bits.u(1, 1)  # frame_mbs_only_flag
    bits.u(1, 1)  # direct_8x8_inference_flag
    bits.u(1, 0)  # frame_cropping_flag
    bits.u(1, 0)  # vui_parameters_present_flag
    return _nal(3, 7, bits.trailing())


def _pps() -> bytes:
    bits = _Bits()
    bits.ue(0)  # pic_parameter_set_id
    bits.ue(0)  # seq_parameter_set_id
    bits.u(1, 0)  # entropy_coding_mode_flag: CAVLC
    bits.u(1, 0)  # bottom_field_pic_order_in_frame_present_flag
    bits.ue(0)  # num_slice_groups_minus1
    bits.ue(0)  # num_ref_idx_l0_default_active_minus1
    bits.ue(0)  # num_ref_idx_l1_default_active_minus1
    bits.u(1, 0)  # weighted_pred_flag
    bits.u(2, 0)  # weighted_bipred_idc
    bits.se(0)  # pic_init_qp_minus26
    bits.se(0)  # pic_init_qs_minus26
    bits.se(0)  # chroma_qp_index_offset
    bits.u(1, 1)  # deblocking_filter_control_present_flag
    bits.u(1, 0)  # constrained_intra_pred_flag
    bits.u(1, 0)  # redundant_pic_cnt_present_flag
    return _nal(3, 8, bits.trailing())


def _idr_frame(index: int, width_mbs: int, height_mbs: int, luma: int) -> bytes:
    bits = _Bits()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(7)  # slice_type: I, and every slice of the picture is I
    bits.ue(0)  # pic_parameter_set_id
    bits.u(4, 0)  # frame_num (IDR: 0)
    bits.ue(index % 2)  # idr_pic_id: consecutive IDR pictures must differ
    bits.u(1, 0)  # no_output_of_prior_pics_flag
    bits.u(1, 0)  # long_term_reference_flag
    bits.se(0)  # slice_qp_delta
    bits.ue(1)  # disable_deblocking_filter_idc: off
    # Samples stay in 16..235 so the payload never needs emulation prevention bytes.
    block = bytes([luma]) * 256 + bytes([128]) * 128
    for _macroblock in range(width_mbs * height_mbs):
        bits.ue(_I_PCM)
        bits.align_zero()
        bits.raw(block)
    return _nal(3, 5, bits.trailing())


# --- MP4 (ISO base media file format) ------------------------------------------------------


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def mp4_video(
    seconds: float, seed: int = 0, width: int = 64, height: int = 64, fps: int = 4
) -> bytes:
    """An H.264 MP4 of `seconds` length whose frames brighten over time."""
    width_mbs, height_mbs = max(1, width // 16), max(1, height // 16)
    width, height = width_mbs * 16, height_mbs * 16
    frame_count = max(1, round(seconds * fps))
    sps, pps = _sps(width_mbs, height_mbs), _pps()
    samples = [
        struct.pack(">I", len(nal)) + nal
        for nal in (
            _idr_frame(index, width_mbs, height_mbs, 16 + (seed * 13 + index * 9) % 200)
            for index in range(frame_count)
        )
    ]
    duration_ms = frame_count * 1000 // fps
    avcc = _box(
        b"avcC",
        bytes([1, _PROFILE_BASELINE, 0b11000000, _LEVEL, 0xFF, 0xE1]),
        struct.pack(">H", len(sps)) + sps,
        bytes([1]) + struct.pack(">H", len(pps)) + pps,
    )
    avc1 = _box(
        b"avc1",
        bytes(6) + struct.pack(">H", 1),  # reserved, data_reference_index
        bytes(16),  # pre_defined and reserved
        struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1),
        bytes(32),  # compressorname
        struct.pack(">Hh", 0x18, -1),
        avcc,
    )

    def moov(chunk_offset: int) -> bytes:
        stbl = _box(
            b"stbl",
            _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
            _full_box(b"stts", 0, 0, struct.pack(">III", 1, frame_count, 1)),
            _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, frame_count, 1)),
            _full_box(
                b"stsz",
                0,
                0,
                struct.pack(">II", 0, frame_count),
                b"".join(struct.pack(">I", len(sample)) for sample in samples),
            ),
            _full_box(b"stco", 0, 0, struct.pack(">II", 1, chunk_offset)),
        )
        minf = _box(
            b"minf",
            _full_box(b"vmhd", 0, 1, bytes(8)),
            _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1))),
            stbl,
        )
        mdia = _box(
            b"mdia",
            _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, fps, frame_count, 0x55C4, 0)),
            _full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\x00"),
            minf,
        )
        tkhd = _full_box(
            b"tkhd",
            0,
            3,  # enabled, in movie
            struct.pack(">IIIII", 0, 0, 1, 0, duration_ms),
            bytes(8) + struct.pack(">hhhH", 0, 0, 0, 0),
            _MATRIX,
            struct.pack(">II", width << 16, height << 16),
        )
        mvhd = _full_box(
            b"mvhd",
            0,
            0,
            struct.pack(">IIIIIH", 0, 0, 1000, duration_ms, 0x10000, 0x100),
            bytes(10),
            _MATRIX,
            bytes(24),
            struct.pack(">I", 2),  # next_track_ID
        )
        return _box(b"moov", mvhd, _box(b"trak", tkhd, mdia))

    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomiso2avc1mp41")
    # The chunk offset depends on moov's size, which does not depend on the offset's value.
    mdat_start = len(ftyp) + len(moov(0)) + 8
    return ftyp + moov(mdat_start) + _box(b"mdat", *samples)
