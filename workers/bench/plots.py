"""PNG figures of a sweep: throughput vs batch size per sequence length, and latency distributions.

matplotlib is imported here only, with the Agg backend (no display on servers).
"""

from pathlib import Path

from workers.bench.report import title
from workers.bench.stats import percentile_key

MODE_STYLE = {"throughput": "-", "latency": "--"}
MODE_LABEL = {"throughput": "max throughput", "latency": "min latency"}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_numbers():
    """Tick labels like 3 and 250 rather than 3x10^0 on a log axis."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:g}")


def plot_paths(out_json: Path) -> dict[str, Path]:
    """bench-results/perf-cpu-bf16.json -> perf-cpu-bf16-throughput.png, perf-cpu-bf16-latency.png."""
    stem = out_json.with_suffix("")
    return {kind: stem.with_name(f"{stem.name}-{kind}.png") for kind in ("throughput", "latency")}


def draw_plots(report: dict, out_json: Path) -> list[Path]:
    paths = plot_paths(out_json)
    plot_throughput(report, paths["throughput"])
    plot_latency(report, paths["latency"])
    return list(paths.values())


def plot_throughput(report: dict, path: Path) -> None:
    """Two panels (sequences/s, tokens/s) against batch size; a line per sequence length and mode."""
    plt = pyplot()
    results = report["results"]
    seqlens = sorted({r["seqlen"] for r in results})
    batches = sorted({r["batch_size"] for r in results})
    colours = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for ax, key, label in ((axes[0], "sequences_per_s", "sequences / s"), (axes[1], "tokens_per_s", "tokens / s")):
        for i, seqlen in enumerate(seqlens):
            colour = colours(i / max(1, len(seqlens) - 1) * 0.85)
            for mode, style in MODE_STYLE.items():
                points = sorted((r["batch_size"], r[key]) for r in results
                                if r["seqlen"] == seqlen and r["mode"] == mode)
                if points:
                    ax.plot(*zip(*points), style, marker="o", color=colour,
                            label=f"{seqlen} tokens, {MODE_LABEL[mode]}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("batch size (sequences per request)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title(report), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(report: dict, path: Path) -> None:
    """One panel per mode, sharing the latency axis: a box per (batch, seqlen), whiskers at min and
    max, the highest requested percentile marked."""
    plt = pyplot()
    modes = [m for m in MODE_STYLE if any(r["mode"] == m for r in report["results"])]
    top = percentile_key(max(report["settings"]["percentiles"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.8), constrained_layout=True, squeeze=False,
                             sharey=True)
    for ax, mode in zip(axes[0], modes):
        results = sorted((r for r in report["results"] if r["mode"] == mode),
                         key=lambda r: (r["seqlen"], r["batch_size"]))
        positions = range(1, len(results) + 1)
        ax.boxplot([r["latencies_ms"] for r in results], positions=positions, whis=(0, 100), widths=0.6)
        ax.plot(positions, [r["latency_ms"][top] for r in results], "rv", markersize=5, label=top)
        ax.set_xticks(list(positions), [f"b{r['batch_size']}\n{r['seqlen']}" for r in results], fontsize=8)
        ax.set_xlabel("batch size / sequence length")
        ax.set_title(f"{MODE_LABEL[mode]} ({results[0]['in_flight_limit']} in flight)", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("request latency (ms)")
    set_latency_scale(axes[0][0], [x for r in report["results"] for x in r["latencies_ms"]])
    fig.suptitle(title(report), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def set_latency_scale(ax, values_ms: list[float]) -> None:
    """Log scale with ticks at 1, 2, 3, 5 x 10^k when latencies span more than a decade (a sweep
    from batch 1 x 128 to 64 x 512 does), so short and long requests both read; else linear."""
    from matplotlib.ticker import LogLocator, NullFormatter

    if min(values_ms) <= 0 or max(values_ms) / min(values_ms) <= 10:
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(plain_numbers())
    ax.yaxis.set_minor_formatter(NullFormatter())
