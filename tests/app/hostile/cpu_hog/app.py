"""Spends 0.3 s of CPU on every frame (well within the 1 s frame deadline): only a CPU
budget per wall-clock second stops it from taking the device's processor."""
import time


class Hostile:
    def __init__(self, model_paths):
        pass

    def process(self, frame):
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        return {"count": 1, "state": "normal"}
