"""Asks 100 frames a second in its manifest and takes 0.9 s for each (under the sandbox's
1 s deadline): fed on the report loop, it stalled reporting (issue 12, item 2)."""
import time


class Hostile:
    def __init__(self, model_paths):
        pass

    def process(self, frame):
        time.sleep(0.9)
