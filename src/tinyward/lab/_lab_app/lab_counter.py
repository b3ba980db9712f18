"""The lab device's application: counts frames whose mean is above a threshold."""

import json


class LabCounter:
    def __init__(self, model_paths):
        with open(model_paths[0]) as f:
            self.threshold = json.load(f)["threshold"]
        self.count = 0

    def process(self, frame):
        if float(frame.mean()) > self.threshold:
            self.count = min(self.count + 1, 999)
        return {"count": self.count, "state": "anomaly" if self.count > 500 else "normal"}
