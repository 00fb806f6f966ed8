from backends.textstream import TextStream


def feed_all(stream: TextStream, pieces: list[bytes]) -> str:
    out = "".join(stream.feed(p) for p in pieces)
    return out + stream.flush()


def test_passes_text_through_without_stop_strings() -> None:
    assert feed_all(TextStream(), [b"Hello", b", ", b"world"]) == "Hello, world"


def test_stop_string_split_across_tokens_is_cut() -> None:
    stream = TextStream(("\n\nUser:",))
    out = feed_all(stream, [b"Paris", b".\n", b"\nUs", b"er:", b" more"])
    assert out == "Paris."
    assert stream.stopped


def test_text_that_only_looks_like_a_stop_prefix_is_released() -> None:
    stream = TextStream(("END",))
    assert stream.feed(b"the E") == "the "  # "E" might start "END": held back
    assert stream.feed(b"xit") == "Exit"  # it did not: released
    assert stream.flush() == ""
    assert not stream.stopped


def test_earliest_of_several_stop_strings_wins() -> None:
    assert feed_all(TextStream(("b", "a")), [b"xxab"]) == "xx"


def test_multibyte_character_split_across_tokens() -> None:
    euro = "€".encode()  # 3 bytes
    stream = TextStream()
    assert stream.feed(b"cost: " + euro[:1]) == "cost: "
    assert stream.feed(euro[1:2]) == ""
    assert stream.feed(euro[2:] + b"5") == "€5"


def test_incomplete_character_at_the_end_becomes_replacement_char() -> None:
    stream = TextStream()
    stream.feed("é".encode()[:1])
    assert stream.flush() == "\ufffd"


def test_nothing_is_emitted_after_a_stop() -> None:
    stream = TextStream(("X",))
    assert stream.feed(b"aXb") == "a"
    assert stream.feed(b"more") == ""
    assert stream.flush() == ""


def test_the_stop_string_that_ended_the_text_is_recorded() -> None:
    ts = TextStream(stop=("END", "Paris"))
    assert ts.matched is None
    out = ts.feed(b"The capital is Par") + ts.feed(b"is. END")
    assert out == "The capital is " and ts.stopped and ts.matched == "Paris"
