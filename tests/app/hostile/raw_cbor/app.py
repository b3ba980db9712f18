"""Puts arbitrary CBOR bytes where its result goes (huge ints, tags, deep nesting ...).

``target.json`` holds ``{"payloads": [hex, ...]}``. On a trigger frame the app takes the
payload numbered by the frame's second sample and makes the child's own encoder write
``{"r": seq, "v": <payload bytes>}`` (it patches the encoder class: application code runs
in the child's process, so it can).
Ordinary frames get an ordinary result.
"""
import json
import struct

import cbor2

from tinyward.app import protocol

TRIGGER = 666
_real_encode = protocol.MessageEncoder.encode


class Hostile:
    def __init__(self, model_paths):
        with open(model_paths[0]) as f:
            self.payloads = [bytes.fromhex(p) for p in json.load(f).get("payloads", [])]
        self.raw = None

        app = self

        def encode(encoder, obj):
            if app.raw is not None and isinstance(obj, dict) and "r" in obj:
                raw, app.raw = app.raw, None
                body = b"\xa2" + cbor2.dumps("r") + cbor2.dumps(obj["r"]) + cbor2.dumps("v") + raw
                return struct.pack(">I", len(body)) + body
            return _real_encode(encoder, obj)

        protocol.MessageEncoder.encode = encode

    def process(self, frame):
        if int(frame[0, 0]) == TRIGGER:  # the second sample says which payload
            self.raw = self.payloads[int(frame[1, 0])]
        return {"count": 1, "state": "normal", "score": 0.5}
