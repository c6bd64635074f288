"""``appliance eval``: answer quality per business, on documents the prompts were not tuned on."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from appliance.config import Settings
from appliance.evaluation.dataset import DEFAULT_DIR, DatasetError, load_businesses
from appliance.evaluation.scoring import Verdict
from appliance.wiring import load_llm

COLUMNS = [(v.value, v.value.replace("_", " ")) for v in Verdict]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval", help="score answers on the evaluation businesses (right / invented facts)",
        description="Ask every evaluation business's questions through the same turn code as "
        "`appliance ask` (a fresh knowledge base per business) and print, per business: right "
        "fact, wrong fact, invented fact, correct decline, wrong decline. Quote the `report` "
        "businesses; the `tuning` ones are what thresholds were chosen on.")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"folder of businesses (default {DEFAULT_DIR})")
    parser.add_argument("--business", action="append", metavar="NAME",
                        help="only this business folder (repeatable)")
    parser.add_argument("--split", choices=("tuning", "report"), help="only this split")
    parser.add_argument("--json", metavar="FILE", help="write every answer and verdict as JSON")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print each answer that was not right")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.evaluation.runner import evaluate_all  # it uses ask's turn: import it late

    try:
        businesses = load_businesses(args.dir, args.business, args.split)
    except (DatasetError, OSError) as err:
        raise SystemExit(f"appliance eval: {err}") from err
    if not businesses:
        raise SystemExit(f"appliance eval: no businesses found in {args.dir}")
    results = evaluate_all(settings, load_llm(settings, instances=1), businesses)
    print(f"answer style: {settings.answer_style}; models: {settings.models}")
    header = f"{'business':<12}{'split':<8}" + "".join(f"{t:>17}" for _, t in COLUMNS)
    print(header + f"{'right rate':>12}{'replaced':>10}")
    for result in results:
        s = result.summary()
        rate = f"{s['right_rate']:.0%}" if s["right_rate"] is not None else "-"
        print(f"{s['business']:<12}{s['split']:<8}"
              + "".join(f"{s[key]:>17}" for key, _ in COLUMNS)
              + f"{rate:>12}{s['guard_replacements']:>10}")
        if args.verbose:
            for a in result.answers:
                if a["verdict"] not in (Verdict.RIGHT.value, Verdict.DECLINED_RIGHT.value):
                    print(f"    [{a['verdict']}] {a['question']!r} → {a['answer']!r} "
                          f"(expected {a['expect']}) {a['relevance']}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"settings": {"answer_style": settings.answer_style, "models": settings.models},
             "businesses": [{**r.summary(), "answers": r.answers} for r in results]}, indent=2))
    invented = sum(r.counts[Verdict.INVENTED.value] for r in results)
    return 1 if invented else 0
