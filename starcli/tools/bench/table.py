"""The bench's printed table: one aligned row per cell."""

from typing import Callable

# --- output ---------------------------------------------------------------------------------------
def fmt_value(value, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec or ".3g")
    return str(value)


TABLE_COLUMNS: list[tuple[str, Callable[[dict], str]]] = [
    ("mode", lambda c: c["mode"]),
    ("length", lambda c: str(c["length"])),
    ("block", lambda c: fmt_value(c.get("block"))),
    ("anchor", lambda c: fmt_value(c.get("anchor"))),
    ("relay", lambda c: fmt_value(c.get("relay"))),
    ("decode", lambda c: fmt_value(c.get("decode"))),
    ("ranks", lambda c: str(c["ranks"])),
    ("ttft_s", lambda c: fmt_value(c.get("ttft_s"), ".4g")),
    ("phase1_s", lambda c: fmt_value(c.get("phase1_s"), ".4g")),
    ("phase1_tok_s", lambda c: fmt_value(c.get("phase1_tok_s"), ".0f")),
    ("decode_ms_tok", lambda c: fmt_value(c.get("decode_ms_tok"), ".2f")),
    ("decode_tok_s", lambda c: fmt_value(c.get("decode_tok_s"), ".0f")),
    ("prefill_ms", lambda c: fmt_value(1e3 * c["prefill_s"] if c.get("prefill_s") else None, ".1f")),
    ("capture_s", lambda c: fmt_value(c.get("capture_s"), ".3f")),
    ("peak_mem_GiB", lambda c: fmt_value(c.get("peak_mem_gib"), ".2f")),
    ("TFLOP/s", lambda c: fmt_value(c.get("tflops"), ".3g")),
    ("%peak", lambda c: fmt_value(c.get("pct_peak"), ".1f")),
    ("x_dense", lambda c: fmt_value(c.get("speedup_vs_dense"), ".2f")),
    ("x_hf", lambda c: fmt_value(c.get("speedup_vs_hf_dense"), ".2f")),
    ("x_ring", lambda c: fmt_value(c.get("speedup_vs_ring"), ".2f")),
    ("note", lambda c: cell_note(c)),
]


def cell_note(cell: dict) -> str:
    if cell["status"] == "OOM":
        need = cell.get("estimated_need_gib")
        return "OOM" + (f" (needs ~{need:.1f} GiB)" if need else "")
    if cell["status"] in ("skipped", "too large"):
        return f"not run: {cell['note']}"
    return ""


def format_table(cells: list[dict]) -> str:
    """Plain aligned columns; x_* columns are ttft speed-ups over that reference (>1 = faster)."""
    rows = [[name for name, _ in TABLE_COLUMNS]] + [[get(c) for _, get in TABLE_COLUMNS] for c in cells]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(v.rjust(w) if i not in (0, len(widths) - 1) else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    return "\n".join(lines)

