"""Experiment plans: a TOML file read into plain values, every mistake found before a run.

Rules:
- every table has a fixed set of keys; an unknown one is an error naming the nearest good
  one, and every value is read by the kind its key says (`KEYS` tables, not if-chains);
- fault specs are parsed by the fault spec language itself (`faults.parse_spec`), so a plan
  accepts exactly what `sse-recorder replay --fault` accepts, with the same messages;
- paths (cassette, client working directory) are relative to the plan file;
- the runs are a pure function of the plan: scenario x variant (speeds x seeds) x repeat,
  each with a seed derived from the plan's (`derive_seed`), so a run id names a run exactly
  and `--rerun` needs nothing but the plan.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sse_recorder.errors import ConfigError
from sse_recorder.faults import parse_spec
from sse_recorder.faults.registry import did_you_mean
from sse_recorder.units import parse_duration

BASELINE = "baseline"  # the scenario without faults that every experiment checks first


@dataclass(frozen=True)
class Hypothesis:
    """What a resilient client does: the steady state every run is judged against."""

    exit_status: int | None = 0  # None: any exit status
    output_contains: tuple[str, ...] = ()
    output_matches: tuple[str, ...] = ()  # regular expressions (re.search)
    within: float | None = None  # seconds the client may take
    all_events: bool = True  # every recorded event served at least once
    no_duplicates: bool = True  # no event served twice (a correct resume)
    last_event_id: bool = True  # every reconnection after an event with an id sends it
    reconnect_min: float | None = None  # seconds, reconnect delay bounds
    reconnect_max: float | None = None
    retry_after: bool = True  # waits at least Retry-After before the next request
    retry_field: bool = True  # waits at least the stream's `retry:` before reconnecting
    tolerance: float = 0.05  # seconds of slack on every timing comparison


@dataclass(frozen=True)
class Client:
    command: tuple[str, ...]
    cwd: Path
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: tuple[str, ...] = ()
    speeds: tuple[float, ...] = ()
    seeds: tuple[int, ...] = ()
    times: int | None = None  # the faults meet only the first N responses; None: every one
    hypothesis: Hypothesis = field(default_factory=Hypothesis)
    description: str = ""


@dataclass(frozen=True)
class Run:
    """One run to make: a scenario's variant, one repeat, with its own seed."""

    scenario: Scenario
    variant: str  # "" or e.g. "speed=2,seed=3"
    repeat: int  # from 1
    speed: float
    seed: int

    @property
    def id(self) -> str:
        variant = f"[{self.variant}]" if self.variant else ""
        return f"{self.scenario.name}{variant}#{self.repeat}"

    @property
    def cell(self) -> tuple[str, str]:
        """The matrix cell the run belongs to: (scenario, variant)."""
        return self.scenario.name, self.variant


@dataclass(frozen=True)
class Plan:
    path: Path
    cassette: Path
    client: Client
    timeout: float = 30.0
    repeats: int = 1
    seed: int = 0
    speed: float = 1.0
    hypothesis: Hypothesis = field(default_factory=Hypothesis)
    scenarios: tuple[Scenario, ...] = ()
    # Proxy mode: the client also gets a mitmproxy URL and its CA (in `confdir`), and may
    # then ask for the recorded URLs themselves, as an unmodified client would.
    proxy: bool = False
    confdir: Path = field(default_factory=lambda: Path("~/.mitmproxy").expanduser())

    def baseline(self) -> Run:
        scenario = Scenario(BASELINE, hypothesis=self.hypothesis,
                            description="no faults: the steady state")
        return Run(scenario, "", 1, self.speed, derive_seed(self.seed, BASELINE, 1))

    def runs(self, only: tuple[str, ...] = ()) -> list[Run]:
        """Every scenario x variant x repeat (only the scenarios named in `only`)."""
        names = [scenario.name for scenario in self.scenarios]
        for name in only:
            if name not in names:
                raise ConfigError(f"no scenario {name!r} in {self.path}"
                                  f"{did_you_mean(name, names)}")
        runs = []
        for scenario in self.scenarios:
            if only and scenario.name not in only:
                continue
            for variant, speed, base in _variants(scenario, self.speed, self.seed):
                runs += [Run(scenario, variant, repeat, speed,
                             derive_seed(base, scenario.name, repeat))
                         for repeat in range(1, self.repeats + 1)]
        return runs

    def run_by_id(self, run_id: str) -> Run:
        runs = {run.id: run for run in [self.baseline(), *self.runs()]}
        if run_id not in runs:
            raise ConfigError(f"no run {run_id!r} in {self.path}{did_you_mean(run_id, runs)}"
                              f" (runs are named like {next(iter(runs))})")
        return runs[run_id]


def derive_seed(base: int, scenario: str, repeat: int) -> int:
    """A run's fault seed: the same plan seed, scenario and repeat always give the same."""
    digest = hashlib.sha256(f"{base}:{scenario}:{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _variants(scenario: Scenario, speed: float, seed: int) -> list[tuple[str, float, int]]:
    """(label, speed, seed base) for each speed x seed of the scenario."""
    speeds: tuple[float | None, ...] = scenario.speeds or (None,)
    seeds: tuple[int | None, ...] = scenario.seeds or (None,)
    out = []
    for each_speed in speeds:
        for each_seed in seeds:
            label = ",".join(part for part in (
                f"speed={each_speed:g}" if each_speed is not None else "",
                f"seed={each_seed}" if each_seed is not None else "") if part)
            out.append((label, speed if each_speed is None else each_speed,
                        seed if each_seed is None else each_seed))
    return out


# -- reading ---------------------------------------------------------------------------------

Reader = Callable[[Any, str], Any]


def _expect(kind: type | tuple[type, ...], what: str) -> Reader:
    def read(value: Any, where: str) -> Any:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigError(f"{where} must be {what}, not {value!r}")
        if not isinstance(value, kind):
            raise ConfigError(f"{where} must be {what}, not {value!r}")
        return value
    return read


def _duration(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where} must be a duration (250ms, 2s, 1m), not {value!r}")
    return parse_duration(value, where)


def _positive(read: Reader) -> Reader:
    def check(value: Any, where: str) -> Any:
        number = read(value, where)
        if number <= 0:
            raise ConfigError(f"{where} must be > 0, not {value!r}")
        return number
    return check


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A string or a list of strings."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{where} must be a string or a list of strings")
    return tuple(items)


def _regexes(value: Any, where: str) -> tuple[str, ...]:
    patterns = _strings(value, where)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}: bad regular expression {pattern!r}: {exc}") from None
    return patterns


def _list_of(read: Reader) -> Reader:
    def each(value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where} must be a non-empty list")
        return tuple(read(item, f"{where}[{index}]") for index, item in enumerate(value))
    return each


_BOOL = _expect(bool, "true or false")
_INT = _expect(int, "a whole number")
_NUMBER = _expect((int, float), "a number")
_TEXT = _expect(str, "a string")
_TABLE = _expect(dict, "a table")

HYPOTHESIS_KEYS: dict[str, Reader] = {
    "exit_status": _INT, "output_contains": _strings, "output_matches": _regexes,
    "within": _duration, "all_events": _BOOL, "no_duplicates": _BOOL,
    "last_event_id": _BOOL, "reconnect_delay": _TABLE, "retry_after": _BOOL,
    "retry_field": _BOOL, "tolerance": _duration,
}
DELAY_KEYS: dict[str, Reader] = {"min": _duration, "max": _duration}
CLIENT_KEYS: dict[str, Reader] = {"command": lambda v, w: command_argv(v, w), "cwd": _TEXT,
                                  "env": _TABLE}
SCENARIO_KEYS: dict[str, Reader] = {
    "name": _TEXT, "faults": _list_of(_TEXT), "speeds": _list_of(_positive(_NUMBER)),
    "seeds": _list_of(_INT), "times": _positive(_INT), "hypothesis": _TABLE,
    "description": _TEXT,
}
TOP_KEYS: dict[str, Reader] = {
    "cassette": _TEXT, "seed": _INT, "repeats": _positive(_INT),
    "timeout": _positive(_duration), "speed": _positive(_NUMBER), "client": _TABLE,
    "hypothesis": _TABLE, "scenario": _list_of(_TABLE), "proxy": _BOOL, "confdir": _TEXT,
}
REQUIRED = ("cassette", "client")


def command_argv(value: Any, where: str) -> tuple[str, ...]:
    """The argv; `{python}` in it is the Python running sse-recorder."""
    try:
        argv = shlex.split(value) if isinstance(value, str) else _strings(value, where)
    except ValueError as exc:  # unbalanced quotes
        raise ConfigError(f"{where}: {exc} in {value!r}") from None
    if not argv:
        raise ConfigError(f"{where} must name a program")
    return tuple(arg.replace("{python}", sys.executable) for arg in argv)


def _read_table(table: Mapping[str, Any], keys: Mapping[str, Reader], where: str
                ) -> dict[str, Any]:
    unknown = [key for key in table if key not in keys]
    if unknown:
        key = unknown[0]
        hint = did_you_mean(key, keys) or f" (it takes {', '.join(keys)})"
        raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    return {key: keys[key](value, f"{where}.{key}" if where else key)
            for key, value in table.items()}


def _hypothesis(table: Mapping[str, Any], base: Hypothesis, where: str) -> Hypothesis:
    values = _read_table(table, HYPOTHESIS_KEYS, where)
    delay = _read_table(values.pop("reconnect_delay", {}), DELAY_KEYS,
                        f"{where}.reconnect_delay")
    if "min" in delay:
        values["reconnect_min"] = delay["min"]
    if "max" in delay:
        values["reconnect_max"] = delay["max"]
    return replace(base, **values)


def _scenario(table: Mapping[str, Any], base: Hypothesis, number: int) -> Scenario:
    where = f"scenario #{number}"
    if "name" not in table:
        raise ConfigError(f"{where} needs a name")
    values = _read_table(table, SCENARIO_KEYS, where)
    name = values["name"]
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or name == BASELINE:
        raise ConfigError(f"{where}: name {name!r} must be letters, digits, and _ . + - "
                          f"(and not {BASELINE!r}, which is the run without faults)")
    where = f"scenario {name}"
    for spec in values.get("faults", ()):
        try:
            parse_spec(spec)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    hypothesis = _hypothesis(values.pop("hypothesis", {}), base, f"{where}.hypothesis")
    return Scenario(hypothesis=hypothesis, **values)


def load_plan(path: Path) -> Plan:
    """Read and check a plan; ConfigError (one line) on the first problem found."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the plan: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return _plan(path, document)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _plan(path: Path, document: dict[str, Any]) -> Plan:
    values = _read_table(document, TOP_KEYS, "")
    for key in REQUIRED:
        if key not in values:
            raise ConfigError(f"missing {key!r} (see sse-recorder experiment --init)")
    here = path.parent
    cassette = here / values.pop("cassette")
    if not cassette.is_file():
        raise ConfigError(f"cassette {cassette} does not exist")
    client_values = _read_table(values.pop("client"), CLIENT_KEYS, "client")
    if "command" not in client_values:
        raise ConfigError("client needs a command (a list: [\"python\", \"client.py\"])")
    env = client_values.get("env", {})
    if not all(isinstance(value, str) for value in env.values()):
        raise ConfigError("client.env values must be strings")
    client = Client(client_values["command"], here / client_values.get("cwd", "."),
                    tuple(env.items()))
    check_command(client)
    hypothesis = _hypothesis(values.pop("hypothesis", {}), Hypothesis(), "hypothesis")
    scenarios = tuple(_scenario(table, hypothesis, number)
                      for number, table in enumerate(values.pop("scenario", ()), 1))
    names = [scenario.name for scenario in scenarios]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"scenario {twice[0]!r} is defined twice")
    if "speed" in values:
        values["speed"] = float(values["speed"])
    if "confdir" in values:
        values["confdir"] = here / Path(values["confdir"]).expanduser()
    if values.get("proxy") and not proxy_available():
        raise ConfigError("proxy = true needs mitmproxy: install sse-recorder[record]")
    return Plan(path, cassette, client, hypothesis=hypothesis, scenarios=scenarios, **values)


def proxy_available() -> bool:
    from sse_recorder.mitm import inprocess

    return inprocess.load()


def check_command(client: Client) -> None:
    """The client's program must exist before any run starts."""
    if not client.cwd.is_dir():
        raise ConfigError(f"client.cwd {client.cwd} is not a directory")
    program = client.command[0]
    env = dict(client.env)
    if "/" in program:
        found = (client.cwd / program).is_file()
    else:
        found = shutil.which(program, path=env.get("PATH")) is not None
    if not found:
        raise ConfigError(f"client command not found: {program}")
