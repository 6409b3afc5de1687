import base64

import pytest

from llmlb.cli.attachments import MAX_IMAGE_BYTES, extract, image_kind

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
def images(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "with space.png").write_bytes(PNG)
    (tmp_path / "photo.JPG").write_bytes(b"\xff\xd8\xff\xe0" + b"0" * 20)
    (tmp_path / "c.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    (tmp_path / "fake.png").write_bytes(b"<html>")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_absolute_path(images):
    r = extract(f"{images}/a.png describe this")
    assert r.text == "describe this" and r.added == [f"{images}/a.png"]
    assert base64.b64decode(r.images[0]) == PNG


def test_relative_home_quoted_and_escaped(images):
    r = extract(
        f"compare ./a.png and ~/c.webp, then '{images}/with space.png' and {images}/with\\ space.png"
    )
    assert r.added == [
        "./a.png",
        "~/c.webp",
        f"{images}/with space.png",
        f"{images}/with space.png",
    ]
    assert r.text == "compare and , then and"
    assert len(r.images) == 4


def test_extension_case_and_jpeg(images):
    assert extract("what is ./photo.JPG").added == ["./photo.JPG"]


def test_missing_file_stays_text(images):
    r = extract("look at /no/such/file.png please")
    assert r.text == "look at /no/such/file.png please" and r.images == []


def test_content_is_checked_by_bytes(images):
    r = extract("./fake.png what is it")
    assert r.images == [] and r.text == "./fake.png what is it"
    assert r.errors == ["'fake.png' is not a PNG, JPEG, WebP or GIF image"]


def test_size_cap(images):
    big = images / "big.png"
    big.write_bytes(PNG + b"0" * MAX_IMAGE_BYTES)
    r = extract("./big.png")
    assert r.images == [] and "larger than" in r.errors[0]


def test_plain_text_untouched():
    assert extract("what is 2/3 of 9?").text == "what is 2/3 of 9?"


def test_image_kind():
    assert (
        image_kind(PNG) == "png"
        and image_kind(b"GIF89a...") == "gif"
        and image_kind(b"nope") is None
    )
