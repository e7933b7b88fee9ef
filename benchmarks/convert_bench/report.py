"""The report: each target of issue 6 as (figure, measured, target, met, note), and the table printed at the end."""

from __future__ import annotations


def table_rows(r: dict) -> list[tuple[str, float | None, str, bool | None, str]]:
    """(figure, measured, target, passed, note) for each target of issue 6, from the raw numbers `r`."""
    t, cpu, s, reads, rss, codecs = r["medians"], r["cpu_medians"], r["sizes"], r["reads"], r["rss"], r["codecs"]
    mib = 2**20
    # time targets are met only if the wall-clock ratio and the (steadier) CPU-time ratio both meet them
    convert_floor, convert_floor_cpu = t["platezarr"] / t["floor"], cpu["platezarr"] / cpu["floor"]
    base_convert, base_convert_cpu = t["baseline"] / t["platezarr"], cpu["baseline"] / cpu["platezarr"]
    rows = [
        ("convert time / floor time", convert_floor, "<= 1.5", max(convert_floor, convert_floor_cpu) <= 1.5,
         f"CPU time {convert_floor_cpu:.2f}; write stage alone {t['platezarr_write'] / t['floor']:.2f}; "
         f"decode + zstd-3 alone {codecs['zstd3']['bound']:.2f}"),
        ("baseline time / convert time", base_convert, ">= 3", min(base_convert, base_convert_cpu) >= 3,
         f"CPU time {base_convert_cpu:.2f}; baseline decodes with {r['baseline_decoder']}; with the floor's "
         f"decoder (packing alone, one run) {t['baseline_packing'] / t['platezarr']:.2f}"),
        ("convert bytes / baseline bytes", s["platezarr_bytes"] / s["baseline_bytes"], "<= 0.7",
         s["platezarr_bytes"] / s["baseline_bytes"] <= 0.7, "whole stores"),
        ("files per site", s["platezarr_shard_files_per_site"], "<= 0.5", s["platezarr_shard_files_per_site"] <= 0.5,
         f"image shards; whole store {s['platezarr_files_per_site']:.2f} files + {s['platezarr_dirs_per_site']:.2f} "
         f"dirs; baseline {s['baseline_files_per_site']:.1f} files + {s['baseline_dirs_per_site']:.1f} dirs"),
        ("default bytes / PNG bytes", s["platezarr_bytes"] / s["png_bytes"], "<= 1.3",
         s["platezarr_bytes"] / s["png_bytes"] <= 1.3,
         f"zstd-3, whole store; zstd-2 {codecs['zstd2']['bytes_ratio_to_png']:.2f}, zstd-1 "
         f"{codecs['zstd1']['bytes_ratio_to_png']:.2f}"),
        ("compact profile bytes / PNG bytes", s["compact_bytes"] / s["png_bytes"], "<= 0.9",
         s["compact_bytes"] / s["png_bytes"] <= 0.9,
         f"JPEG-LS, whole store; convert time / floor {t['compact'] / t['floor']:.2f} (CPU "
         f"{cpu['compact'] / cpu['floor']:.2f}); HTJ2K lossless alone {codecs['htj2k']['bytes_ratio_to_png']:.2f}"),
        ("random local site read, PNG / SiteDataset", reads["png"] / reads["platezarr_sites"], ">= 5",
         reads["png"] / reads["platezarr_sites"] >= 5,
         f"PNG {reads['png'] * 1e3:.1f} ms, SiteDataset {reads['platezarr_sites'] * 1e3:.1f} ms, "
         f"baseline store {reads['baseline'] * 1e3:.1f} ms, compact store {reads['compact_sites'] * 1e3:.1f} ms"),
        ("random local site read, PNG / plain zarr", reads["png"] / reads["platezarr_zarr"], ">= 5",
         reads["png"] / reads["platezarr_zarr"] >= 5, f"zarr-python `images[well, site]` {reads['platezarr_zarr'] * 1e3:.1f} ms"),
    ]
    if "zarr_path" in t:
        rows.insert(1, ("convert time / floor time, zarr-python write path", t["zarr_path"] / t["floor"], "(before)", None,
                        f"CPU time {cpu['zarr_path'] / cpu['floor']:.2f}; shard writer off"))
    if "big_bytes" in rss:
        ratio = rss["big_bytes"] / rss["platezarr_bytes"]
        rows.append((f"peak RSS, {rss['big_sites'] // s['sites']}x sites / 1x", ratio, "<= 1.2 and <= 1 GB",
                     ratio <= 1.2 and rss["big_bytes"] <= 2**30,
                     f"{rss['platezarr_bytes'] / mib:.0f} MiB at {s['sites']} sites, "
                     f"{rss['big_bytes'] / mib:.0f} MiB at {rss['big_sites']}"))
    return rows


def format_table(r: dict) -> str:
    """The printed report: the run's headline lines, the targets table and the pixel check."""
    t, n, m = r["medians"], r["sizes"]["sites"], r["machine"]
    g = r["gil"]
    lines = [
        f"platezarr benchmark: {n} sites ({n * r['channels']} PNGs, {r['sizes']['png_bytes'] / 2**20:.0f} MiB), "
        f"{r['args']['workers']} workers on {m['cpus']} CPUs ({m['cpu_model']}), medians of {r['args']['repeats']}",
        f"floor decodes with {r['decoder']}; platezarr {n / t['platezarr']:.0f} sites/s, write stage "
        f"{t['platezarr_write']:.2f} s of {t['platezarr']:.2f} s",
        "median wall s / CPU s (cores busy): " + ", ".join(
            f"{name} {t[name]:.2f} / {r['cpu_medians'][name]:.2f} ({r['cpu_medians'][name] / t[name]:.2f})"
            for name in r["cpu_medians"]),
        f"GIL probe, speed-up over 1 thread: decode+zstd3 threads {g['decode+zstd3 serial'] / g['decode+zstd3 threads']:.2f}x, "
        f"processes {g['decode+zstd3 serial'] / g['decode+zstd3 processes']:.2f}x; decode threads "
        f"{g['decode serial'] / g['decode threads']:.2f}x, processes {g['decode serial'] / g['decode processes']:.2f}x",
        "",
        "| figure | measured | target | met | note |",
        "|---|---:|---|---|---|",
    ]
    for figure, value, target, passed, note in r["table"]:
        shown = "—" if value is None else f"{value:.2f}"
        verdict = ("—" if target.startswith("(") else "not done") if passed is None else ("yes" if passed else "**no**")
        lines.append(f"| {figure} | {shown} | {target} | {verdict} | {note} |")
    v = r["verify"]
    lines.append(f"\npixel-exact check of {v['sites']} random sites (platezarr via zarr and xarray, compact, baseline): "
                 + ("OK" if v["ok"] else "MISMATCH " + "; ".join(v["mismatches"])))
    return "\n".join(lines)
