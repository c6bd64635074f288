"""The benchmark's result three ways: a table for people, JSON for machines, a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.bench.stats import PROMPT_LABELS, PROMPT_ROWS, STAGE_LABELS, STAGES

# Stacked in the plot, in pipeline order; together they make up what the caller waits.
STACK = ("endpoint_s", "stt_s", "retrieval_s", "other_s", "first_sentence_s", "tts_first_audio_s",
         "transport_s")
ROWS = (*STAGES, "other_s", "server_v2v_s", "transport_s")
TARGETS = ((1.0, "target p50, 1 call"), (1.5, "target p95, 4 calls"))
COL = 20


def write_json(result: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


def _s(summary: dict[str, Any] | None, keys: tuple[str, ...] = ("p50", "p95", "max"),
       fmt: str = "{:.2f}") -> str:
    if not summary or not summary.get("n"):
        return "-"
    return "/".join(fmt.format(summary[k]) for k in keys)


def _lag(value: dict[str, Any] | None) -> str:
    if not value or value.get("p99") is None:
        return "n/a"
    return f"{value['p99']:.1f}"


def _num(value: Any, fmt: str = "{:.0f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _turns(opts: dict[str, Any]) -> str:
    if opts.get("duration_s"):
        return f"turns for {opts['duration_s']:.0f} s per call"
    return f"{opts['turns']} turn(s) per call"


def header(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    gpu = ", ".join(m["gpu"]) if m.get("gpu") else "none"
    server = result.get("server", {})
    models = ", ".join(f"{x['slot']}={x['name']} ({x.get('device', '?')})"
                       for x in server.get("models", [])) or "unknown"
    settings = " ".join(f"{k}={v}" for k, v in result.get("settings", {}).items() if v != "")
    opts = result["options"]
    warm = "one warm-up call first (not counted)" if opts.get("warmup") else "no warm-up"
    return [
        f"machine:  {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, GPU: {gpu}",
        f"          {m['os']}, Python {m['python']}, load average at start {m.get('loadavg')}",
        f"server:   {server.get('url')} ({'spawned' if server.get('spawned') else 'external'}"
        f", pid {server.get('pid') or 'n/a'})",
        f"models:   {models}",
        f"settings: {settings}",
        f"run:      {_turns(opts)}, callers {opts['stagger_s']:.1f} s apart, "
        f"real-time; {warm}",
    ]


def table(result: dict[str, Any]) -> str:
    """Rows are measurements, columns concurrency levels; seconds as p50/p95/max."""
    levels = result.get("levels", [])
    lines = header(result) + [""]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"{label:<34}" + "".join(f"{c:>{COL}}" for c in cells))

    row("", [f"{lv['calls']} call{'s' * (lv['calls'] > 1)}"
             + (" +adv" if "adversary" in lv else "") + (" +talk" if "talker" in lv else "")
             + (f" +{lv['console_watchers']['watchers']}w" if "console_watchers" in lv else "")
             for lv in levels])
    row("calls completed / failed", [f"{lv['completed']} / {lv['failed']}" for lv in levels])
    row("turns answered", [f"{lv['turns_answered']} / {lv['turns_total']}" for lv in levels])
    row("replies replaced (ungrounded)", [str(lv.get("replies_replaced", 0)) for lv in levels])
    row("answers worked out at the pause", [f"{lv.get('answered_early', 0)} / "
                                            f"{lv['turns_total']}" for lv in levels])
    lines.append("seconds, p50/p95/max:")
    row("voice-to-voice, caller heard", [_s(lv["v2v_heard_s"]) for lv in levels])
    row("voice-to-voice, first audio recv", [_s(lv["v2v_received_s"]) for lv in levels])
    for key in ROWS:
        row(f"  {STAGE_LABELS[key]}", [_s(lv["stages"].get(key)) for lv in levels])
    if any("prompt" in lv for lv in levels):
        lines.append("LLM first token split, generated answers, p50/p95/max:")
        for key in PROMPT_ROWS:
            fmt = "{:.2f}" if key == "prompt_eval_s" else "{:.0f}"
            row(f"  {PROMPT_LABELS[key]}", [_s(lv.get("prompt", {}).get(key), fmt=fmt)
                                            for lv in levels])
    if any(lv.get("barge_in_s", {}).get("n") for lv in levels):
        row("barge-in: talk over → reply stops", [_s(lv.get("barge_in_s")) for lv in levels])
    lines.append("event-loop lag p99, ms:")
    row("  server loop (/api/metrics)", [_lag(lv["loop_lag_ms"]["server"]) for lv in levels])
    row("  /healthz round trip", [_lag(lv["loop_lag_ms"]["healthz_rtt"]) for lv in levels])
    row("  bench (callers') loop", [_lag(lv["loop_lag_ms"]["bench"]) for lv in levels])
    lines.append("resources:")
    row("  server CPU, % of one core", [_num(lv["server"]["cpu_pct"]) for lv in levels])
    row("  server RSS start/peak/end, MB",
        [f"{_num(lv['server'].get('rss_start_mb'))}/{_num(lv['server']['rss_peak_mb'])}/"
         f"{_num(lv['server'].get('rss_end_mb'))}" for lv in levels])
    row("  GPU memory peak, MB", [_num(lv["gpu_memory_peak_mb"]) for lv in levels])
    row("  callers' CPU, % of one core", [_num(lv["bench_cpu_pct"]) for lv in levels])
    row("  machine CPU busy, % of all", [_num(lv["machine_cpu_busy_pct"]) for lv in levels])
    row("  load average at end (1 min)",
        [_num((lv.get("loadavg_end") or [None])[0], "{:.2f}") for lv in levels])
    for lv in levels:
        for error in lv["errors"][:8]:
            lines.append(f"! {lv['calls']} call(s): {error}")
    for lv in levels:
        if (adv := lv.get("adversary")) is not None:
            lines += adversary_lines(lv["calls"], adv)
        if (watchers := lv.get("console_watchers")) is not None:
            lines += watcher_lines(lv["calls"], watchers)
        if (talker := lv.get("talker")) is not None:
            lines.append(f"endless talker beside {lv['calls']} call(s): {talker['ending']}")
        if (vs := lv.get("vs_clean")) is not None:
            lines.append(versus_line(lv["calls"], vs))
    warm = result.get("warmup")
    if warm:
        lines.append(f"warm-up call: voice-to-voice {_s(warm['v2v_heard_s'], ('p50',))} s, "
                     f"{'ok' if warm['completed'] else 'FAILED: ' + '; '.join(warm['errors'])}")
    return "\n".join(lines)


def adversary_lines(calls: int, adv: dict[str, Any]) -> list[str]:
    """What the misbehaving client tried beside ``calls`` good calls, and how it was refused."""
    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "none"

    return [f"adversary beside {calls} call(s): tried {counts(adv['tried'])}",
            f"  its sockets ended: {counts(adv['endings'])}; calls started without a "
            f"webhook: {adv.get('accepted_without_webhook', 'n/a')}",
            f"  server refused sockets: {counts(adv['refused_sockets'])}",
            f"  after it left: {adv['slots_used_after']} slot(s) used, "
            f"RSS {_num(adv['rss_after_mb'])} MB"]


def watcher_lines(calls: int, w: dict[str, Any]) -> list[str]:
    """The same level without and with Live-page viewers: the issue's bar is 10 %."""
    vs = w.get("versus_without", {})

    def pair(key: str, ratio: str, fmt: str) -> str:
        before, after = vs.get(key) or [None, None]
        times = f"×{vs[ratio]:.2f}" if vs.get(ratio) is not None else "ratio n/a"
        return f"{_num(before, fmt)} → {_num(after, fmt)} ({times})"

    events = sum(w["events"].values())
    return [f"{w['watchers']} console viewer(s) beside {calls} call(s), without → with:",
            f"  server loop lag p99, ms      {pair('loop_lag_p99_ms', 'loop_lag_ratio', '{:.1f}')}",
            f"  voice-to-voice heard p95, s  {pair('v2v_heard_p95_s', 'v2v_ratio', '{:.2f}')}",
            f"  they got {events} live event(s), loaded {w['page_loads']} page(s)"
            + (f"; errors: {w['errors']}" if w["errors"] else "")]


def versus_line(calls: int, vs: dict[str, float | None]) -> str:
    """The good calls' latencies beside the attacker or talker, as multiples of the clean run's."""
    def pair(name: str) -> str:
        return "/".join(_num(vs.get(f"{name}_{stat}"), "{:.2f}") for stat in ("p50", "p95"))

    return (f"  {calls} good call(s) vs the clean run, p50/p95 ×: "
            f"voice-to-voice {pair('v2v_heard')}, STT {pair('stt')}, endpoint {pair('endpoint')}"
            f"; server RSS at the end {_num(vs.get('rss_end'), '{:.2f}')}")


def plot(result: dict[str, Any], path: str | Path) -> None:
    """Latency vs concurrency: median stages stacked, caller-heard p50/p95 marked, targets drawn.

    Needs matplotlib (imported here only, so the rest of the benchmark runs without it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result.get("levels", [])
    xs = list(range(len(levels)))
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    bottom = [0.0] * len(levels)
    for key in STACK:
        heights = [(lv["stages"].get(key) or {}).get("p50") or 0.0 for lv in levels]
        ax.bar(xs, heights, 0.55, bottom=bottom, label=f"{STAGE_LABELS[key]} (p50)")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for stat, marker in (("p50", "o"), ("p95", "^")):
        ys = [lv["v2v_heard_s"].get(stat) for lv in levels]
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=marker, color="black", linestyle="--",
                    label=f"voice-to-voice heard {stat}")
    for y, label in TARGETS:
        ax.axhline(y, color="grey", linewidth=0.8, linestyle=":")
        ax.text(0.99, y, label, va="bottom", ha="right", fontsize=7, color="grey",
                transform=ax.get_yaxis_transform())
    ax.set_xticks(xs, [str(lv["calls"]) for lv in levels])
    ax.set_xlim(-0.7, len(levels) - 0.3)
    ax.set_xlabel("concurrent calls")
    ax.set_ylabel("seconds")
    m = result["machine"]
    ax.set_title(f"Voice-to-voice latency by stage — {m['cores']} cores, "
                 f"{'GPU' if m.get('gpu') else 'CPU only'}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cluster_table(result: dict[str, Any]) -> str:
    """``--cluster``: one row per setup and level, then the hop alone (``bench/cluster.py``)."""
    cluster, one_box = result["setups"]["cluster"], result["setups"]["one_box"]
    opts = result["options"]
    lines = header(cluster)[:2] + [
        f"run:      {opts['turns']} turn(s) per call, the same calls on each setup, one after "
        f"the other; answers generative (the LLM on every answer's path)",
        f"cluster:  {len(cluster['boxes'])} boxes x {opts['capacity']} call slots, every call "
        f"rings {cluster['boxes'][0]['box']}'s webhook; one model server "
        f"({cluster['model_server']['model']}, {cluster['model_server']['threads']} thread(s)), "
        f"Chroma server, PostgreSQL, Redis",
        "", f"{'setup':<22}{'calls':>6}{'completed':>11}{'turns answered':>16}"
        f"{'v2v p50/p95 s':>16}{'LLM 1st tok p50/p95 s':>24}  boxes used"]
    setups = ((f"{len(cluster['boxes'])} boxes, 1 LLM server", cluster),
              ("1 box, in-process", one_box))
    for name, setup in setups:
        for lv in setup.get("levels", []):
            boxes = ", ".join(f"{k} {v}" for k, v in lv.get("boxes", {}).items()) or "-"
            turns = f"{lv['turns_answered']} / {lv['turns_total']}"
            lines.append(
                f"{name:<22}{lv['calls']:>6}{lv['completed']:>11}{turns:>16}"
                f"{_s(lv['v2v_heard_s'], ('p50', 'p95')):>16}"
                f"{_s(lv['stages'].get('llm_ttft_s'), ('p50', 'p95')):>24}  {boxes}")
    lines.append(f"model server: {cluster['model_server']['chat_requests']} chat request(s) "
                 f"served (warm-ups included); boxes' fall-back warnings: "
                 f"{cluster['llm_fallbacks']}")
    hop = result.get("llm_hop")
    if hop:
        lines.append(
            f"LLM hop alone, first token (n={hop['hop']['n']} each, alternating): in-process "
            f"{hop['in-process']['p50_ms']:.0f} / {hop['in-process']['p95_ms']:.0f} ms, server "
            f"{hop['server']['p50_ms']:.0f} / {hop['server']['p95_ms']:.0f} ms, hop "
            f"{hop['hop']['p50_ms']:+.0f} / {hop['hop']['p95_ms']:+.0f} ms (p50 / p95)")
    for name, setup in setups:
        for lv in setup.get("levels", []):
            for error in lv["errors"][:8]:
                lines.append(f"! {name}, {lv['calls']} call(s): {error}")
    return "\n".join(lines)
