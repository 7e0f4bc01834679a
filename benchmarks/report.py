"""Turn a results document into Markdown tables, a PNG and docs/performance.md."""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any

from common import fmt_mib, fmt_s, fmt_stat, log

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "performance.md.in"
#: issue 14: what the bwrap runtime may add to the bare container start of the same run
START_GOAL_S = 0.005


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def machine_line(doc: dict) -> str:
    m = doc["machine"]
    load = m.get("loadavg_at_start") or []
    busy = f", load average {load[0]} at the start" if load else ""
    return (f"{m['nproc']} cores ({m['cpu_model']}), {m['mem_gib']} GiB RAM{busy}, {m['os']}, kernel {m['kernel']}, "
            f"work directory on {m['workdir_fs']}; {m['tools']['nix']}, {m['tools']['mksquashfs']}, "
            f"squashfuse {m['tools']['squashfuse']}, {m['tools']['bwrap']}, {m['tools']['snakemake'] and 'snakemake ' + m['tools']['snakemake']}")  # fmt: skip


def cold_table(doc: dict) -> str:
    rows = []
    for env, c in doc["results"].get("cold_build", {}).items():
        rows.append([
            env, f"{c['closure_paths']}", fmt_mib(c["closure_nar_bytes"]), fmt_mib(c["image_bytes"]),
            fmt_stat(c["nixsnake_build"]), fmt_stat(c["raw_steps"]), f"**{c['ratio']:.2f}x**",
            f"{c['overhead_s'] * 1000:+.0f} ms",
        ])  # fmt: skip
    return _table(
        ["env", "store paths", "closure (NAR)", "image", "`nixsnake build`", "raw steps", "ratio", "difference"], rows
    )


def cold_breakdown_table(doc: dict) -> str:
    rows = []
    for env, c in doc["results"].get("cold_build", {}).items():
        nb = c["nixsnake_breakdown"]
        rb = c["raw_step_breakdown"]
        ns = "; ".join(f"{k} {fmt_s(v['median'])}" for k, v in nb.items())
        rs = "; ".join(f"{k} {fmt_s(v['median'])}" for k, v in rb.items())
        rows.append([env, ns, rs])
    return _table(["env", "nixsnake, in process (median per step)", "raw steps (median per step)"], rows)


def warm_table(doc: dict) -> str:
    w = doc["results"].get("warm_path")
    if not w:
        return "(not run)"
    rows = [[k, fmt_stat(v), f"{v['ratio_to_python']:.2f}x"] for k, v in w["single"].items()]
    return _table(["what (image present)", "time", "vs `python -c pass`"], rows)


def dag_table(doc: dict) -> str:
    w = doc["results"].get("warm_path")
    if not w:
        return "(not run)"
    d = w["dag"]
    rows = [[k, fmt_stat(v), f"{v['per_job_us']:.0f} µs", f"{v['ratio_to_snakemake_n']:.2f}x"]
            for k, v in d.items() if isinstance(v, dict)]  # fmt: skip
    return _table([f"{d['jobs']} jobs, {d['env_files']} env files", "time", "per job", "vs `snakemake -n`"], rows)


def e2e_tables(doc: dict) -> dict[str, str]:
    """Suite 6: ``snakemake -n`` and a real run, with snakemake's plugin branch."""
    e = doc["results"].get("end_to_end")
    if not e:
        return {"e2e_dry_table": "(not run)", "e2e_run_table": "(not run)"}
    if "skipped" in e:
        text = f"(skipped: {e['skipped']})"
        return {"e2e_dry_table": text, "e2e_run_table": text}
    d = e["dry_run"]
    rows = [[k, fmt_stat(v), f"{v['per_job_us']:.0f} µs", f"**{v['ratio']:.3f}x**"]
            for k, v in d.items() if isinstance(v, dict) and "median" in v]  # fmt: skip
    dry = _table([f"`snakemake -n`, {d['jobs']:,} jobs, {d['env_files']} env files", "time", "per job",
                  "vs no software directive"], rows)  # fmt: skip
    r = e["real_run"]
    rows = []
    for k, v in r.items():
        if not (isinstance(v, dict) and "median" in v):
            continue
        c = v["cpu_s"]
        rows.append([k, fmt_stat(v), f"**{v['ratio']:.2f}x**", f"{v['adds_per_job_ms']:+.1f} ms",
                     fmt_s(c["snakemake process"]["median"]), fmt_s(c["its jobs (getrusage children)"]["median"])])  # fmt: skip
    real = _table([f"{r['jobs']:,} jobs, `--cores {r['cores']}`", "wall time", "vs no `--sdm`", "adds per job",
                   "CPU: snakemake process", "CPU: its jobs"], rows)  # fmt: skip
    return {"e2e_dry_table": dry, "e2e_run_table": real}


def start_table(doc: dict) -> str:
    j = doc["results"].get("job_start")
    if not j:
        return "(not run)"
    rows = []
    for env, v in j.items():
        if not isinstance(v, dict):
            continue
        for k, s in v.items():
            if isinstance(s, dict) and "median" in s:
                rows.append([f"{env} ({fmt_mib(v['image_bytes'])})", k, fmt_stat(s), f"{s['ratio_to_host']:.0f}x",
                             f"{s['ratio_to_bare_container']:.2f}x"])  # fmt: skip
    return _table(["image", "how `true` runs", "time", "vs host", "vs bare container"], rows)


def meta_table(doc: dict) -> str:
    m = doc["results"].get("metadata_storm")
    if not m:
        return "(not run)"
    rows = []
    for key, c in m["counts"].items():
        calls = c["calls"]

        def g(k: str) -> str:
            return f"{calls[k]['median']:.0f}" if k in calls else "0"

        t = m["times"].get(key)
        rows.append([c["mode"], f"`{m['commands'][c['command']]}`", f"**{c['reach_store_dir']['median']:.0f}**",
                     g("inside: image paths"), g("image file reads (pread64)"), g("file calls, all"),
                     fmt_stat(t) if t else ""])  # fmt: skip
    return _table(["mode", "job", "calls reaching the store dir", "image-path calls in the job",
                   "pread64 of the image file", "all file calls", "time (no strace)"], rows)  # fmt: skip


def size_table(doc: dict) -> str:
    s = doc["results"].get("image_size")
    if not s:
        return "(not run)"
    rows = [[k + (" (default)" if v["default"] else ""), fmt_mib(v["squashfs_bytes"]), f"{v['ratio_to_nar']:.3f}",
             fmt_stat(v["pack_time"]), f"{v['nar_mib_per_s']:.0f} MiB/s"]
            for k, v in s["by_compression"].items()]  # fmt: skip
    head = f"{s['env']} env: {s['closure_paths']} store paths, NAR {fmt_mib(s['nar_bytes'])}"
    t1 = _table([head, "squashfs", "size / NAR", "pack time", "NAR per second"], rows)
    rows2 = [[k, fmt_mib(v["nar_bytes"]), fmt_mib(v["image_bytes"]), f"{v['ratio_to_nar']:.3f}"]
             for k, v in s["all_envs_default_compression"].items()]  # fmt: skip
    return t1 + "\n\n" + _table(["env (default zstd-3)", "closure (NAR)", "SIF", "SIF / NAR"], rows2)


def tables(doc: dict) -> dict[str, str]:
    return {
        "cold_table": cold_table(doc),
        "cold_breakdown_table": cold_breakdown_table(doc),
        "warm_table": warm_table(doc),
        "dag_table": dag_table(doc),
        "start_table": start_table(doc),
        "meta_table": meta_table(doc),
        "size_table": size_table(doc),
        **e2e_tables(doc),
    }


def write_markdown(doc: dict, path: Path) -> None:
    t = tables(doc)
    head = "\n".join(f"- **{k}**: {v}" for k, v in doc["headline"].items())
    text = f"""# nixsnake benchmarks, {doc["date"]}

`{doc["command"]}` — {doc["wall_seconds"]["total"]:.0f} s wall. Machine: {machine_line(doc)}.
Times are medians with the interquartile range in brackets; ratios are of medians,
against a baseline measured in the same run. Explained in `docs/performance.md`.

{head}

## 1. Cold build (image not in the store; nix store warm)

{t["cold_table"]}

{t["cold_breakdown_table"]}

## 2. Warm path

{t["warm_table"]}

{t["dag_table"]}

## 3. Job start

{t["start_table"]}

## 4. Metadata storm

{t["meta_table"]}

## 5. Image size

{t["size_table"]}

## 6. End to end, with snakemake's plugin branch

{t["e2e_dry_table"]}

{t["e2e_run_table"]}
"""
    path.write_text(text)


def write_plot(doc: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'): no PNG")
        return False
    r = doc["results"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    fig.suptitle(f"nixsnake benchmarks {doc['date']} — {doc['machine']['nproc']} cores, {doc['machine']['cpu_model']}")

    def bars(ax, labels, series: dict[str, list[dict]], ylabel: str, log_scale: bool = False) -> None:
        n = len(series)
        width = 0.8 / max(n, 1)
        for i, (name, stats) in enumerate(series.items()):
            xs = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
            med = [s["median"] for s in stats]
            err = [[s["median"] - s["q1"] for s in stats], [s["q3"] - s["median"] for s in stats]]
            ax.bar(xs, med, width, yerr=err, capsize=3, label=name)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel(ylabel)
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=8)

    c = r.get("cold_build")
    if c:
        labels = [k.replace(" (nixpkgs_source=demo)", "\n(demo source)") for k in c]
        bars(axes[0][0], labels, {"nixsnake build": [v["nixsnake_build"] for v in c.values()],
                                  "raw steps": [v["raw_steps"] for v in c.values()]}, "seconds")  # fmt: skip
        for i, v in enumerate(c.values()):
            axes[0][0].annotate(f"{v['ratio']:.2f}x", (i, v["nixsnake_build"]["q3"]), textcoords="offset points",
                                xytext=(0, 4), ha="center", fontsize=8)  # fmt: skip
        axes[0][0].set_title("1. Cold build vs raw nix-build + mksquashfs + write")
    j = r.get("job_start")
    if j:
        envs = [k for k, v in j.items() if isinstance(v, dict)]
        keys = ["host: bash -c true", "bare container (squashfuse + bwrap)", "nixsnake bwrap runtime",
                "nixsnake apptainer runtime (stand-in)"]  # fmt: skip
        series = {
            k: [{kk: vv * 1000 for kk, vv in j[e][k].items() if kk in ("median", "q1", "q3")} for e in envs]
            for k in keys
        }
        bars(axes[0][1], [f"{e}\n{j[e]['image_bytes'] / 2**20:.0f} MiB" for e in envs], series, "milliseconds")
        axes[0][1].set_title("3. Job start (`true`) by image size")
    m = r.get("metadata_storm")
    if m:
        cmds = list(m["commands"])
        modes = ["SIF (nixsnake bwrap runtime)", "unpacked directory (bwrap)"]
        series = {md: [{k: max(v, 0.5) for k, v in m["counts"][f"{md} | {c}"]["reach_store_dir"].items() if k in ("median", "q1", "q3")}
                       for c in cmds] for md in modes}  # fmt: skip
        bars(axes[1][0], cmds, series, "file syscalls reaching the store dir", log_scale=True)
        axes[1][0].set_title("4. Metadata storm (strace -f -e trace=%file)")
    s = r.get("image_size")
    if s:
        ax = axes[1][1]
        for k, v in s["by_compression"].items():
            ax.errorbar([v["pack_time"]["median"]], [v["ratio_to_nar"]],
                        xerr=[[v["pack_time"]["median"] - v["pack_time"]["q1"]], [v["pack_time"]["q3"] - v["pack_time"]["median"]]],
                        fmt="o", capsize=3, label=k)  # fmt: skip
        ax.set_xlabel("pack time (s)")
        ax.set_ylabel("squashfs size / closure NAR size")
        ax.set_title(f"5. Image size vs pack time ({s['env']} env, NAR {s['nar_bytes'] / 2**20:.0f} MiB)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _fmt_values(doc: dict) -> dict[str, str]:
    """Named figures for the docs template (missing suites give "n/a")."""
    v: dict[str, str] = {}
    r = doc["results"]
    for env, c in r.get("cold_build", {}).items():
        key = env.split(" ")[0] + ("_demo" if "demo" in env else "")
        v[f"cold_{key}_ratio"] = f"{c['ratio']:.2f}"
        v[f"cold_{key}_ns"] = fmt_s(c["nixsnake_build"]["median"])
        v[f"cold_{key}_raw"] = fmt_s(c["raw_steps"]["median"])
        v[f"cold_{key}_diff"] = f"{c['overhead_s'] * 1000:+.0f} ms"
        v[f"cold_{key}_nar"] = fmt_mib(c["closure_nar_bytes"])
        inproc = c["nixsnake_breakdown"].get("total (in process)")
        if inproc:
            v[f"cold_{key}_inproc"] = fmt_s(inproc["median"])
            v[f"cold_{key}_inproc_ratio"] = f"{inproc['median'] / c['raw_steps']['median']:.2f}"
            v[f"cold_{key}_startup"] = fmt_s(c["nixsnake_build"]["median"] - inproc["median"])
    w = r.get("warm_path")
    if w:
        s = w["single"]
        v["warm_build"] = fmt_s(s["nixsnake build (image present)"]["median"])
        v["warm_build_ratio"] = f"{s['nixsnake build (image present)']['ratio_to_python']:.1f}"
        v["warm_python"] = fmt_s(s["python -c pass"]["median"])
        for key, name in (("nixsnake --version", "version"), ("nixsnake check ENV", "check")):
            if key in s:
                v[f"startup_{name}"] = fmt_s(s[key]["median"])
                v[f"startup_{name}_ratio"] = f"{s[key]['ratio_to_python']:.2f}"
                v[f"startup_{name}_over"] = f"{s[key]['over_python_s'] * 1000:+.0f} ms"
        if "nixsnake check ENV" in s:
            over = s["nixsnake check ENV"]["over_python_s"]
            v["startup_check_note"] = (
                "Within the target." if over < 0.1 else
                "**Above the target**: most of it is importing pydantic and building the env "
                "file's validation models (`spec.py`), which `check` needs; see below."
            )  # fmt: skip
        v["warm_import"] = fmt_s(s["import nixsnake CLI"]["median"])
        v["warm_ensure"] = fmt_s(s["ensure_image() in process"]["median"])
        v["warm_deploy"] = fmt_s(s["plugin deploy() in process"]["median"])
        d = w["dag"]
        a, bb, sn = (
            d["plugin: Env + hash + decorate per job"],
            d["plugin: Env + hash per env file, decorate per job"],
            d["snakemake -n (no software directive)"],
        )
        v.update(dag_jobs=f"{d['jobs']:,}", dag_per_job=fmt_s(a["median"]), dag_per_job_us=f"{a['per_job_us']:.0f}",
                 dag_per_job_ratio=f"{a['ratio_to_snakemake_n']:.2f}", dag_per_rule=fmt_s(bb["median"]),
                 dag_per_rule_ratio=f"{bb['ratio_to_snakemake_n']:.3f}", dag_smk=fmt_s(sn["median"]),
                 dag_smk_us=f"{sn['per_job_us']:.0f}")  # fmt: skip
    j = r.get("job_start")
    if j:
        for env, e in j.items():
            if not isinstance(e, dict):
                continue
            v[f"start_{env}_host"] = fmt_s(e["host: bash -c true"]["median"])
            v[f"start_{env}_bare"] = fmt_s(e["bare container (squashfuse + bwrap)"]["median"])
            v[f"start_{env}_bwrap"] = fmt_s(e["nixsnake bwrap runtime"]["median"])
            v[f"start_{env}_app"] = fmt_s(e["nixsnake apptainer runtime (stand-in)"]["median"])
            v[f"start_{env}_wrapper"] = f"{e['wrapper_adds_s'] * 1000:.1f} ms"
            if "script_adds_s" in e:  # the wrapper's figure split: the job's own start, nixsnake's share
                floor = e["bare container (squashfuse + bwrap)"]["median"] + e["job_floor_adds_s"]
                v[f"start_{env}_floor"] = fmt_s(floor)
                v[f"start_{env}_floor_adds"] = f"{e['job_floor_adds_s'] * 1000:.1f} ms"
                v[f"start_{env}_script"] = f"{e['script_adds_s'] * 1000:.1f} ms"
            # the stand-in's own cost (its Python start-up + argument parsing), apart from ours
            v[f"start_{env}_standin_adds"] = (
                f"{(e['nixsnake apptainer runtime (stand-in)']['median'] - e['nixsnake bwrap runtime']['median']) * 1000:.0f} ms"
            )
            if "nixsnake bwrap runtime, gpu=auto" in e:
                v[f"start_{env}_auto"] = fmt_s(e["nixsnake bwrap runtime, gpu=auto"]["median"])
        if "size_slope_ms_per_100MiB" in j:
            v["start_slope"] = f"{j['size_slope_ms_per_100MiB']:+.1f} ms"
        # the goal, judged on the mean over the images: nothing the wrapper does depends on
        # the image, so each row is one more sample of the same figure
        adds = [e["wrapper_adds_s"] for e in j.values() if isinstance(e, dict)]
        if adds:
            mean = sum(adds) / len(adds)
            v["start_mean_wrapper"] = f"{mean * 1000:.1f} ms"
            v["start_goal"] = "met" if mean <= START_GOAL_S else "not met"
    m = r.get("metadata_storm")
    if m:
        cmds = list(m["commands"])
        for i, c in enumerate(cmds):
            for md, short in (("SIF (nixsnake bwrap runtime)", "sif"), ("unpacked directory (bwrap)", "dir")):
                cc = m["counts"][f"{md} | {c}"]
                v[f"meta_{short}_{i}"] = f"{cc['reach_store_dir']['median']:.0f}"
                v[f"meta_{short}_{i}_image"] = f"{cc['calls'].get('inside: image paths', {'median': 0})['median']:.0f}"
                v[f"meta_{short}_{i}_time"] = fmt_s(m["times"][f"{md} | {c}"]["median"])
            v[f"meta_cmd_{i}"] = m["commands"][c]
        v["meta_pread"] = (
            f"{m['counts'][f'SIF (nixsnake bwrap runtime) | {cmds[-1]}']['calls'].get('image file reads (pread64)', {'median': 0})['median']:.0f}"
        )
        v["meta_ratio"] = f"{m['ratio_dir_to_sif_calls']:.0f}"
        v["meta_env"] = m["env"]
    e2e = r.get("end_to_end")
    if e2e and "skipped" in e2e:
        v["e2e_status"] = f"**Skipped in this run**: {e2e['skipped']}"
    elif e2e:
        sm = e2e["snakemake"]
        v["e2e_status"] = (f"Run with snakemake {sm['snakemake']} (the plugin branch), interface {sm['interface']}, "
                           f"importing nixsnake from this checkout.")  # fmt: skip
        d = e2e["dry_run"]
        plain, withs = d["snakemake -n, no software directive"], d["snakemake -n --sdm nixsnake"]
        v.update(e2e_dry_jobs=f"{d['jobs']:,}", e2e_dry_ratio=f"{d['ratio']:.3f}", e2e_dry_plain=fmt_s(plain["median"]),
                 e2e_dry_with=fmt_s(withs["median"]), e2e_dry_diff=f"{d['difference_s'] * 1000:+.0f} ms",
                 e2e_dry_reps=str(plain["n"]),
                 e2e_dry_verdict="within the goal of 1.05x" if d["ratio"] <= 1.05 else "**above the goal of 1.05x**")  # fmt: skip
        calls, secs = d["plugin_calls"], d["plugin_seconds"]["cpu"]
        total = secs["total: import + Env methods"]
        v.update(e2e_dry_envs=str(calls.get("Env.__post_init__", 0)), e2e_dry_parses=str(calls.get("parse_spec", 0)),
                 e2e_dry_plugin=fmt_s(total), e2e_dry_plugin_import=fmt_s(secs.get("import the plugin", 0.0)),
                 e2e_dry_plugin_share=f"{total / withs['median'] * 100:.1f}%")  # fmt: skip
        rr = e2e["real_run"]
        rcalls, rsecs, rwall = rr["plugin_calls"], rr["plugin_seconds"]["cpu"], rr["plugin_seconds"]["wall"]
        n_dec = max(rcalls.get("Env.decorate_shellcmd", 0), 1)
        v.update(e2e_run_envs=str(rcalls.get("Env.__post_init__", 0)), e2e_run_decorate_n=f"{n_dec:,}",
                 e2e_run_decorate_us=f"{rsecs.get('Env.decorate_shellcmd', 0.0) / n_dec * 1e6:.0f}",
                 e2e_run_decorate_wall_us=f"{rwall.get('Env.decorate_shellcmd', 0.0) / n_dec * 1e6:.0f}",
                 e2e_run_plugin=fmt_s(rsecs["total: import + Env methods"]))  # fmt: skip
        v["e2e_run_jobs"] = f"{rr['jobs']:,}"
        v["e2e_run_plain"] = fmt_s(rr["no --sdm"]["median"])
        for key, short in (
            ("--sdm nixsnake, bwrap runtime", "bwrap"),
            ("--sdm nixsnake, apptainer stand-in", "standin"),
        ):
            if key in rr:
                x = rr[key]
                v[f"e2e_run_{short}"] = fmt_s(x["median"])
                v[f"e2e_run_{short}_ratio"] = f"{x['ratio']:.2f}"
                v[f"e2e_run_{short}_adds"] = f"{x['adds_per_job_ms']:+.1f} ms"
                v[f"e2e_run_{short}_smk_cpu"] = fmt_s(x["cpu_s"]["snakemake process"]["median"])
                v[f"e2e_run_{short}_jobs_cpu"] = fmt_s(x["cpu_s"]["its jobs (getrusage children)"]["median"])
        pc = rr["no --sdm"]["cpu_s"]
        v["e2e_run_plain_smk_cpu"] = fmt_s(pc["snakemake process"]["median"])
        v["e2e_run_plain_jobs_cpu"] = fmt_s(pc["its jobs (getrusage children)"]["median"])
    s = r.get("image_size")
    if s:
        v["size_env"] = s["env"]
        v["size_nar"] = fmt_mib(s["nar_bytes"])
        for k, c in s["by_compression"].items():
            kk = k.split("-")[0]
            v[f"size_{kk}"] = fmt_mib(c["squashfs_bytes"])
            v[f"size_{kk}_ratio"] = f"{c['ratio_to_nar']:.2f}"
            v[f"size_{kk}_time"] = fmt_s(c["pack_time"]["median"])
    return v


class _Lenient(dict):
    def __missing__(self, key: str) -> str:
        return "n/a"


def write_docs(doc: dict, path: Path, *, results_stem: Path) -> None:
    tmpl = string.Template(TEMPLATE.read_text())
    try:
        rel = results_stem.relative_to(path.parent.parent)
    except ValueError:
        rel = results_stem
    values = _Lenient(
        date=doc["date"],
        machine=machine_line(doc),
        command=doc["command"],
        wall=f"{doc['wall_seconds']['total'] / 60:.1f} min",
        results=str(rel),
        results_png=os.path.relpath(results_stem.with_suffix(".png"), path.parent),
        **tables(doc),
        **_fmt_values(doc),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_substitute(tmpl, values))


def _substitute(tmpl: string.Template, values: dict[str, Any]) -> str:
    """Like ``Template.substitute`` but unknown names become "n/a" (a suite not run)."""
    return tmpl.pattern.sub(
        lambda m: str(values[m.group("named") or m.group("braced")]) if (m.group("named") or m.group("braced"))
        else ("$" if m.group("escaped") is not None else m.group(0)),
        tmpl.template,
    )  # fmt: skip
