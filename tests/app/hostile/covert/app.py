"""Pushes secret bits through every channel an application has (issue 12, item 3).

``target.json``: ``faults`` (a 0/1 string, 3 bits per slot), ``timing`` and ``values``
(0/1 strings), ``slot`` (seconds). Time is CLOCK_MONOTONIC, which the core's fault windows
also use, so the app knows where they lie (the strongest adversary we can build).

- faults and restarts: in each slot, a process that was already running when the slot
  began commits the fault its 3 bits name (8 symbols: none, crash, stall, and five
  different contract or protocol violations), so every restart carries a new symbol;
- timing: in a report interval whose timing bit is 1, each frame takes 0.15 s longer;
- results: one ``{"flag": bit}`` at the start of every minute (the contract's rate).
"""
import json
import math
import os
import time

INTERVAL = 0.5


class Covert:
    def __init__(self, model_paths):
        with open(model_paths[0]) as f:
            target = json.load(f)
        self.faults, self.timing = target["faults"], target["timing"]
        self.values, self.slot = target["values"], float(target["slot"])
        self.started = time.monotonic()

    def process(self, frame):
        now = time.monotonic()
        j = math.floor(now / self.slot)
        if self.started < j * self.slot and now - j * self.slot < 0.5:
            i = (3 * j) % len(self.faults)
            symbol = int((self.faults + self.faults)[i : i + 3], 2)
            if symbol:
                return self.fault(symbol)
        if self.timing[math.floor(now / INTERVAL) % len(self.timing)] == "1":
            time.sleep(0.15)
        minute = math.floor(now / 60)
        if self.started < minute * 60 and now - minute * 60 < 0.5:
            return {"flag": self.values[minute % len(self.values)] == "1"}
        return None

    def fault(self, symbol):
        if symbol == 1:
            os._exit(3)  # crash
        if symbol == 2:
            time.sleep(5)  # stall: past the frame's deadline
        if symbol == 3:
            return {"flag": 1}  # wrong_type
        if symbol == 4:
            return {}  # missing_field
        if symbol == 5:
            return {"flag": True, "x": 1}  # extra_field
        if symbol == 6:
            return [1]  # not_a_map
        return {"flag": "x" * 100_000}  # oversize
