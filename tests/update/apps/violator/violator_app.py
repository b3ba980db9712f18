"""An update that starts fine and then emits results off its own contract."""


class Violator:
    def __init__(self, model_paths):
        self.n = 0

    def process(self, frame):
        self.n += 1
        return {"count": 5000 + self.n, "state": "normal"}  # count's max is 999
