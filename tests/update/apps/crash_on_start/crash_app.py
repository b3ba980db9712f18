"""An update that dies as soon as it starts (a bad build)."""

import os


class Crash:
    def __init__(self, model_paths):
        os._exit(3)

    def process(self, frame):  # never reached
        return {"count": 0, "state": "normal"}
