"""What one test's cassette is and how to serve it: marker, command line and ini, merged.

Kept apart from the hooks so the rules (which source wins, which arguments exist, how they
become replay options or `sse-recorder replay` arguments) read in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sse_recorder.replay.server import ReplayOptions


class RecordMode(StrEnum):
    """When a test records, as VCR.py's record modes."""

    NONE = "none"  # replay only; a missing cassette fails the test
    ONCE = "once"  # record a missing cassette, replay an existing one
    NEW_EPISODES = "new_episodes"  # replay what the cassette holds, record what it lacks
    ALL = "all"  # re-record from scratch

    @classmethod
    def parse(cls, text: str) -> RecordMode:
        """A mode from user text (`new-episodes` too); ValueError naming the choices."""
        try:
            return cls(text.replace("-", "_"))
        except ValueError:
            raise ValueError(f"bad record mode {text!r}: use "
                             f"{', '.join(mode.value for mode in cls)}") from None


MARKER_KWARGS = (
    "record_mode", "upstream", "path", "speed", "max_gap", "match", "ignore_json",
    "ignore_query", "ignore_headers", "when_exhausted", "faults", "seed",
)


def strings(value: object, what: str) -> tuple[str, ...]:
    """A marker argument that takes one string or several, as a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(str(v) for v in value)
    raise ValueError(f"{what} must be a string or a list of strings, got {value!r}")


def default_name(item: pytest.Item) -> str:
    """Test name below its module (class and parameters included), safe as a file name."""
    names: list[str] = []
    for node in item.listchain():
        if isinstance(node, pytest.Module):
            names = []
        elif node is not item.session and not isinstance(node, pytest.Package | pytest.Dir):
            names.append(node.name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(names)).strip("-.") or "cassette"


def named(item: pytest.Item) -> bool:
    """Whether a marker names this test's cassette (a name, or a path): tests may share a
    cassette on purpose then."""
    return any(m.args or m.kwargs.get("path") for m in item.iter_markers("sse_cassette"))


def sharing_default_name(item: pytest.Item, name: str) -> list[str]:
    """The other tests of this module whose default cassette name is `name`, this test's:
    ids that differ only where a file name cannot follow (`[a/b]`, `[a-b]`). Worked out
    once per module and session."""
    cache = item.session.stash.setdefault(_DEFAULT_NAMES, {})
    names = cache.get(item.path)
    if names is None:
        names = cache[item.path] = {}
        for other in item.session.items:
            if (other.path == item.path and "sse_cassette" in getattr(other, "fixturenames", ())
                    and not named(other)):
                names.setdefault(default_name(other), []).append(other.nodeid)
    return [n for n in names.get(name, []) if n != item.nodeid]


_DEFAULT_NAMES = pytest.StashKey[dict[Path, dict[str, list[str]]]]()


def store_cassette(url: str, name: str | None) -> Any:
    """Cassette `name` (or the one the URL names) of a store URL, as a `store.Location`.
    A password in the URL goes to PGPASSWORD: what is handed to a recorder process is the
    URL without it. Raises ValueError (with why) for a URL that cannot be used."""
    import os

    from sse_recorder.errors import CassetteError
    from sse_recorder.store.location import locate

    try:
        location = locate(url, name)
    except CassetteError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(location, Path) and location.password:
        os.environ["PGPASSWORD"] = location.password
    return location


def check_speed(speed: str) -> None:
    """Raise ValueError (with why) unless `speed` is 'instant' or a positive factor."""
    from sse_recorder.errors import ConfigError
    from sse_recorder.replay.schedule import Timing

    try:
        Timing.parse(speed)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _seed(value: Any) -> int | None:
    """The marker's seed: a whole number (or its digits), else a ValueError that names it."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"seed must be a whole number, not {value!r}")


@dataclass(frozen=True)
class CassetteSettings:
    """What one test's marker, the command line and the ini file decided, merged."""

    name: str
    path: Path  # or a `store.Location`: a cassette in the `sse_store` ini's store
    record_mode: RecordMode
    upstream: str | None
    kwargs: dict[str, Any]

    @classmethod
    def for_item(cls, item: pytest.Item) -> CassetteSettings:
        """Merge markers (closest wins), then the command line over them, then ini values."""
        config = item.config
        kwargs: dict[str, Any] = {}
        name: str | None = None
        for marker in reversed(list(item.iter_markers("sse_cassette"))):
            kwargs.update(marker.kwargs)
            if marker.args:
                if len(marker.args) > 1:
                    raise ValueError("sse_cassette takes one positional argument, the name")
                name = str(marker.args[0])
        unknown = sorted(set(kwargs) - set(MARKER_KWARGS))
        if unknown:
            raise ValueError(f"unknown sse_cassette argument(s) {', '.join(unknown)}; "
                             f"known: {', '.join(MARKER_KWARGS)}")
        mode = RecordMode.parse(str(config.getoption("sse_record_mode")
                                    or kwargs.get("record_mode")
                                    or config.getini("sse_record_mode") or "none"))
        upstream = (config.getoption("sse_upstream") or kwargs.get("upstream")
                    or config.getini("sse_upstream") or None)
        speed = next((value for value in (config.getoption("sse_speed"), kwargs.get("speed"),
                                          config.getini("sse_speed"))
                      if value is not None and value != ""), "instant")  # 0 is a value
        kwargs["speed"] = speed
        name = name or default_name(item)
        module_dir = item.path.parent
        store = config.getini("sse_store") or None
        if kwargs.get("path") and "://" in str(kwargs["path"]):
            path = store_cassette(str(kwargs["path"]), None)
        elif kwargs.get("path"):
            path = module_dir / Path(str(kwargs["path"])).expanduser()
        elif store:
            path = store_cassette(str(store), name)
        else:
            path = module_dir / "cassettes" / item.path.stem / f"{name}.sqlite"
        return cls(name, path, mode, upstream, kwargs)

    def replay_options(self) -> ReplayOptions:
        """`ReplayOptions` from the marker; raises ValueError (with why) if they are bad."""
        from sse_recorder.errors import ConfigError
        from sse_recorder.faults import FaultPlan
        from sse_recorder.replay.matching import IGNORED_FROM, MatchConfig
        from sse_recorder.replay.schedule import Timing
        from sse_recorder.replay.server import ReplayOptions

        k = self.kwargs
        try:
            seed = _seed(k.get("seed"))
            match = MatchConfig.parse(
                ",".join(strings(k["match"], "match")) if k.get("match") is not None else None,
                strings(k.get("ignore_json"), "ignore_json"),
                strings(k.get("ignore_query"), "ignore_query"),
                strings(k.get("ignore_headers"), "ignore_headers"),
                str(k.get("when_exhausted", "repeat-last")),
            )
            options = ReplayOptions(
                timing=Timing.parse(str(k["speed"]), k.get("max_gap")),
                match=match,
                faults=FaultPlan.load(strings(k.get("faults"), "faults"), seed=seed),
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        for ignore, part in IGNORED_FROM.items():  # as `replay` refuses --ignore-* alone
            if idle := match.idle(ignore):
                compared = ("only the headers it names" if part in match.criteria
                            else f"no {part}")
                raise ValueError(f"{ignore}={sorted(idle)} does nothing: match compares "
                                 f"{compared}")
        return options

    def match_arguments(self) -> list[str]:
        """`--match` and `--ignore-*` for the marker's matching rules (`replay --proxy`, and
        `record --replay-matched` in record mode new_episodes)."""
        k = self.kwargs
        args = ["--match", ",".join(strings(k["match"], "match"))] if k.get("match") else []
        for option, key in (("--ignore-json", "ignore_json"), ("--ignore-query", "ignore_query"),
                            ("--ignore-header", "ignore_headers")):
            for value in strings(k.get(key), key):
                args += [option, value]
        return args

    def replay_arguments(self, options: ReplayOptions) -> list[str]:
        """The `sse-recorder replay` options that serve this cassette as `options` does
        (for `replay --proxy` in a subprocess, where mitmproxy is not importable here)."""
        k = self.kwargs
        timing = options.timing
        args = ["--instant"] if timing.instant else ["--speed", str(timing.speed)]
        if timing.max_gap is not None and not timing.instant:
            args += ["--max-gap", f"{timing.max_gap * 1000:g}ms"]
        args += self.match_arguments()
        args += ["--when-exhausted", str(k.get("when_exhausted", "repeat-last"))]
        for spec in strings(k.get("faults"), "faults"):
            args += ["--fault", spec]
        if k.get("seed") is not None:
            args += ["--seed", str(k["seed"])]
        return args
