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
