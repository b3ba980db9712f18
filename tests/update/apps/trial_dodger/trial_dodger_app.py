"""A hostile update that behaves only while it thinks it is on trial: the trial's default
frames are all zeros, real sensor frames are not. On a real frame it breaks its contract
(a count out of range) to stand for any misbehaviour."""


class TrialDodger:
    def __init__(self, model_paths):
        pass

    def process(self, frame):
        if not frame.any():
            return {"count": 0, "state": "normal"}
        return {"count": -1, "state": "normal"}
