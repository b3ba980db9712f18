"""`detect eval` on any labelled data: per-frame labels on a capture, a CSV label column.

Captures are written here with dpkt: IP frames mixed with non-IP (ARP) and truncated IP
frames, so the frame numbering (1-based, as Wireshark) and the skip counts are checked.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import dpkt
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tinyward.cli.main import cli
from tinyward.detect import pipeline
from tinyward.detect.errors import LabelFileError
from tinyward.detect.labelled import (
    evaluate_labelled,
    parse_labels,
    score_capture_by_frame,
)

MAC = bytes.fromhex("02000000000a02000000000b")


def _tcp_frame(src: int, dst: int, sport: int, size: int, flags: int = dpkt.tcp.TH_ACK) -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=1883, flags=flags, off=8, data=b"x" * size,
                       opts=b"\x01" * 12)
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, src]), dst=bytes([10, 0, 0, dst]), p=6, data=tcp,
                    ttl=64)
    ip.len = len(bytes(ip))
    return MAC + b"\x08\x00" + bytes(ip)


ARP = MAC + b"\x08\x06" + bytes(28)
TRUNCATED_IP = MAC + b"\x08\x00" + b"\x45\x00\x00\x54" + bytes(6)  # 10 of 20 header bytes


def _write(path: Path, frames: list[bytes], start: float, seed: int) -> Path:
    gaps = np.random.default_rng(seed).exponential(0.05, len(frames))
    with path.open("wb") as handle:
        writer = dpkt.pcap.Writer(handle, snaplen=65535, linktype=1)
        for frame, ts in zip(frames, start + np.cumsum(gaps), strict=True):
            writer.writepkt(frame, ts=float(ts))
    return path


_SIZES = np.random.default_rng(9).integers(30, 90, 5000)


def _benign(i: int) -> bytes:
    client = 2 + i % 3
    return _tcp_frame(client, 1, 40000 + client, int(_SIZES[i]))


@pytest.fixture(scope="module")
def model_and_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    tmp = tmp_path_factory.mktemp("labelled")
    train = _write(tmp / "train.pcap", [_benign(i) for i in range(3000)], 1000.0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 750 calibration vectors: the rate is not supported
        model = pipeline.train([train], kind="mahalanobis", target_fpr=0.01)
    pipeline.save_model(model, tmp / "m.json")
    frames, labels = [], []
    for i in range(60):
        if i in (5, 30):
            frames.append(ARP)
            labels.append("benign")
        elif i == 17:
            frames.append(TRUNCATED_IP)
            labels.append("benign")
        elif 40 <= i < 50:  # a new host with odd sizes
            frames.append(_tcp_frame(99, 1, 5555, 900 + i, dpkt.tcp.TH_SYN))
            labels.append("scan")
        else:
            frames.append(_benign(3000 + i))
            labels.append("0")
    capture = _write(tmp / "eval.pcap", frames, 1000.0 + 0.05 * 3000 + 1, 2)
    return tmp / "m.json", capture, labels


def test_eval_rows_map_to_frame_numbers_and_skips_are_counted(
        model_and_capture: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    model_path, capture, labels = model_and_capture
    label_file = tmp_path / "labels.csv"
    label_file.write_text("frame,label\n" + "".join(
        f"{n},{lab}\n" for n, lab in reversed(list(enumerate(labels, 1)))))  # any order
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["detect", "eval", "--model", str(model_path), "--capture",
                                      str(capture), "--labels", str(label_file), "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert "3 frames skipped: 2 non-IP, 0 malformed IP, 1 truncated IP" in result.output
    assert "(calibrated for 1 % FPR): realised" in result.output
    rows = (out / "frames.csv").read_text().splitlines()
    assert rows[0] == "frame,label,score,alarm,skipped"
    assert len(rows) == 1 + 60
    by_frame = {int(r.split(",")[0]): r.split(",") for r in rows[1:]}
    assert by_frame[6][1:] == ["benign", "", "", "non-IP"]  # i = 5 is frame 6
    assert by_frame[31][4] == "non-IP" and by_frame[18][4] == "truncated IP"
    assert all(by_frame[f][1] == "scan" for f in range(41, 51))
    # the scores of the IP frames, in order, are those of `detect score`
    plain = pipeline.score_file(pipeline.load_model(model_path), capture)
    ours = [float(r[2]) for f, r in sorted(by_frame.items()) if r[2]]
    assert np.allclose(ours, plain.scores, rtol=1e-8)
    report = json.loads((out / "eval.json").read_text())
    assert report["skipped"] == {"non-IP": 2, "malformed IP": 0, "truncated IP": 1}
    assert report["per_attack"]["scan"]["n"] == 10
    assert report["per_attack"]["scan"]["detected_at_threshold"] == 1.0
    assert report["realised"]["n"] == 47 and report["realised"]["requested"] == 0.01


def test_one_label_per_line_and_mismatched_length_refused(
        model_and_capture: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    model_path, capture, labels = model_and_capture
    model = pipeline.load_model(model_path)
    scored = score_capture_by_frame(model, capture, labels)
    summary = evaluate_labelled(scored)
    assert summary["scored"] == 57 and summary["benign_skipped"] == 3
    short = tmp_path / "short.txt"
    short.write_text("\n".join(labels[:-1]) + "\n")
    result = CliRunner().invoke(cli, ["detect", "eval", "--model", str(model_path), "--capture",
                                      str(capture), "--labels", str(short), "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "labels 59 frames, but" in result.output and "has 60 frames" in result.output


def test_sensor_csv_label_column(skab: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = pipeline.train([skab / "anomaly-free" / "anomaly-free.csv"], kind="mahalanobis",
                               packets=False, target_fpr=0.01)
    pipeline.save_model(model, tmp_path / "s.json")
    run = skab / "valve1" / "0.csv"
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["detect", "eval", "--model", str(tmp_path / "s.json"),
                                      "--csv", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = (out / "windows.csv").read_text().splitlines()
    assert rows[0] == "window,first_row,last_row,label,score,alarm"
    report = json.loads((out / "eval.json").read_text())
    assert report["unit"] == "windows" and report["per_attack"]["attack"]["n"] > 0
    first, last = (int(v) for v in rows[1].split(",")[1:3])
    assert 1 <= first <= last


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("frame,label\n1,0\n1,1\n", "frame 1 is labelled twice"),
    ("frame,label\n1,0\n3,1\n", "frame 2 has no label"),
    ("frame,label\n99999999999999,0\n", "is not a positive integer"),
    ("frame,label\n60000000,0\n", "outside 1..50000000"),
    ("frame,label\n0,0\n", "outside 1.."),
    ("frame,label\n-1,0\n", "not a positive integer"),
    ("frame,label\n1\n", "1 cells, the header has 2"),
    ("frame,label\n1,\n", "empty label"),
    ("frame,frame,label\n", "exactly one 'frame'"),
    ("0\n\n1\n", "empty label"),
    ("0\na,b\n", "without commas"),
])
def test_bad_label_files_give_clear_errors(text: str, message: str) -> None:
    with pytest.raises(LabelFileError, match=message):
        parse_labels(text, "l.csv")


def test_label_forms_agree() -> None:
    assert parse_labels("0\nattack\n1\r\nbenign\n") == ["0", "attack", "attack", "benign"]
    assert parse_labels("label,frame,note\nx,2,\n0,1,hello\n") == ["0", "x"]


@given(st.text(max_size=300))
def test_label_parser_fuzz_gives_labels_or_a_clear_error(text: str) -> None:
    try:
        labels = parse_labels(text, "fuzz")
    except LabelFileError as error:
        assert str(error).startswith("fuzz: ")
    else:
        assert labels and all(0 < len(label) <= 64 and "," not in label for label in labels)


@given(st.lists(st.tuples(st.integers(-5, 10**15), st.sampled_from(["0", "1", "dos", " "])),
                max_size=40))
def test_label_csv_fuzz_frames(rows: list[tuple[int, str]]) -> None:
    text = "frame,label\n" + "".join(f"{f},{lab}\n" for f, lab in rows)
    try:
        labels = parse_labels(text, "fuzz")
    except LabelFileError:
        return
    frames = [f for f, _ in rows]
    assert sorted(frames) == list(range(1, len(labels) + 1))  # exactly 1..N, no duplicates


def test_pcapng_frames_count_packet_blocks_only(
        model_and_capture: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    # A name-resolution block between packets is not a frame (Wireshark does not number it).
    model_path, _, _ = model_and_capture
    nrb = struct.pack("<II", 4, 16) + struct.pack("<HH", 0, 0) + struct.pack("<I", 16)
    path = tmp_path / "x.pcapng"
    frames = [_benign(4000), ARP, _benign(4001), _tcp_frame(99, 1, 5555, 1200), _benign(4002)]
    with path.open("wb") as handle:
        writer = dpkt.pcapng.Writer(handle, snaplen=65535, linktype=1)
        for i, frame in enumerate(frames):
            writer.writepkt(frame, ts=1200.0 + i)
            if i == 1:
                handle.write(nrb)
    labels = ["0", "0", "0", "scan", "0"]
    scored = score_capture_by_frame(pipeline.load_model(model_path), path, labels)
    assert scored.ids.tolist() == [1, 2, 3, 4, 5]
    assert scored.skipped == ["", "non-IP", "", "", ""]
    assert np.isnan(scored.scores[1]) and not np.isnan(scored.scores[3])
    assert evaluate_labelled(scored)["per_attack"]["scan"]["n"] == 1
