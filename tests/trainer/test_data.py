import pytest

from trainer.data import DataError, read_jsonl, read_text_lines


def test_read_jsonl_skips_blank_lines_and_numbers_lines_from_one(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2}\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2})]


@pytest.mark.parametrize(
    "bad, reason",
    [("{not json", "invalid JSON"), ("[1, 2]", "expected a JSON object"), ('"text"', "expected a JSON object")],
)
def test_read_jsonl_bad_line_names_file_and_line(tmp_path, bad, reason):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n' + bad + "\n")
    with pytest.raises(DataError) as err:
        list(read_jsonl(path))
    assert str(err.value).startswith(f"{path}:2: {reason}")
    assert err.value.line == 2 and err.value.path == str(path)


def test_read_text_lines_rejects_invalid_utf8_with_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"hello\nworld\n\xff\xfe bad\n")
    with pytest.raises(DataError, match=r":3: not valid UTF-8"):
        list(read_text_lines(path))
