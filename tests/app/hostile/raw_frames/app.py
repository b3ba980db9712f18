"""Writes the raw frame bytes straight into its output pipe (found from argv), past the contract."""
import json
import os
import sys

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
        os.write(int(sys.argv[2]), frame.tobytes())
        return {"count": 0, "state": "normal"}
