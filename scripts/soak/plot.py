"""Plots a soak CSV (scripts/soak/soak.sh) and prints the summary numbers.

usage: plot.py soak.csv soak.svg [warm_up_s] [title]

Summary: RSS and anonymous memory at the end of the warm-up (default 300 s) and at the
end, the least-squares slope of each after the warm-up (KiB per minute, and what that
slope would add in a day), threads, and CPU seconds (utime + stime) per 10 minutes.
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def slope_per_min(ts, ys):
    n = len(ts)
    if n < 2:
        return 0.0
    mt = sum(ts) / n
    my = sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return 0.0
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var * 60.0


def main():
    path, svg = sys.argv[1], sys.argv[2]
    warm_up_s = float(sys.argv[3]) if len(sys.argv) > 3 else 300.0
    title = sys.argv[4] if len(sys.argv) > 4 else "csipd run soak"
    with open(path) as f:
        rows = [{k: float(v or 0) for k, v in r.items()} for r in csv.DictReader(f)]
    if len(rows) < 2:
        sys.exit(f"{path}: fewer than two samples")
    t = [r["t_s"] for r in rows]
    minutes = [x / 60 for x in t]
    mib = lambda key: [r[key] / 1024 for r in rows]  # noqa: E731

    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot(minutes, mib("rss_kib"), label="RSS (VmRSS)")
    ax.plot(minutes, mib("anon_kib"), label="anonymous (RssAnon)")
    ax.plot(minutes, mib("file_kib"), label="file-backed (RssFile)")
    ax.plot(minutes, mib("telemetry_dir_kib"), label="telemetry_dir on disk (tmpfs on a router)", linestyle=":")
    ax.axvline(warm_up_s / 60, color="grey", linestyle="--", linewidth=0.8)
    ax.text(warm_up_s / 60, ax.get_ylim()[1] * 0.02, " end of warm-up", color="grey")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center right")
    ax.set_title(f"{title}: memory from /proc/PID/status")
    ax2.plot(minutes, [r["threads"] for r in rows], color="tab:purple", label="threads")
    ax2.set_ylabel("threads")
    ax2.set_ylim(bottom=0)
    ax2.grid(True, alpha=0.3)
    ax3 = ax2.twinx()
    ax3.plot(minutes, [r["cpu_s"] for r in rows], color="tab:red", label="CPU s (utime+stime)")
    ax3.set_ylabel("CPU s")
    ax2.set_xlabel("minutes")
    lines = ax2.get_lines() + ax3.get_lines()
    ax2.legend(lines, [line.get_label() for line in lines], loc="upper left")
    fig.tight_layout()
    fig.savefig(svg)

    warm = [r for r in rows if r["t_s"] >= warm_up_s] or rows[-2:]
    first, last = warm[0], warm[-1]
    wt = [r["t_s"] for r in warm]
    print(f"samples: {len(rows)} over {t[-1]:.0f} s; warm-up {warm_up_s:.0f} s")
    for key, name in [
        ("rss_kib", "RSS"),
        ("anon_kib", "anonymous"),
        ("file_kib", "file-backed"),
        ("telemetry_dir_kib", "telemetry_dir"),
        ("data_dir_kib", "data_dir"),
    ]:
        s = slope_per_min(wt, [r[key] for r in warm])
        print(
            f"{name}: {first[key]:.0f} KiB at {first['t_s']:.0f} s, {last[key]:.0f} KiB at "
            f"{last['t_s']:.0f} s, max {max(r[key] for r in rows):.0f} KiB; slope after "
            f"warm-up {s:+.2f} KiB/min ({s * 1440 / 1024:+.2f} MiB/day if it went on)"
        )
    print(f"VmHWM at the end: {rows[-1]['hwm_kib']:.0f} KiB")
    threads = sorted({int(r["threads"]) for r in rows})
    print(f"threads: {threads[0]}..{threads[-1]} (distinct counts seen: {threads})")
    cpu = last["cpu_s"] - first["cpu_s"]
    span = last["t_s"] - first["t_s"]
    print(
        f"CPU after warm-up: {cpu:.2f} s in {span:.0f} s = {cpu / span * 600:.2f} s per 10 min "
        f"({cpu / span * 100:.2f} % of one core); whole run {rows[-1]['cpu_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
