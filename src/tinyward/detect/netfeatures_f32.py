"""A float32 mirror of the C feature code's single-precision build (``-D<PREFIX>_FLOAT``).

The float build is for a Cortex-M4F, whose FPU has single precision only. Its features
are not Python's double ones, so it needs its own reference: this class runs the C
code's operations in the C code's order in IEEE float32 (numpy ``float32`` scalars;
``powf`` and ``log1pf`` from the same C maths library through ctypes; ``sqrt`` is
correctly rounded everywhere), with times kept in double as the C does. The test runs
both on thousands of packets and requires equal bits; a different libm on the device
(newlib) may round ``powf``/``log1pf`` differently in the last bit, which the test
cannot see.

Like the C build it can start from a trained (double) state: each statistic is
rounded to the nearest float, as a C compiler rounds the exported double constants.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import zlib
from collections.abc import Iterable

import numpy as np

from tinyward.detect.errors import DetectMisuse
from tinyward.detect.netfeatures import N_FEATURES, NetFeatureConfig, NetFeatureExtractor
from tinyward.detect.netfeatures_c import C_C_DIR, C_C_STRIDE, C_H_STRIDE, C_S_STRIDE, c_layout
from tinyward.detect.pcap import Packet

f32 = np.float32


def _libm() -> ctypes.CDLL:
    name = ctypes.util.find_library("m")
    if name is None:
        raise DetectMisuse("no C maths library (libm) for the float32 mirror")
    lib = ctypes.CDLL(name)
    for fn, args in (("powf", 2), ("log1pf", 1)):
        getattr(lib, fn).restype = ctypes.c_float
        getattr(lib, fn).argtypes = [ctypes.c_float] * args
    return lib


class _Table:
    """The C tables (times apart from the float statistics); the same victim choice as
    the C ``find`` and :class:`tinyward.detect.netfeatures._Table`: least established
    first, its rank in double from the float weights."""

    def __init__(self, slots: int, ways: int, stride: int, weights: tuple[int, ...],
                 slow: float) -> None:
        self.sets, self.ways, self.stride = slots // ways, ways, stride
        self.tags = [0] * slots
        self.times = [0.0] * slots
        self.data = np.zeros(slots * stride, dtype=np.float32)
        self.weights, self.slow = weights, slow

    def find(self, key: bytes, now: float) -> tuple[int, bool]:
        tag = zlib.crc32(key) or 1
        first = (tag % self.sets) * self.ways
        victim, have_empty, best = first, False, (math.inf, math.inf)
        for slot in range(first, first + self.ways):
            if self.tags[slot] == tag:
                return slot, False
            if self.tags[slot] == 0:
                victim, have_empty = slot, True
            elif not have_empty:
                weight = 0.0
                for o in self.weights:
                    weight += float(self.data[slot * self.stride + o])
                last = self.times[slot]
                rank = (weight * 2.0 ** (-self.slow * max(0.0, now - last)), last)
                if rank < best:
                    victim, best = slot, rank
        self.tags[victim] = tag
        self.data[victim * self.stride:(victim + 1) * self.stride] = 0
        self.times[victim] = now
        return victim, True


class Float32Features:
    """The float build's features, packet by packet (see the module docstring)."""

    def __init__(self, config: NetFeatureConfig | None = None,
                 state: NetFeatureExtractor | None = None) -> None:
        self.config = c = state.config if state is not None else (config or NetFeatureConfig())
        self.m = _libm()
        # The slow weights' offsets in the C layout (statistics only, no time).
        self.hosts = _Table(c.host_slots, c.ways, C_H_STRIDE, (3,), c.slow)
        self.convs = _Table(c.conv_slots, c.ways, C_C_STRIDE, (3, C_C_DIR + 3), c.slow)
        self.socks = _Table(c.socket_slots, c.ways, C_S_STRIDE, (3, C_S_STRIDE // 2 + 3), c.slow)
        self.conv_dir_t = [0.0] * (2 * c.conv_slots)
        self.last_ts = -math.inf
        self.FAST, self.SLOW = f32(c.fast), f32(c.slow)
        self.NEWSOCK, self.JITTER = f32(c.newsock_rate), f32(c.jitter_rate)
        self.EPS, self.ONE, self.MILLI, self.ZERO = f32(1e-9), f32(1.0), f32(1000.0), f32(0.0)
        if state is not None:
            layout = c_layout(state)
            self.last_ts = state.last_ts
            for name, table in (("host", self.hosts), ("conv", self.convs), ("sock", self.socks)):
                table.tags = [int(t) for t in layout[f"{name}_tag"]]
                table.times = [float(t) for t in layout[f"{name}_t"]]
                table.data = np.asarray(layout[name], dtype=np.float64).astype(np.float32)
            self.conv_dir_t = [float(t) for t in layout["conv_dir_t"]]

    def _pow2(self, x: np.float32) -> np.float32:
        return f32(self.m.powf(2.0, float(x)))

    def _log1p(self, x: np.float32) -> np.float32:
        return f32(self.m.log1pf(float(x)))

    def _mean_std(self, w: np.float32, ls: np.float32, ss: np.float32
                  ) -> tuple[np.float32, np.float32]:
        if w < self.EPS:
            return self.ZERO, self.ZERO
        m = ls / w
        var = ss / w - m * m
        return m, np.sqrt(var) if var > 0 else self.ZERO

    def _age_pair(self, table: _Table, slot: int, dir_stride: int, direction: int, now: float,
                  size: np.float32) -> tuple[int, int]:
        d = table.data
        dt = f32(now - table.times[slot])
        table.times[slot] = now
        df = self._pow2(-self.FAST * dt)
        ds = self._pow2(-self.SLOW * dt)
        base = slot * table.stride
        mine, other = base + direction * dir_stride, base + (1 - direction) * dir_stride
        for b in (mine, other):
            for i in range(3):
                d[b + i] = d[b + i] * df
                d[b + 3 + i] = d[b + 3 + i] * ds
        d[mine] = d[mine] + self.ONE
        d[mine + 1] = d[mine + 1] + size
        d[mine + 2] = d[mine + 2] + size * size
        d[mine + 3] = d[mine + 3] + self.ONE
        d[mine + 4] = d[mine + 4] + size
        d[mine + 5] = d[mine + 5] + size * size
        return mine, other

    def update(self, packet: Packet, time_shift: float = 0.0) -> list[np.float32]:
        c = self.config
        now = packet.ts + time_shift
        now = max(now, self.last_ts)
        self.last_ts = now
        size = f32(packet.size)
        out = [size]
        src, dst = packet.src, packet.dst
        a = src + packet.sport.to_bytes(2, "big")
        b = dst + packet.dport.to_bytes(2, "big")
        sdir = 0 if a <= b else 1
        sslot, snew = self.socks.find((a + b if sdir == 0 else b + a) + bytes((packet.proto,)),
                                      now)
        hslot, _ = self.hosts.find(src + dst if c.host_by_pair else src, now)
        h, hb = self.hosts.data, hslot * C_H_STRIDE
        dt = f32(now - self.hosts.times[hslot])
        self.hosts.times[hslot] = now
        df = self._pow2(-self.FAST * dt)
        ds = self._pow2(-self.SLOW * dt)
        dn = self._pow2(-self.NEWSOCK * dt)
        for win, decay in ((0, df), (1, ds)):
            s = hb + 3 * win
            h[s] = h[s] * decay + self.ONE
            h[s + 1] = h[s + 1] * decay + size
            h[s + 2] = h[s + 2] * decay + size * size
            mean, std = self._mean_std(h[s], h[s + 1], h[s + 2])
            out += (self._log1p(h[s]), mean, std)
        h[hb + 6] = h[hb + 6] * dn + (self.ONE if snew else self.ZERO)
        out.append(self._log1p(h[hb + 6]))

        cdir = 0 if src <= dst else 1
        cslot, cnew = self.convs.find(src + dst if cdir == 0 else dst + src, now)
        if cnew:
            self.conv_dir_t[2 * cslot] = self.conv_dir_t[2 * cslot + 1] = 0.0
        cd = self.convs.data
        mine, other = self._age_pair(self.convs, cslot, C_C_DIR, cdir, now, size)
        for off in (0, 3):
            m1, s1 = self._mean_std(cd[mine + off], cd[mine + off + 1], cd[mine + off + 2])
            m2, s2 = self._mean_std(cd[other + off], cd[other + off + 1], cd[other + off + 2])
            out += (self._log1p(cd[(other if c.host_by_pair else mine) + off]),
                    np.sqrt(m1 * m1 + m2 * m2), np.sqrt(s1 * s1 + s2 * s2))
        iat = mine + 6
        last = 2 * cslot + cdir
        if self.conv_dir_t[last] > 0.0:
            gap = f32(now - self.conv_dir_t[last])
            dj = self._pow2(-self.JITTER * gap)
            x = self._log1p(gap * self.MILLI)
            cd[iat] = cd[iat] * dj + self.ONE
            cd[iat + 1] = cd[iat + 1] * dj + x
            cd[iat + 2] = cd[iat + 2] * dj + x * x
        self.conv_dir_t[last] = now if now > 0.0 else 1e-9
        out += self._mean_std(cd[iat], cd[iat + 1], cd[iat + 2])

        sd = self.socks.data
        mine, other = self._age_pair(self.socks, sslot, C_S_STRIDE // 2, sdir, now, size)
        for off in (0, 3):
            mean, std = self._mean_std(sd[mine + off], sd[mine + off + 1], sd[mine + off + 2])
            out += (self._log1p(sd[mine + off]), mean, std)
        m1, s1 = self._mean_std(sd[mine], sd[mine + 1], sd[mine + 2])
        m2, s2 = self._mean_std(sd[other], sd[other + 1], sd[other + 2])
        out += (np.sqrt(m1 * m1 + m2 * m2), np.sqrt(s1 * s1 + s2 * s2))
        return out

    def transform(self, packets: Iterable[Packet], *, time_shift: float = 0.0) -> np.ndarray:
        """Features of every packet as float32 values widened to float64, (n, 24)."""
        rows = [self.update(p, time_shift) for p in packets]
        if not rows:
            return np.zeros((0, N_FEATURES))
        return np.asarray(rows, dtype=np.float32).astype(np.float64)
