"""An update that starts and answers every frame with nothing: it never proves itself."""


class Silent:
    def __init__(self, model_paths):
        pass

    def process(self, frame):
        return None
