from appliance.core.sentences import SentenceChunker, clean_for_speech


def chunk(tokens: list[str]) -> list[str]:
    chunker = SentenceChunker()
    out = [s for t in tokens for s in chunker.push(t)]
    return out + list(chunker.flush())


def test_splits_sentences_as_tokens_stream() -> None:
    tokens = ["We", " open", " at", " 8", " am.", " We", " close", " at", " 5", " pm!", " Bye"]
    assert chunk(tokens) == ["We open at 8 am.", "We close at 5 pm!", "Bye"]


def test_first_sentence_is_emitted_before_the_reply_ends() -> None:
    chunker = SentenceChunker()
    assert list(chunker.push("Hello there. How")) == ["Hello there."]


def test_decimals_and_abbreviations_do_not_split() -> None:
    assert chunk(["A cleaning is $", "95", ".50 with Dr", ". Smith. Thanks."]) == [
        "A cleaning is $95.50 with Dr. Smith.", "Thanks."]


def test_long_first_sentence_is_cut_at_a_clause() -> None:
    out = chunk(["Yes, we are open on Saturdays from nine, ",
                 "and we close at one in the afternoon."])
    assert out[0] == "Yes, we are open on Saturdays from nine,"
    assert len(out) == 2


def test_a_whole_answer_at_once_is_cut_at_its_first_long_clause() -> None:
    """An extractive answer arrives as one piece of text: its first sentence is still cut at
    the first clause of six words or more, not spoken whole first."""
    out = chunk(["Harbor Dental is in-network with Delta Dental PPO, Cigna Dental PPO and "
                 "MetLife. We file claims for you."])
    assert out == ["Harbor Dental is in-network with Delta Dental PPO,",
                   "Cigna Dental PPO and MetLife.", "We file claims for you."]


def test_a_short_first_sentence_is_not_cut_at_a_later_clause() -> None:
    assert chunk(["Yes. We are open on Saturdays from nine, until one."]) == [
        "Yes.", "We are open on Saturdays from nine, until one."]


def test_markdown_is_not_spoken() -> None:
    assert clean_for_speech("**Hours:** `9-5` <b>daily</b>") == "Hours: 9-5 daily"


def test_punctuation_only_is_dropped() -> None:
    assert chunk(["...", " ", "!"]) == []
