"""atheris harness: the core's side of the app pipe — :class:`tinyward.app.protocol.MessageDecoder`,
``decode_frame``, ``decode_result``, then the output contract (``check_result``) on
whatever result gets through, as the supervisor does with a (possibly hostile) app.

The first input byte sets the size of the chunks the stream is fed in (1 to 64 bytes,
or all at once), so that messages split across reads are exercised; the rest is the
byte stream from the app.

Documented outcomes: messages, :class:`~tinyward.app.errors.ProtocolError`, or
:class:`~tinyward.app.errors.ContractViolation`. Anything else is a crash.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from tests.fuzz.harness import instrumented, run

with instrumented(__name__):
    import numpy as np

    from tinyward.app.contract import check_result
    from tinyward.app.errors import ContractViolation, ProtocolError
    from tinyward.app.manifest import parse_manifest
    from tinyward.app.protocol import (
        MessageDecoder,
        decode_frame,
        decode_result,
        encode_frame,
        encode_message,
    )

MANIFEST = parse_manifest("""
[app]
name = "fuzz"
version = "1"
entry = "fuzz:App"

[input]
channels = ["distance_mm"]
sample_rate_hz = 20
dtype = "int16"
frame_shape = [20, 1]

[output]
max_results_per_minute = 600

[output.fields]
count = { type = "int", min = 0, max = 999 }
state = { type = "enum", values = ["normal", "anomaly"] }
level = { type = "float", min = -1.0, max = 1.0, step = 0.25 }
alarm = { type = "bool" }
""", folder=Path("/nonexistent"))
CONTRACT = MANIFEST.contract
DTYPE, SHAPE = MANIFEST.input.dtype, MANIFEST.input.frame_shape


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    if not data:
        return
    chunk = data[0] % 65 or len(data)
    stream = data[1:]
    decoder = MessageDecoder(max_message=4096)
    try:
        for start in range(0, len(stream), chunk):
            decoder.feed(stream[start : start + chunk])
            while (message := decoder.next_message()) is not None:
                _handle(message)
        decoder.eof()
    except (ProtocolError, ContractViolation):
        pass


def _handle(message: object) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(message, DTYPE, SHAPE)
    try:
        _, value = decode_result(message)
    except (ProtocolError, ContractViolation):
        return
    if value is not None:
        check_result(CONTRACT, value)


def seeds() -> list[bytes]:
    frame = np.arange(20, dtype=DTYPE).reshape(SHAPE)
    messages = [
        encode_frame(1, frame),
        encode_message({"cfg": {"entry": "fuzz:App"}}),
        encode_message({"p": [["seccomp", True, ""], ["landlock", False, "kernel too old"]]}),
        encode_message({"ready": True}),
        encode_message({"r": 1, "v": {"count": 3, "state": "normal", "level": 0.5,
                                      "alarm": False}}),
        encode_message({"r": 2, "v": None}),
        encode_message({"r": 3, "bad": "numpy.float32 is not encodable"}),
    ]
    return [b"\x00" + b"".join(messages), b"\x07" + b"".join(messages)] + [
        b"\x00" + message for message in messages
    ]


if __name__ == "__main__":
    run(TestOneInput, seeds)
