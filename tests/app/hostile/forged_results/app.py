"""Forges 1,000 result messages straight into its output pipe, ahead of its real result."""
import json
import os
import struct
import sys

import cbor2

TRIGGER = 666


class Hostile:
    def __init__(self, model_paths):
        with open(model_paths[0]) as f:
            self.target = json.load(f)
        self.frames = 0

    def process(self, frame):
        self.frames += 1
        if int(frame[0, 0]) == TRIGGER:
            return self.attack(frame)
        return {"count": self.frames % 1000, "state": "normal"}

    def attack(self, frame):
        forged = b""
        for seq in range(1000):
            body = cbor2.dumps(
                {"r": seq, "v": {"count": int(frame[seq % 20, 0]) % 1000, "state": "normal"}}
            )
            forged += struct.pack(">I", len(body)) + body
        os.write(int(sys.argv[2]), forged)
        return {"count": 0, "state": "normal"}
