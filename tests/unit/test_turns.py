import math

from appliance.core.turns import EndpointConfig, Endpointer, TurnEvent

W = 0.032  # one Silero window


def run(script: list[float], config: EndpointConfig | None = None,
        pauses: bool = False) -> list[tuple[int, TurnEvent]]:
    endpointer = Endpointer(config or EndpointConfig())
    out = []
    for i, p in enumerate(script):
        event = endpointer.feed(W, p)
        if event is not None and (pauses or event is not TurnEvent.PAUSE):
            out.append((i, event))
    return out


def windows(seconds: float, p: float) -> list[float]:
    return [p] * round(seconds / W)


def test_utterance_start_and_end_after_trailing_silence() -> None:
    script = windows(0.5, 0.0) + windows(1.0, 0.9) + windows(1.0, 0.05)
    events = run(script)
    assert [e for _, e in events] == [TurnEvent.SPEECH_START, TurnEvent.SPEECH_END]
    start, end = events[0][0], events[1][0]
    assert start == 16 + math.ceil(0.2 / W) - 1  # confirmed once 200 ms of speech is in
    silence_windows = end - (16 + 31) + 1
    assert abs(silence_windows * W - 0.4) <= W  # ended after ~400 ms of silence


def test_short_blip_is_not_speech() -> None:
    assert run(windows(0.1, 0.9) + windows(1.0, 0.0)) == []


def test_hysteresis_keeps_a_dip_inside_speech() -> None:
    script = windows(0.5, 0.9) + windows(0.2, 0.4) + windows(0.5, 0.9) + windows(1, 0.0)
    assert [e for _, e in run(script)] == [TurnEvent.SPEECH_START, TurnEvent.SPEECH_END]


def test_pause_shorter_than_endpoint_does_not_split() -> None:
    script = windows(0.5, 0.9) + windows(0.3, 0.0) + windows(0.5, 0.9) + windows(1, 0.0)
    assert len(run(script)) == 2


def test_max_utterance_forces_an_end() -> None:
    events = run(windows(3.0, 0.9), EndpointConfig(max_utterance_s=2.0))
    assert [e for _, e in events[:2]] == [TurnEvent.SPEECH_START, TurnEvent.SPEECH_END]
    assert abs(events[1][0] * W - 2.0) < 0.1


def test_configurable_silence() -> None:
    script = windows(1.0, 0.9) + windows(1.0, 0.0)
    fast = run(script, EndpointConfig(endpoint_silence_s=0.2))[1][0]
    slow = run(script, EndpointConfig(endpoint_silence_s=0.6))[1][0]
    assert slow - fast == round(0.4 / W)


def test_end_reports_the_silence_it_waited_for() -> None:
    endpointer = Endpointer(EndpointConfig(endpoint_silence_s=0.4))
    for p in windows(1.0, 0.9) + windows(0.5, 0.0):
        if endpointer.feed(W, p) is TurnEvent.SPEECH_END:
            break
    assert 0.4 <= endpointer.ended_after_silence_s < 0.4 + W


def test_pause_fires_once_per_silence_before_the_end() -> None:
    config = EndpointConfig(endpoint_silence_s=0.4, speculate_s=0.2)
    script = windows(0.6, 0.9) + windows(0.25, 0.0) + windows(0.4, 0.9) + windows(0.6, 0.0)
    kinds = [e for _, e in run(script, config, pauses=True)]
    assert kinds == [TurnEvent.SPEECH_START, TurnEvent.PAUSE, TurnEvent.PAUSE,
                     TurnEvent.SPEECH_END]


def test_pause_can_be_disabled() -> None:
    script = windows(0.6, 0.9) + windows(0.6, 0.0)
    kinds = [e for _, e in run(script, EndpointConfig(speculate_s=0), pauses=True)]
    assert TurnEvent.PAUSE not in kinds


# --- with a turn model: the verdict on a pause decides how much silence ends the turn ---------

TURN = EndpointConfig(turn_model=True, speculate_s=0.2, complete_silence_s=0.2,
                      incomplete_silence_s=1.0, endpoint_silence_s=0.4)


def silence_until_end(verdict: float | None, judged_after_s: float = 0.0,
                      config: EndpointConfig = TURN, patient: bool = False) -> float:
    """Speak 1 s, then stay silent; the verdict on the first pause arrives ``judged_after_s``
    after it. Returns the trailing silence the turn ended after."""
    endpointer = Endpointer(config)
    endpointer.set_patient(patient)
    for p in windows(1.0, 0.9):
        endpointer.feed(W, p)
    paused_at = None
    for i in range(round(3.0 / W)):
        event = endpointer.feed(W, 0.0)
        if event is TurnEvent.PAUSE:
            paused_at = i
        if paused_at is not None and (i - paused_at) * W >= judged_after_s:
            endpointer.verdict(endpointer.pauses, verdict)
            paused_at = None
        if event is TurnEvent.SPEECH_END:
            return endpointer.ended_after_silence_s
    raise AssertionError("the turn never ended")


def test_complete_utterance_ends_at_the_short_silence() -> None:
    assert 0.2 <= silence_until_end(0.9) < 0.2 + 2 * W


def test_incomplete_utterance_waits_for_the_long_silence() -> None:
    assert 1.0 <= silence_until_end(0.1) < 1.0 + W


def test_a_late_complete_verdict_ends_the_turn_on_arrival() -> None:
    assert 0.5 <= silence_until_end(0.9, judged_after_s=0.3) < 0.5 + 3 * W  # whole windows


def test_no_verdict_waits_the_long_silence_and_a_failed_one_the_fixed_silence() -> None:
    assert 1.0 <= silence_until_end(0.9, judged_after_s=5.0) < 1.0 + W
    assert 0.4 <= silence_until_end(None) < 0.4 + W


def test_threshold_is_configurable() -> None:
    strict = EndpointConfig(turn_model=True, complete_threshold=0.95)
    assert silence_until_end(0.9, config=strict) >= strict.incomplete_silence_s


def test_a_verdict_on_an_earlier_pause_is_ignored() -> None:
    endpointer = Endpointer(TURN)
    script = windows(1.0, 0.9) + windows(0.25, 0.0) + windows(0.3, 0.9) + windows(0.25, 0.0)
    for p in script:
        endpointer.feed(W, p)
    assert endpointer.pauses == 2
    endpointer.verdict(1, 0.99)  # about the first pause: the caller spoke on since
    events = [endpointer.feed(W, 0.0) for _ in windows(0.5, 0.0)]
    assert TurnEvent.SPEECH_END not in events


def test_speech_after_a_complete_verdict_resets_it() -> None:
    endpointer = Endpointer(TURN)
    for p in windows(1.0, 0.9) + windows(0.2, 0.0):
        endpointer.feed(W, p)
    endpointer.verdict(endpointer.pauses, 0.99)
    for p in windows(0.3, 0.9):  # the caller went on after all
        endpointer.feed(W, p)
    events = [endpointer.feed(W, 0.0) for _ in windows(0.6, 0.0)]
    assert TurnEvent.SPEECH_END not in events  # waits for a new verdict (or the long silence)


def test_turn_model_needs_a_pause_even_without_speculation() -> None:
    config = EndpointConfig(turn_model=True, speculate_s=0, complete_silence_s=0.3)
    script = windows(0.6, 0.9) + windows(0.5, 0.0)
    kinds = [e for _, e in run(script, config, pauses=True)]
    assert kinds == [TurnEvent.SPEECH_START, TurnEvent.PAUSE]


def test_a_patient_endpointer_waits_for_the_long_silence_whatever_the_verdict() -> None:
    assert 1.0 <= silence_until_end(0.99, patient=True) < 1.0 + W  # sure it is complete
    assert 1.0 <= silence_until_end(None, patient=True) < 1.0 + W  # the model failed
    fixed = EndpointConfig(endpoint_silence_s=0.4)  # no turn model: the longer fixed silence
    assert 1.0 <= silence_until_end(None, config=fixed, patient=True) < 1.0 + W
    assert 0.4 <= silence_until_end(None, config=fixed) < 0.4 + W


def test_patience_reaches_the_utterance_under_way_and_can_be_lifted() -> None:
    endpointer = Endpointer(TURN)
    for p in windows(1.0, 0.9) + windows(0.25, 0.0):
        endpointer.feed(W, p)
    endpointer.verdict(endpointer.pauses, 0.99)  # would end at 0.2 s of silence...
    endpointer.set_patient(True)  # ...but the caller has been talking over every answer
    events = [endpointer.feed(W, 0.0) for _ in windows(0.6, 0.0)]
    assert TurnEvent.SPEECH_END not in events
    assert TurnEvent.SPEECH_END in [endpointer.feed(W, 0.0) for _ in windows(0.3, 0.0)]
    endpointer.set_patient(False)
    for p in windows(1.0, 0.9) + windows(0.25, 0.0):
        endpointer.feed(W, p)
    endpointer.verdict(endpointer.pauses, 0.99)
    assert endpointer.feed(W, 0.0) is TurnEvent.SPEECH_END
