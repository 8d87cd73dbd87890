"""Class names from the command line: case-insensitive, numbers are indices, and errors that help."""

from __future__ import annotations

import pytest

import hfrel
from hfrel._labels import class_names, label_from_name

NAMES = {0: "tabby cat", 1: "dog", 2: "Cat", 3: "cat", 4: "goldfish"}


def test_names_resolve_case_insensitively():
    assert label_from_name("TABBY CAT", NAMES, 5) == 0
    assert label_from_name("  goldfish ", NAMES, 5) == 4
    assert label_from_name("3", NAMES, 5) == 3  # a number is always an index
    assert class_names(None, 3) == {0: "0", 1: "1", 2: "2"}
    assert class_names({1: "one"}, 3) == {0: "0", 1: "one", 2: "2"}
    assert label_from_name("2", None, 3) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cat", r"class name 'cat' is ambiguous: it names 'Cat' \(2\), 'cat' \(3\)\. Pass the class index instead\."),
        ("tabby", r"unknown class name 'tabby': the model has 5 classes .* Close matches: 'tabby cat' \(0\)\."),
        ("goldfsh", r"Close matches: 'goldfish' \(4\)\. Pass a class index in \[0, 4\]"),
        ("zebra", r"unknown class name 'zebra': the model has 5 classes \(config.id2label\)\. Pass a class index"),
        ("5", r"label 5 is out of range: the model has 5 classes, so labels must be in \[0, 4\]"),
        ("-1", r"label -1 is out of range"),
    ],
)
def test_bad_names_explain_themselves(text, message):
    with pytest.raises(hfrel.LabelError, match=message):
        label_from_name(text, NAMES, 5)
