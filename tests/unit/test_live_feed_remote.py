"""The live feed's other-box calls (a cluster): merged in order, repeats skipped, a box's
calls replaced or dropped as one; without a cluster nothing about the feed changes."""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.core.live import RESYNC, CallState, LiveCall, LiveFeed


def drain(feed: LiveFeed, watch: Any) -> list[tuple[str, Any]]:
    items = []
    while not watch.queue.empty():
        items.append(watch.queue.get_nowait())
    return items


def remote(sid: str, box: str = "b", said: int = 1) -> LiveCall:
    return LiveCall.from_json({"call_sid": sid, "mode": "media-streams", "started": 1.0,
                               "state": "listening", "box": box, "said": said,
                               "turns": [{"role": "assistant", "text": "Hello."}]})


def test_a_single_box_feed_is_untagged_and_tells_no_listener() -> None:
    async def run() -> None:
        feed = LiveFeed()
        feed.opened("CA1", "media-streams")
        feed.line("CA1", "assistant", "Hello.")
        assert feed.snapshot()[0].keys() == {"call_sid", "mode", "started", "state", "turns"}
    asyncio.run(run())


def test_local_events_reach_the_listener_tagged_with_the_box() -> None:
    async def run() -> None:
        feed, heard = LiveFeed(), []
        feed.box, feed.listener = "a", lambda event, data: heard.append((event, data))
        feed.opened("CA1", "relay")
        feed.state("CA1", CallState.THINKING)
        feed.line("CA1", "user", "Hi")
        feed.closed("CA1")
        assert [e for e, _ in heard] == ["call", "state", "line", "ended"]
        assert heard[0][1]["box"] == "a" and heard[2][1] == {"call_sid": "CA1", "role": "user",
                                                              "text": "Hi"}
    asyncio.run(run())


def test_remote_events_merge_in_order_and_skip_what_the_snapshot_had() -> None:
    async def run() -> None:
        feed = LiveFeed()
        watch = feed.subscribe()
        drain(feed, watch)
        feed.remote_call(remote("CB1"))
        feed.remote_call(remote("CB1", said=0))  # its "call" event, late: already known
        feed.remote_line("CB1", "assistant", "Hello.", 1)  # the snapshot had line 1
        feed.remote_line("CB1", "user", "Open tomorrow?", 2)
        feed.remote_state("CB1", "thinking")
        assert [t["text"] for t in feed.snapshot()[0]["turns"]] == ["Hello.", "Open tomorrow?"]
        assert feed.snapshot()[0]["box"] == "b"
        events = drain(feed, watch)
        assert [e for e, _ in events] == ["call", "line", "state"]
        feed.remote_ended("CB1")
        assert feed.snapshot() == [] and drain(feed, watch) == [("ended", {"call_sid": "CB1"})]
    asyncio.run(run())


def test_a_box_reloaded_resyncs_watchers_and_a_box_gone_ends_its_calls() -> None:
    async def run() -> None:
        feed = LiveFeed()
        feed.opened("CA1", "media-streams")
        watch = feed.subscribe()
        drain(feed, watch)
        feed.remote_call(remote("CB1"))
        feed.remote_call(remote("CC1", box="c"))
        feed.remote_box("b", [remote("CB2")])  # b's hash, reread: CB1 ended, CB2 began
        assert [e for e, _ in drain(feed, watch)] == ["call", "call", RESYNC]
        assert [c["call_sid"] for c in feed.snapshot()] == ["CA1", "CC1", "CB2"]
        feed.remote_box("b", None)
        assert drain(feed, watch) == [("ended", {"call_sid": "CB2"})]
        assert feed.remote_boxes() == {"c"} and [c["call_sid"] for c in feed.snapshot()] == [
            "CA1", "CC1"]
    asyncio.run(run())
