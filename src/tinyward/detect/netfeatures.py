"""Per-packet network features from damped incremental statistics in bounded tables.

In the spirit of Kitsune's AfterImage (Mirsky et al., NDSS 2018): each packet updates a
few exponentially damped statistics — weight ``w`` (a decayed packet count), linear sum
``ls`` and squared sum ``ss`` — kept per *directed pair* (source to destination; per
source host alone before issue 13, still read from old models), per *conversation* (the unordered
host pair, one set of statistics per direction) and per *socket* (the unordered 5-tuple,
per direction). Between updates every statistic decays by ``2 ** (-lambda * dt)``, so each
decay rate ``lambda`` is a time window (half-life ``1/lambda`` seconds).

Unlike AfterImage, whose dictionaries grow with every host and socket it has seen, the
state here lives in three **fixed-size, set-associative tables**: a key hashes (CRC-32)
to a set of ``ways`` slots; a miss takes an empty slot or evicts the *least established*
one (smallest decayed slow-window packet count, :class:`_Table`), so a burst of one-packet
flows churns its own slots instead of the established flows'. Memory is therefore fixed
and stated by :meth:`NetFeatureExtractor.state_bytes` (counted as the C layout: a 32-bit
tag and 32-bit floats per slot), whatever a flood of
new hosts does. A slot stores only the key's 32-bit hash tag; two keys with the same tag
share statistics (probability ~ slots / 2**32 per new key).

Addresses and ports are *only* hashed into keys and compared to give a direction inside
a slot; no feature carries their values, nor the link type (gone in :mod:`.pcap`). The
features of a packet's own direction and of the pair are symmetric in the two
endpoints, so renaming hosts or ports leaves features unchanged (unless the renaming
changes which keys collide in a full set, which the tests rule out by sizing).

Per packet the work is a fixed count of multiply-adds: three CRC-32s over at most 37
bytes, 3 table probes of ``ways`` tags, about 40 decays (one ``exp2`` per table per
window) and ~120 float operations; :data:`OPS_PER_PACKET` counts them. A C port is a
transliteration: every table is a flat array of slots with a fixed stride.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tinyward.detect.errors import DetectMisuse
from tinyward.detect.pcap import Packet

_EPS = 1e-9


@dataclass(frozen=True)
class NetFeatureConfig:
    """Sizes and time windows. Decay rates are per second (half-life = 1/rate)."""

    host_slots: int = 64  # keyed by directed pair: up to two per conversation
    conv_slots: int = 64
    socket_slots: int = 128
    ways: int = 4
    fast: float = 1.0  # 1 s half-life
    slow: float = 0.01  # 100 s half-life
    newsock_rate: float = 0.01  # decay of a host's count of new sockets
    jitter_rate: float = 0.1  # decay of the inter-arrival statistics
    # Key the "host" statistics by the directed pair (source, destination) instead of by
    # the source alone. Per source alone, a compromised host's attack traffic to a new
    # peer is folded into the statistics of its normal replies to its usual peers, so
    # those benign replies look odd (issue 13). False only to reproduce that behaviour
    # and to read models saved before the change.
    host_by_pair: bool = True

    def __post_init__(self) -> None:
        # Also guards loading a saved state: a hostile file must not make us allocate
        # a billion slots.
        if not (isinstance(self.ways, int) and 1 <= self.ways <= MAX_SLOTS):
            raise DetectMisuse(f"ways={self.ways!r} must be an integer in 1..{MAX_SLOTS}")
        for name in ("host_slots", "conv_slots", "socket_slots"):
            slots = getattr(self, name)
            if not (isinstance(slots, int) and 0 < slots <= MAX_SLOTS) or slots % self.ways:
                raise DetectMisuse(f"{name}={slots!r} must be a multiple of ways in 1..{MAX_SLOTS}")
        if not isinstance(self.host_by_pair, bool):
            raise DetectMisuse(f"host_by_pair={self.host_by_pair!r} must be true or false")
        for name in ("fast", "slow", "newsock_rate", "jitter_rate"):
            rate = getattr(self, name)
            if not (isinstance(rate, (int, float)) and 0 < rate <= 1e3):
                raise DetectMisuse(f"{name}={rate!r} must be a decay rate in (0, 1000] per second")


MAX_SLOTS = 1 << 16

def feature_names(config: NetFeatureConfig | None = None) -> tuple[str, ...]:
    """Names of the 24 features, in order, for ``config`` (default: the current one).

    ``pair_*`` are statistics of the packet's direction (source to destination);
    ``conv_w_back_*`` the weight of the opposite direction of the conversation. With
    ``host_by_pair=False`` (models saved before issue 13) they are per source host
    (``host_*``) and the conversation's own-direction weight (``conv_w_*``).
    """
    by_pair = True if config is None else config.host_by_pair
    h, w = ("pair", "conv_w_back") if by_pair else ("host", "conv_w")
    return (
        "size",
        f"{h}_w_fast", f"{h}_mean_fast", f"{h}_std_fast",
        f"{h}_w_slow", f"{h}_mean_slow", f"{h}_std_slow",
        f"{h}_newsock_slow",
        f"{w}_fast", "conv_mag_fast", "conv_radius_fast",
        f"{w}_slow", "conv_mag_slow", "conv_radius_slow",
        "conv_iat_mean", "conv_iat_std",
        "sock_w_fast", "sock_mean_fast", "sock_std_fast",
        "sock_w_slow", "sock_mean_slow", "sock_std_slow",
        "sock_mag_fast", "sock_radius_fast",
    )  # fmt: skip


FEATURE_NAMES: tuple[str, ...] = feature_names()
N_FEATURES = len(FEATURE_NAMES)

# Slot layouts (offsets into one slot of a flat float list). Index 0 is the last update
# time. Each statistic is (w, ls, ss).
_H_LAST, _H_FAST, _H_SLOW, _H_NEWSOCK, _H_STRIDE = 0, 1, 4, 7, 8
# Conversation / socket: per direction d in {0,1}: fast (w,ls,ss), slow (w,ls,ss);
# conversations also keep per direction the last packet time and the IAT statistic.
_C_LAST, _C_DIR, _C_DIR_STRIDE = 0, 1, 10  # dir block: fast3, slow3, last_ts, iat3
_C_STRIDE = 1 + 2 * _C_DIR_STRIDE
_S_LAST, _S_DIR, _S_DIR_STRIDE = 0, 1, 6
_S_STRIDE = 1 + 2 * _S_DIR_STRIDE
_DIR = 1  # both two-direction slots (_C_DIR, _S_DIR): the last-seen time, then the blocks
# Offsets of the slow weights (both directions) that rank slots for eviction (_Table).
_H_WEIGHTS = (_H_SLOW,)
_C_WEIGHTS = tuple(_C_DIR + d * _C_DIR_STRIDE + 3 for d in (0, 1))
_S_WEIGHTS = tuple(_S_DIR + d * _S_DIR_STRIDE + 3 for d in (0, 1))

# Operation count per packet, for comparing costs (multiply, add, compare, sqrt, exp2,
# log each count 1; the three CRC-32s count one per byte hashed, at most 37 per key).
OPS_PER_PACKET = (
    3 * 37  # CRC-32 of three keys (IPv4: 4, 8, 13 bytes; IPv6 worst case counted)
    + 3 * 4  # tag compares in one set per table
    + 3 * 2 * 2  # dt and 2 exp2 per table (host, conversation, socket)
    + (6 + 1 + 6 + 12)  # host: 2 windows x3 decays + newsock, +3 adds each window
    + (24 + 12 + 4)  # conversation: decay 2 dirs x 2 windows x 3, update, IAT log + 3
    + (12 + 6)  # socket: decay, update
    + 6 * 5  # six (mean, std) pairs: div, mul, sub, max, sqrt
    + 3 * 6  # magnitude/radius pairs: 3 x (2 mul, add, sqrt, add, sqrt)
    + 8  # log1p of weights
)
# Extra operations of a miss in a full set (the eviction rank, :class:`_Table`): per way a
# subtraction, a max, a multiply, an exp2, one or two adds of weights, a multiply and a
# compare (~8); per packet at most 3 such misses (one per table).
OPS_PER_FULL_MISS = 4 * 8


class _Table:
    """A set-associative table of ``slots`` slots of ``stride`` floats.

    Eviction, **least established first**: on a miss in a full set the victim is the slot
    with the smallest *slow weight* — the sum of its slow-window packet counts at offsets
    ``weights`` (both directions of a conversation or socket), decayed at rate ``slow``
    from its last update to now — ties by least recently updated. Why: with
    least-recently-updated eviction a burst of one-packet sockets (a SYN flood, a port
    sweep, SlowITe's 2,755 packets in 0.23 s) evicts the established flows, which come
    back with no history and score as odd for minutes (1.81 % FPR at a 0.1 % threshold on
    a SlowITe mix, docs/detect.md). A burst's slots weigh ~1, an established flow's tens to
    hundreds, so the burst churns its own slots. The rule reads what each slot already
    holds (no extra bytes); its cost is on a miss in a full set only: per way one
    subtraction, an ``exp2`` and two or three multiply-adds (:data:`OPS_PER_FULL_MISS`).
    Training, ``detect score``, the trusted core and the C export all use it.

    ``lru=True`` is the older least-recently-updated rule, kept only as the unsafe
    baseline of the attack tests (``NetFeatureExtractor(unsafe_lru_eviction=True)``).
    """

    __slots__ = ("data", "evictions", "inserts", "lru", "sets", "slow", "stride", "tags",
                 "ways", "weights")

    def __init__(self, slots: int, ways: int, stride: int, weights: tuple[int, ...],
                 slow: float, *, lru: bool = False) -> None:
        self.sets = slots // ways
        self.ways = ways
        self.stride = stride
        self.tags = [0] * slots  # 0 = empty
        self.data = [0.0] * (slots * stride)
        self.evictions = 0
        self.inserts = 0
        self.weights = weights  # offsets of the slow weights in a slot
        self.slow = slow  # their decay rate per second
        self.lru = lru

    def find(self, key: bytes, now: float) -> tuple[int, bool]:
        """Return (base offset of the key's slot, whether it was newly taken)."""
        tag = zlib.crc32(key) or 1
        first = (tag % self.sets) * self.ways
        stride, data = self.stride, self.data
        victim, best = first, (math.inf, math.inf)
        empty = False
        for slot in range(first, first + self.ways):
            slot_tag = self.tags[slot]
            if slot_tag == tag:
                return slot * stride, False
            if slot_tag == 0:
                victim, empty = slot, True  # the last empty slot in the set
            elif not empty:
                base = slot * stride
                last = data[base]
                if self.lru:
                    rank = (last, 0.0)
                else:
                    # The C export computes the same, in double, in the same order.
                    weight = 0.0
                    for o in self.weights:
                        weight += data[base + o]
                    rank = (weight * 2.0 ** (-self.slow * max(0.0, now - last)), last)
                if rank < best:
                    victim, best = slot, rank
        if not empty:
            self.evictions += 1
        self.inserts += 1
        self.tags[victim] = tag
        base = victim * stride
        for i in range(base, base + stride):
            data[i] = 0.0
        data[base] = now
        return base, True

    def occupied(self) -> int:
        return sum(1 for tag in self.tags if tag)


def _mean_std(w: float, ls: float, ss: float) -> tuple[float, float]:
    if w < _EPS:
        return 0.0, 0.0
    mean = ls / w
    var = ss / w - mean * mean
    return mean, math.sqrt(var) if var > 0.0 else 0.0


def _age_pair(
    data: list[float], base: int, stride: int, direction: int, now: float, size: float,
    c: NetFeatureConfig,
) -> tuple[int, int]:
    """Age a two-direction slot (conversation or socket) to ``now`` and count this packet.

    Both directions' fast and slow (weight, sum, sum of squares) decay by the time since
    the slot was last seen; the packet then adds to its own direction. Returns the offsets
    of this packet's direction block and the other one. The C port's ``age_pair`` does
    the same operations in the same order (bit-exact in double precision).
    """
    dt = now - data[base]
    data[base] = now
    df = 2.0 ** (-c.fast * dt)
    ds = 2.0 ** (-c.slow * dt)
    mine = base + _DIR + direction * stride
    other = base + _DIR + (1 - direction) * stride
    for d in (mine, other):
        for i in range(3):
            data[d + i] *= df
            data[d + 3 + i] *= ds
    data[mine] += 1.0
    data[mine + 1] += size
    data[mine + 2] += size * size
    data[mine + 3] += 1.0
    data[mine + 4] += size
    data[mine + 5] += size * size
    return mine, other


class NetFeatureExtractor:
    """Turns a packet stream into one feature vector per packet (see module docstring).

    The extractor is the state: :meth:`copy` it after training to score several
    streams, each continuing from the trained state.

    ``unsafe_lru_eviction=True`` evicts the least recently updated slot instead of the
    least established (:class:`_Table`): only for the attack tests' baseline; the C export
    has the safe rule alone.
    """

    def __init__(self, config: NetFeatureConfig | None = None, *,
                 unsafe_lru_eviction: bool = False) -> None:
        self.config = config or NetFeatureConfig()
        c = self.config
        lru = unsafe_lru_eviction
        self.hosts = _Table(c.host_slots, c.ways, _H_STRIDE, _H_WEIGHTS, c.slow, lru=lru)
        self.convs = _Table(c.conv_slots, c.ways, _C_STRIDE, _C_WEIGHTS, c.slow, lru=lru)
        self.sockets = _Table(c.socket_slots, c.ways, _S_STRIDE, _S_WEIGHTS, c.slow, lru=lru)
        self.last_ts = -math.inf
        self.packets = 0

    @property
    def feature_names(self) -> tuple[str, ...]:
        return feature_names(self.config)

    # ------------------------------------------------------------------ sizes and costs
    def state_bytes(self, real_bytes: int = 4) -> int:
        """Bytes of the C state struct (:mod:`.netfeatures_c`): per slot a uint32 tag,
        double times (one per slot, two more per conversation, and the last packet's)
        and statistics of ``real_bytes`` (4: the float build; 8: the double build)."""
        c = self.config
        h, v, s = c.host_slots, c.conv_slots, c.socket_slots
        stats = h * (_H_STRIDE - 1) + v * 2 * (_C_DIR_STRIDE - 1) + s * (_S_STRIDE - 1)
        return 8 + 4 * (h + v + s) + 8 * (h + 3 * v + s) + real_bytes * stats

    @staticmethod
    def ops_per_packet() -> int:
        return OPS_PER_PACKET

    def copy(self) -> NetFeatureExtractor:
        return copy.deepcopy(self)

    # ------------------------------------------------------------------ per packet
    def update(self, packet: Packet, time_shift: float = 0.0) -> list[float]:
        """Fold one packet into the state and return its feature vector."""
        c = self.config
        now = packet.ts + time_shift
        now = max(now, self.last_ts)  # time never runs backwards inside the state
        self.last_ts = now
        self.packets += 1
        size = float(packet.size)
        src, dst = packet.src, packet.dst
        out = [size]

        # Socket first: whether it is new feeds the host's new-socket count.
        a = src + packet.sport.to_bytes(2, "big")
        b = dst + packet.dport.to_bytes(2, "big")
        sdir = 0 if a <= b else 1
        skey = (a + b if sdir == 0 else b + a) + bytes((packet.proto,))
        sbase, snew = self.sockets.find(skey, now)

        # Host: the packet's direction (source to destination), or the source alone.
        hbase, _ = self.hosts.find(src + dst if c.host_by_pair else src, now)
        h = self.hosts.data
        dt = now - h[hbase]
        h[hbase] = now
        df = 2.0 ** (-c.fast * dt)
        ds = 2.0 ** (-c.slow * dt)
        dn = 2.0 ** (-c.newsock_rate * dt)
        for base, decay in ((hbase + _H_FAST, df), (hbase + _H_SLOW, ds)):
            w = h[base] * decay + 1.0
            ls = h[base + 1] * decay + size
            ss = h[base + 2] * decay + size * size
            h[base], h[base + 1], h[base + 2] = w, ls, ss
            mean, std = _mean_std(w, ls, ss)
            out += (math.log1p(w), mean, std)
        h[hbase + _H_NEWSOCK] = h[hbase + _H_NEWSOCK] * dn + (1.0 if snew else 0.0)
        out.append(math.log1p(h[hbase + _H_NEWSOCK]))

        # Conversation (unordered host pair), two directions.
        cdir = 0 if src <= dst else 1
        ckey = src + dst if cdir == 0 else dst + src
        cbase, _ = self.convs.find(ckey, now)
        cd = self.convs.data
        mine, other = _age_pair(cd, cbase, _C_DIR_STRIDE, cdir, now, size, c)
        for off in (0, 3):
            m1, s1 = _mean_std(cd[mine + off], cd[mine + off + 1], cd[mine + off + 2])
            m2, s2 = _mean_std(cd[other + off], cd[other + off + 1], cd[other + off + 2])
            # The weight of the other direction: this direction's own weight is already
            # a host feature when hosts are keyed by pair.
            out += (
                math.log1p(cd[(other if c.host_by_pair else mine) + off]),
                math.sqrt(m1 * m1 + m2 * m2),
                math.sqrt(s1 * s1 + s2 * s2),
            )
        # Inter-arrival time in this direction, in log1p(milliseconds).
        last_dir = cd[mine + 6]
        iat = mine + 7
        if last_dir > 0.0:
            gap = now - last_dir
            dj = 2.0 ** (-c.jitter_rate * gap)
            x = math.log1p(gap * 1000.0)
            cd[iat] = cd[iat] * dj + 1.0
            cd[iat + 1] = cd[iat + 1] * dj + x
            cd[iat + 2] = cd[iat + 2] * dj + x * x
        cd[mine + 6] = now if now > 0.0 else _EPS
        out += _mean_std(cd[iat], cd[iat + 1], cd[iat + 2])

        # Socket statistics.
        sd = self.sockets.data
        mine, other = _age_pair(sd, sbase, _S_DIR_STRIDE, sdir, now, size, c)
        for off in (0, 3):
            mean, std = _mean_std(sd[mine + off], sd[mine + off + 1], sd[mine + off + 2])
            out += (math.log1p(sd[mine + off]), mean, std)
        m1, s1 = _mean_std(sd[mine], sd[mine + 1], sd[mine + 2])
        m2, s2 = _mean_std(sd[other], sd[other + 1], sd[other + 2])
        out += (math.sqrt(m1 * m1 + m2 * m2), math.sqrt(s1 * s1 + s2 * s2))
        return out

    def transform(
        self,
        packets: Iterable[Packet],
        *,
        time_shift: float = 0.0,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Update with every packet in order; return an (n, N_FEATURES) float64 array.

        ``progress`` is called with a packet count every 1,000 packets.
        """
        rows: list[list[float]] = []
        for i, packet in enumerate(packets):
            rows.append(self.update(packet, time_shift))
            if progress is not None and i % 1000 == 999:
                progress(1000)
        if progress is not None and len(rows) % 1000:
            progress(len(rows) % 1000)
        if not rows:
            return np.zeros((0, N_FEATURES))
        return np.asarray(rows, dtype=np.float64)

    def continue_with(
        self, packets: Sequence[Packet], *, gap: float = 1.0
    ) -> tuple[NetFeatureExtractor, np.ndarray]:
        """Score ``packets`` as a stream that starts ``gap`` seconds after this state's
        last packet, on a copy of this state (which is left unchanged).

        Captures recorded at other times or on other days are shifted so that the
        stream continues the trained state instead of jumping backwards or far ahead.
        """
        clone = self.copy()
        if not packets:
            return clone, np.zeros((0, N_FEATURES))
        start = self.last_ts + gap if self.last_ts != -math.inf else packets[0].ts
        return clone, clone.transform(packets, time_shift=start - packets[0].ts)


def extractor_to_doc(extractor: NetFeatureExtractor) -> dict[str, object]:
    """The extractor's configuration and trained state as JSON-able data."""
    return {
        "config": vars(extractor.config),
        "last_ts": extractor.last_ts if extractor.last_ts != -math.inf else None,
        "tables": {
            name: {"tags": table.tags, "data": table.data}
            for name, table in (
                ("hosts", extractor.hosts),
                ("convs", extractor.convs),
                ("sockets", extractor.sockets),
            )
        },
    }


def extractor_from_doc(doc: dict[str, object]) -> NetFeatureExtractor:
    """Rebuild an extractor from :func:`extractor_to_doc` output (hostile input).

    Raises:
        DetectMisuse: wrong keys, sizes or types (the caller wraps it with the file name).
    """
    try:
        saved = dict(doc["config"])  # type: ignore[call-overload]
        # Models saved before host_by_pair existed keyed hosts by source alone.
        saved.setdefault("host_by_pair", False)
        config = NetFeatureConfig(**saved)
        extractor = NetFeatureExtractor(config)
        last = doc["last_ts"]
        extractor.last_ts = -math.inf if last is None else float(last)  # type: ignore[arg-type]
        if last is not None and not math.isfinite(extractor.last_ts):
            raise DetectMisuse("last_ts is not a finite number")
        tables = doc["tables"]
        for name in ("hosts", "convs", "sockets"):
            table = getattr(extractor, name)
            saved = tables[name]  # type: ignore[index]
            tags, data = saved["tags"], saved["data"]
            if len(tags) != len(table.tags) or len(data) != len(table.data):
                raise DetectMisuse(f"table {name}: sizes do not match its configuration")
            table.tags = [int(t) for t in tags]
            table.data = [float(x) for x in data]
            if any(not 0 <= t < 1 << 32 for t in table.tags):
                raise DetectMisuse(f"table {name}: a tag outside 0..2**32-1")
            if not all(math.isfinite(x) for x in table.data):
                raise DetectMisuse(f"table {name}: a value that is not a finite number")
    except (KeyError, TypeError, ValueError) as error:
        raise DetectMisuse(f"bad feature state: {error!r}") from None
    return extractor
