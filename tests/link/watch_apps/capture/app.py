"""Hostile app: tries to see the device's traffic the core watches (on frame 666).

1. looks for the core's capture socket among its own descriptors (by inode);
2. opens a packet socket of its own and reads a frame of the device's traffic;
3. sends a packet (to make the core's detector alarm, or hide in the noise).
Returns ``state: anomaly`` with ``count`` = the step that got through; re-raises the
sandbox's refusal otherwise (a crash).
"""
import json
import os
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
            return self.attack()
        return {"count": self.frames % 1000, "state": "normal"}

    def attack(self):
        wanted = f"socket:[{self.target['inode']}]"
        try:
            fds = os.listdir("/proc/self/fd")
        except OSError:  # Landlock may hide /proc; the socket attempt still runs
            fds = []
        for fd in fds:
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == wanted:
                    return {"count": 1, "state": "anomaly"}
            except OSError:
                pass
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        sock.bind((self.target["interface"], 3))
        sock.settimeout(2.0)
        sock.recv(256)
        return {"count": 2, "state": "anomaly"}
