"""The conda solve, as a child process: ``python -P -m snakemake_deploy_nixsnake.conda_solve REQUEST RESULT``.

Run by :func:`snakemake_deploy_nixsnake.conda.solve` only. rattler's native code can
abort the interpreter at exit after its work is done (seen with py-rattler 0.28), so the
solve runs in its own process, writes its answer to RESULT (JSON) and ends with
``os._exit``; the parent trusts the RESULT file, not the exit status. Imports only the
standard library and rattler.

REQUEST: ``{"channels": [url...], "specs": [str...], "exempt": [name...],
"cutoff_ms": int, "platforms": [subdir...], "virtual_packages": [[name, version, build]...],
"cache_dir": str, "timeout_s": int}``.

RESULT: ``{"ok": true, "records": [{name, version, build, subdir, channel, url, sha256,
size, timestamp_ms, indexed_timestamp_ms}...]}`` or ``{"ok": false, "kind":
"unsatisfiable" | "unavailable" | "error", "message": str}``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from typing import Any


def _ms(t: dt.datetime | None) -> int | None:
    return None if t is None else round(t.timestamp() * 1000)


class _DateFiltered:
    """A rattler ``RepoDataSource``: one channel's records, without those made after the
    cut-off unless their package is exempt. Used only when ``exempt`` is not empty
    (otherwise rattler's own ``exclude_newer`` does the same, natively). The rule is
    rattler's: a record's ``indexed_timestamp`` if it has one, else its build
    ``timestamp``; records with neither are dropped."""

    def __init__(self, gateway: Any, channel: Any, cutoff: dt.datetime, exempt: set[str], names: dict[str, list[str]]):
        self.gateway, self.channel, self.cutoff, self.exempt, self.names = gateway, channel, cutoff, exempt, names

    async def fetch_package_records(self, platform: Any, name: Any) -> list:
        n = name.normalized if hasattr(name, "normalized") else str(name)
        res = await self.gateway.query(sources=[self.channel], platforms=[platform], specs=[n], recursive=False)
        out = []
        for group in res:
            for r in group:
                t = r.indexed_timestamp or r.timestamp
                if n in self.exempt or (t is not None and t <= self.cutoff):
                    out.append(r)
        return out

    def package_names(self, platform: Any) -> list[str]:
        return self.names.get(str(platform), [])


async def _solve(req: dict[str, Any]) -> list:
    import rattler
    from rattler import BuildString, Channel, ChannelPriority, Gateway, GenericVirtualPackage, PackageName, Version

    gateway = Gateway(cache_dir=req["cache_dir"], show_progress=False)
    cutoff = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=req["cutoff_ms"])  # exact
    vps = [GenericVirtualPackage(PackageName(n), Version(v), BuildString(b)) for n, v, b in req["virtual_packages"]]
    channels = [Channel(url) for url in req["channels"]]
    exempt = set(req["exempt"])
    common = dict(
        specs=req["specs"],
        gateway=gateway,
        platforms=req["platforms"],
        virtual_packages=vps,
        channel_priority=ChannelPriority.Strict,
        timeout=dt.timedelta(seconds=req["timeout_s"]),
    )
    if not exempt:
        return await rattler.solve(sources=channels, exclude_newer=cutoff, **common)
    sources = []
    for ch in channels:
        names: dict[str, list[str]] = {}
        for platform in req["platforms"]:
            got = await gateway.names(sources=[ch], platforms=[platform])
            names[platform] = sorted(str(getattr(x, "normalized", x)) for x in got)
        sources.append(_DateFiltered(gateway, ch, cutoff, exempt, names))
    return await rattler.solve(sources=sources, **common)


def _record(r: Any) -> dict[str, Any]:
    return {
        "name": r.name.normalized,
        "version": str(r.version),
        "build": str(r.build),
        "subdir": str(r.subdir),
        "channel": None if r.channel is None else str(r.channel),
        "url": str(r.url),
        "sha256": r.sha256.hex() if r.sha256 else None,
        "size": None if r.size is None else int(r.size),
        "timestamp_ms": _ms(r.timestamp),
        "indexed_timestamp_ms": _ms(r.indexed_timestamp),
    }


def main(argv: list[str]) -> dict[str, Any]:
    with open(argv[0], encoding="utf-8") as fh:
        req = json.load(fh)
    try:
        records = asyncio.run(_solve(req))
    except Exception as exc:  # rattler's exceptions: SolverError, GatewayError, ...
        kind = type(exc).__name__
        category = {
            "SolverError": "unsatisfiable",
            "GatewayError": "unavailable",
            "FetchRepoDataError": "unavailable",
            "CacheDirError": "unavailable",
        }.get(kind, "error")
        return {"ok": False, "kind": category, "error_type": kind, "message": str(exc)}
    return {"ok": True, "records": sorted((_record(r) for r in records), key=lambda d: d["name"])}


if __name__ == "__main__":
    try:
        result = main(sys.argv[1:])
    except BaseException as exc:
        result = {"ok": False, "kind": "error", "error_type": type(exc).__name__, "message": str(exc)}
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(tmp, sys.argv[2])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # never run rattler's exit-time teardown (it can abort the interpreter)
