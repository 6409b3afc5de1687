"""TextOut: whole UTF-8 characters out, stop strings cut, nothing sent that a stop may start."""

from llmlb.engine.text_out import TextOut


def feed_all(out: TextOut, parts: list[bytes]) -> str:
    return "".join(out.feed(p) for p in parts) + out.flush()


def test_a_character_split_across_tokens_is_sent_whole():
    out = TextOut()
    euro = "€".encode()  # three bytes
    assert out.feed(b"a" + euro[:1]) == "a"
    assert out.feed(euro[1:2]) == ""
    assert out.feed(euro[2:] + b"b") == "€b"
    assert out.sent_bytes == out.fed_bytes == 5


def test_a_character_left_unfinished_at_the_end_is_dropped_not_replaced():
    out = TextOut()
    assert out.feed(b"ok\xe2\x82") == "ok"
    assert out.flush() == ""
    assert out.sent_bytes == out.fed_bytes  # its bytes' log probabilities still go out


def test_broken_utf8_inside_the_text_is_a_replacement_character():
    out = TextOut()
    assert feed_all(out, [b"a\xff", b"b"]) == "a\ufffdb"


def test_a_stop_string_cuts_the_output_and_ends_it():
    out = TextOut(["END"])
    assert feed_all(out, [b"hello E", b"N", b"D and more"]) == "hello "
    assert out.stopped and out.feed(b"more") == ""


def test_text_that_may_start_a_stop_string_is_held_then_released():
    out = TextOut(["\n\nUser:"])
    assert out.feed(b"line\n") == "line"
    assert out.feed(b"\nUs") == ""
    assert out.feed(b"ual") == "\n\nUsual"
    assert not out.stopped


def test_the_earliest_of_several_stops_wins():
    out = TextOut(["bb", "a"])
    assert feed_all(out, [b"xxbbya"]) == "xx"


def test_sent_bytes_count_only_what_went_out():
    out = TextOut(["STOP"])
    out.feed(b"abc ST")
    assert out.sent_bytes == 4  # "abc " sent, "ST" held
    out.feed(b"OP!")
    assert out.stopped and out.sent_bytes == 4
