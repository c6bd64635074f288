"""Sweep the Insights grouping threshold on labelled questions of the tuning businesses.

The population Insights groups is the questions the agent declined, asked in callers' words.
The labelled set: every question of eval/businesses dental and plumber (the tuning split; the
report businesses are never used), labelled by the fact it asks for (same ``expect``: same
topic; each decline question its own topic), plus, for each decline question, two caller-style
rewordings written for this sweep (same topic). Pairwise precision/recall/F1 of "grouped
together" against "same topic", per business, summed. Usage:

    PYTHONPATH=. python scripts/insights_threshold.py
"""

from __future__ import annotations

import itertools

import numpy as np

from appliance.config import load_settings
from appliance.console.insights import cluster, normalise
from appliance.evaluation.dataset import DEFAULT_DIR, load_business
from appliance.kb.embedding import embedder_from_settings

REWORDED = {
    "dental": {
        "do you do braces": ["can I get braces at your practice", "do you offer orthodontics"],
        "do you sell electric toothbrushes": ["can I buy an electric toothbrush from you",
                                              "um do you have toothbrushes for sale"],
        "is there wheelchair access": ["can I get in with a wheelchair",
                                       "is the building accessible for wheelchair users"],
        "do you do botox": ["do you offer botox injections", "can I get botox there"],
        "what's the weather going to be tomorrow": ["is it going to rain tomorrow",
                                                    "what's the forecast for tomorrow"],
        "can you recommend a good italian restaurant": ["where's a good place for pasta nearby",
                                                        "any italian restaurants you'd suggest"],
        "who won the game last night": ["did the home team win yesterday",
                                        "what was the score of last night's game"],
    },
    "plumber": {
        "do you install solar panels": ["can you put solar panels on my roof",
                                        "do you do solar installation"],
        "can you fix my dishwasher": ["my dishwasher is broken can you repair it",
                                      "do you repair dishwashers"],
        "do you sell bathroom tiles": ["can I buy tiles for my bathroom from you",
                                       "do you have bathroom tiles in stock"],
        "are you hiring apprentices": ["do you take on apprentices",
                                       "are there any apprenticeship jobs going"],
        "what's the capital of france": ["what city is the capital of france",
                                         "tell me the capital of france"],
        "can you book me a flight to spain": ["I need a flight to madrid",
                                              "can you get me plane tickets to spain"],
        "tell me a joke": ["say something funny", "do you know any good jokes"],
    },
}


def labelled(key: str) -> list[tuple[str, str]]:
    business = load_business(DEFAULT_DIR / key)
    out = []
    for q in business.questions:
        topic = "|".join(sorted(q.expect)) or q.text
        out.append((q.text, topic))
        out += [(text, topic) for text in REWORDED[key].get(q.text, [])]
    return out


def pairs(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {p for g in groups for p in itertools.combinations(sorted(g), 2)}


def main() -> None:
    embed = embedder_from_settings(load_settings(environ={}))
    data = {key: labelled(key) for key in REWORDED}
    vectors = {key: np.asarray(embed([normalise(t) for t, _ in rows]), dtype=np.float32)
               for key, rows in data.items()}
    print(f"{sum(len(r) for r in data.values())} questions")
    print("threshold  precision  recall  F1")
    for threshold in np.arange(0.40, 0.86, 0.05):
        tp = fp = fn = 0
        for key, rows in data.items():
            truth = {}
            for i, (_, topic) in enumerate(rows):
                truth.setdefault(topic, []).append(i)
            got, want = pairs(cluster(vectors[key], float(threshold))), pairs(list(truth.values()))
            tp, fp, fn = tp + len(got & want), fp + len(got - want), fn + len(want - got)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        print(f"{threshold:9.2f}  {precision:9.2f}  {recall:6.2f}  {f1:.2f}")


if __name__ == "__main__":
    main()
