"""PNG plots for the dataset card: sample lengths per split and per domain, pass rates per problem.

Drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display needed) and written
through the run directory's filesystem, so they land next to the shards on any storage.
"""

from __future__ import annotations

import io
import posixpath
from collections import defaultdict

import pyarrow as pa

from factory.storage import RunDir

PLOTS_DIR = "plots"


def _figure(ncols: int, width: float = 5.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, 3.6), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _save(run: RunDir, stage: str, name: str, fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})  # no version stamp: same input, same bytes
    run.makedirs(stage, PLOTS_DIR)
    with run.fs.open(run.path(stage, PLOTS_DIR, name), "wb") as f:
        f.write(buf.getvalue())
    return posixpath.join(PLOTS_DIR, name)


def _histograms(ax, groups: dict[str, list], bins, xlabel: str, title: str) -> None:
    for label, values in sorted(groups.items()):
        values = [v for v in values if v is not None]
        if values:
            ax.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{label} ({len(values)})")
    ax.set(title=title, xlabel=xlabel, ylabel="rows")
    if groups:
        ax.legend(fontsize="small")


def write_plots(run: RunDir, stage: str, lengths: pa.Table, pass_rates: pa.Array) -> list[dict]:
    """Write the card's plots under <stage>/plots/; returns [{title, path}] with paths relative to <stage>.

    `lengths` holds split, domain, num_tokens and chars (of the assistant turn) of each SFT row."""
    import numpy as np

    plots = []
    # Token counts when the traces carried them (traces brought with --input may not).
    tokens = lengths.column("num_tokens").null_count < lengths.num_rows
    unit = "tokens (prompt + completion)" if tokens else "characters of the assistant turn"
    sizes = lengths.column("num_tokens" if tokens else "chars").to_pylist()
    per_split, per_domain = defaultdict(list), defaultdict(list)
    for split, domain, n in zip(lengths.column("split").to_pylist(), lengths.column("domain").to_pylist(), sizes):
        per_split[split].append(n)
        per_domain[domain or "unknown"].append(n)
    everything = [n for values in per_split.values() for n in values if n is not None]
    if everything:
        bins = np.histogram_bin_edges(everything, bins=30)
        fig, (left, right) = _figure(2)
        _histograms(left, dict(per_split), bins, unit, "Sample length per split")
        _histograms(right, dict(per_domain), bins, unit, "Sample length per domain")
        plots.append({"title": f"Sample length in {unit}", "path": _save(run, stage, "sample_lengths.png", fig)})
    if len(pass_rates):
        fig, (ax,) = _figure(1, width=6.0)
        ax.hist(pass_rates.to_numpy(zero_copy_only=False), bins=np.linspace(0, 1, 11), edgecolor="white")
        ax.set(title="Pass rate per problem", ylabel="problems",
               xlabel="share of the problem's samples the verifiers accepted")
        plots.append({"title": "Pass rate per problem", "path": _save(run, stage, "pass_rates.png", fig)})
    return plots
