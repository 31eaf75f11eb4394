import json

import pytest

from annotator.data import read_items
from annotator.errors import AnnotatorError


def reasons(skipped):
    return {(s.row, s.reason.split(" (")[0]) for s in skipped}


def test_csv_ids_and_skipped_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(
        b"id,text\n"
        b"a,hello\n"
        b"b,\n"  # empty text
        b"a,again\n"  # duplicate id
        b"c,caf\xe9 latin-1\n"  # not UTF-8
        b",no id\n"  # empty id
        b'd,"multi\nline"\n'
        b"e\n"  # missing input column
    )
    _, items, skipped = read_items(path, ["text"])
    assert [(i.id, i.fields["text"]) for i in items] == [("a", "hello"), ("d", "multi\nline")]
    assert reasons(skipped) == {
        (2, "empty text in column 'text'"),
        (3, "duplicate id"),
        (4, "undecodable bytes"),
        (5, "empty id in 'id'"),
        (7, "missing input column 'text'"),
    }


def test_tsv_without_id_column_uses_row_numbers(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("text\tother\nfirst\tx\nsecond\ty\n", encoding="utf-8")
    _, items, skipped = read_items(path, ["text"])
    assert [i.id for i in items] == ["1", "2"] and not skipped


def test_explicit_id_column_must_exist(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text\nx\n")
    with pytest.raises(AnnotatorError, match="d.csv: no id column 'key'"):
        read_items(path, ["text"], id_col="key", id_col_given=True)


def test_jsonl_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [
        json.dumps({"id": 1, "text": "one"}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"id": 2}),
        json.dumps({"id": 3, "text": {"nested": 1}}),
        json.dumps({"id": 1, "text": "dup"}),
    ]
    path.write_bytes("\n".join(lines).encode() + b'\n{"id": 4, "text": "\xff"}\n')
    _, items, skipped = read_items(path, ["text"])
    assert [i.id for i in items] == ["1"]
    assert reasons(skipped) == {
        (2, "not valid JSON"),
        (3, "not a JSON object"),
        (4, "missing input column 'text'"),
        (5, "column 'text' is not text"),
        (6, "duplicate id"),
        (7, "undecodable bytes"),
    }


def test_file_level_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(AnnotatorError, match="empty.csv: data file is empty"):
        read_items(empty, ["text"])
    header = tmp_path / "h.csv"
    header.write_text("id,body\n1,x\n")
    with pytest.raises(AnnotatorError, match=r"h.csv: missing column\(s\) 'text'"):
        read_items(header, ["text"])
    with pytest.raises(AnnotatorError, match="x.xlsx: unknown data format"):
        read_items(tmp_path / "x.xlsx", ["text"])
    with pytest.raises(AnnotatorError, match="nope.csv: cannot read data file"):
        read_items(tmp_path / "nope.csv", ["text"])


def test_bom_is_ignored(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbfid,text\n1,x\n")
    _, items, _ = read_items(path, ["text"])
    assert items[0].id == "1"


def test_jsonl_numbers_of_any_size_are_a_skipped_row_not_a_traceback(tmp_path):
    """Python refuses to convert an integer of more than 4300 digits (a ValueError that is
    not a JSONDecodeError): such a row is skipped with the reason, the others are read."""
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"id": 1, "text": "one"}),
                '{"id": 2, "text": "two", "extra": ' + "9" * 5000 + "}",
                '{"id": ' + "-" + "1" * 4301 + ', "text": "three"}',
                json.dumps({"id": 4, "text": "four", "big": int("9" * 4000)}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    _, items, skipped = read_items(path, ["text"])
    assert [i.id for i in items] == ["1", "4"]
    assert [(s.row, s.reason) for s in skipped] == [
        (2, "holds a number of 5000 digits (at most 4300 are read)"),
        (3, "holds a number of 4301 digits (at most 4300 are read)"),
    ]


def test_jsonl_escaped_lone_surrogates_are_a_skipped_row(tmp_path):
    """`"\\ud800"` is valid JSON but no text: the store (and any UTF-8 writer) would fail on it
    later with a traceback, so the row is skipped with the reason at read time."""
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": 1, "text": "one"}\n{"id": 2, "text": "bad \\ud800 here"}\n'
        '{"id": 3, "text": "ok", "meta": {"k": ["\\udfff"]}}\n',
        encoding="utf-8",
    )
    _, items, skipped = read_items(path, ["text"])
    assert [i.id for i in items] == ["1"]
    assert [(s.row, s.reason) for s in skipped] == [
        (2, "holds an escaped lone surrogate (not Unicode text)"),
        (3, "holds an escaped lone surrogate (not Unicode text)"),
    ]


def test_duplicate_header_columns_are_refused_naming_them(tmp_path):
    """csv.DictReader-style reading keeps the last of two same-named columns silently."""
    path = tmp_path / "d.csv"
    path.write_text("id,text,other,text\n1,first,x,second\n", encoding="utf-8")
    with pytest.raises(AnnotatorError) as err:
        read_items(path, ["text"])
    assert str(err.value) == f"{path}: column 'text' appears twice in the header (columns 2 and 4)"
    tsv = tmp_path / "d.tsv"
    tsv.write_text("id\ttext\t id\tx\tx\tx\n1\tt\t2\t\t\t\n", encoding="utf-8")
    with pytest.raises(AnnotatorError) as err:
        read_items(tsv, ["text"])
    assert str(err.value) == (
        f"{tsv}: columns appear more than once in the header: 'id' "
        "(columns 1 and 3), 'x' (columns 4, 5 and 6)"
    )
    # Unnamed columns (a spreadsheet's trailing empty cells) name nothing a rubric can use.
    blank = tmp_path / "b.csv"
    blank.write_text("id,text,,\n1,one,,\n", encoding="utf-8")
    assert [i.fields for i in read_items(blank, ["text"])[1]] == [{"text": "one"}]


def test_a_jsonl_key_twice_in_one_row_skips_the_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": 1, "text": "one"}\n{"id": 2, "text": "a", "text": "b"}\n', encoding="utf-8"
    )
    _, items, skipped = read_items(path, ["text"])
    assert [i.id for i in items] == ["1"]
    assert [(s.row, s.reason) for s in skipped] == [(2, "key 'text' appears twice in an object")]
