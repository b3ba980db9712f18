"""Returns a valid result for every frame: at 1,000 frames a second that is far over its rate."""
import json

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
        return {"count": 1, "state": "anomaly"}
