"""`fleet profiles`: the device profiles as a table, and every figure with its source."""

from __future__ import annotations

from collections.abc import Mapping

from fleet.world.profiles import FIGURES, DeviceProfile

TABLE_COLUMNS = ("profile", "peak GF/s", "eff", "train GF/s", "mem MiB", "down Mb/s", "up Mb/s", "down s", "up s",
                 "active W", "radio W", "idle W", "availability", "fail p", "jitter", "tail")


def _num(value: float) -> str:
    """Whole numbers as they are (14400 s, not 1.44e+04), others to four significant digits."""
    if float(value).is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4g}"


def availability_text(p: DeviceProfile) -> str:
    """The availability process in a few characters: always, bernoulli 0.99, onoff 7200/14400 s."""
    if p.availability_model == "always":
        return "always"
    if p.availability_model == "bernoulli":
        return f"bernoulli {_num(p.availability)}"
    return f"onoff {_num(p.mean_on_s)}/{_num(p.mean_off_s)} s"


def radio_text(p: DeviceProfile) -> str:
    """Transfer power: one figure, or receiving/sending at the full rates where it depends on the rate."""
    if p.download_w == p.radio_w == p.upload_w:
        return _num(p.radio_w)
    return f"{_num(p.download_w)}/{_num(p.upload_w)}"


def profile_row(p: DeviceProfile) -> tuple[str, ...]:
    """One profile's key figures, as the columns of TABLE_COLUMNS."""
    tail = f"{_num(p.tail_s)} s {_num(p.tail_w)} W" if p.tail_s > 0 else "-"
    return (p.name, _num(p.peak_gflops), _num(p.efficiency), _num(p.train_flops_per_s / 1e9), _num(p.memory_mb),
            _num(p.downlink_mbps), _num(p.uplink_mbps), _num(p.downlink_latency_s), _num(p.uplink_latency_s),
            _num(p.active_w), radio_text(p), _num(p.idle_w), availability_text(p), _num(p.failure_prob),
            _num(p.speed_jitter), tail)


def format_profile_table(profiles: Mapping[str, DeviceProfile]) -> str:
    """A plain-text table of the profiles' key figures, one row each, columns aligned."""
    rows = [TABLE_COLUMNS, *(profile_row(p) for p in profiles.values())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) if i in (0, 12) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.append("GF/s: GFLOP/s (train = peak x eff); Mb/s: Mbit/s; down/up s: fixed seconds per transfer; "
                 "radio W: transferring (receiving/sending at the full rates where power grows with throughput); "
                 "availability: bernoulli p per round or onoff mean on/off s; tail: the radio's power-on after "
                 "each transfer; fleet profiles --sources: where each figure comes from")
    return "\n".join(lines)


def format_profile_sources(profiles: Mapping[str, DeviceProfile], sources: Mapping[str, Mapping[str, str]]) -> str:
    """Per profile, each figure with its value and its source (or 'no source given')."""
    width = max(len(f) for f in FIGURES)
    blocks = []
    for name, p in profiles.items():
        lines = [f"{name}:"]
        for f in FIGURES:
            value = getattr(p, f)
            shown = value if isinstance(value, str) else _num(value)
            lines.append(f"  {f:<{width}}  {shown:>9}  {sources.get(name, {}).get(f, 'no source given')}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


