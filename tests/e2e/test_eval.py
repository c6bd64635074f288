"""Answer quality on the evaluation businesses, through the real embeddings and default model.

The same code as ``appliance eval`` and ``appliance ask``: a fresh knowledge base per business,
hybrid retrieval, the relevance decision, fact-line selection, the grounding guard. The floors
sit a little below what was measured (README, "Evaluation"), so a change that makes answers
worse fails here; invented facts have no slack at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from appliance.config import Settings, load_settings
from appliance.engines.base import Llm
from appliance.evaluation.dataset import load_businesses
from appliance.evaluation.runner import BusinessResult, evaluate_all
from appliance.evaluation.scoring import Verdict
from appliance.wiring import load_llm

pytestmark = pytest.mark.slow

# Right facts / fact questions, extractive (the default): measured 96 %, 89 % (tuning, with the
# ten questions per business added in issue 16) and 71 %, 76 %, 86 % (report: law, restaurant,
# vet; never tuned on).
RIGHT_FLOOR = {"dental": 0.9, "plumber": 0.85, "law": 0.65, "restaurant": 0.7, "vet": 0.8}
# The tiny model writing its own sentences (answer_style = "generative"), tuning set only:
# measured 67 % on the dental practice (62 % before issue 16's questions and changes).
GENERATIVE_RIGHT_FLOOR = 0.55


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(environ={}, data_dir=str(tmp_path_factory.mktemp("eval")))


@pytest.fixture(scope="module")
def llm(settings: Settings) -> Iterator[Llm]:
    yield load_llm(settings, instances=1)


@pytest.fixture(scope="module")
def results(settings: Settings, llm: Llm) -> dict[str, BusinessResult]:
    return {r.business.key: r for r in evaluate_all(settings, llm, load_businesses())}


def _report(result: BusinessResult) -> str:
    return "\n".join(f"  [{a['verdict']}] {a['question']!r} -> {a['answer']!r} {a['invented']}"
                     for a in result.answers if a["verdict"] not in
                     (Verdict.RIGHT.value, Verdict.DECLINED_RIGHT.value))


def test_every_split_has_four_trades_and_enough_questions() -> None:
    businesses = load_businesses()
    assert {b.split for b in businesses} == {"tuning", "report"}
    assert len({b.trade for b in businesses}) >= 4
    for business in businesses:
        kinds = {q.kind for q in business.questions}
        assert len(business.questions) >= 25 and kinds >= {"fact", "paraphrase", "follow_up",
                                                             "near_scope", "off_topic"}


@pytest.mark.parametrize("key", sorted(RIGHT_FLOOR))
def test_no_invented_facts_and_the_right_fact_floor(results: dict[str, BusinessResult],
                                                      key: str) -> None:
    result = results[key]
    summary = result.summary()
    print(f"\n{key} ({summary['split']}): {summary}\n{_report(result)}")
    assert summary[Verdict.INVENTED.value] == 0, _report(result)
    assert summary["right_rate"] >= RIGHT_FLOOR[key], _report(result)


def test_the_models_own_sentences_never_state_an_invented_fact(settings: Settings,
                                                                llm: Llm) -> None:
    generative = msgspec.structs.replace(settings, answer_style="generative")
    [result] = evaluate_all(generative, llm, load_businesses(only=["dental"]))
    summary = result.summary()
    print(f"\ngenerative dental: {summary}\n{_report(result)}")
    assert summary[Verdict.INVENTED.value] == 0, _report(result)
    assert summary["right_rate"] >= GENERATIVE_RIGHT_FLOOR, _report(result)
