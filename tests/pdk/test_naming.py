"""Names in generated code: words, cases, reserved words and clashes (``_pdk/naming``)."""

from __future__ import annotations

import itertools
import re

import pytest

from hostwire import snake_case as host_function_name
from hostwire._pdk import assemblyscript, c, rust
from hostwire._pdk.naming import (
    Namer,
    append_number,
    camel_case,
    escape_reserved,
    pascal_case,
    snake_case,
    type_name,
    underscore_number,
    upper_snake,
    words,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("getHTTPResponse", ["get", "HTTP", "Response"], id="acronym-inside"),
        pytest.param("HTTPStatus", ["HTTP", "Status"], id="acronym-first"),
        pytest.param("light_id", ["light", "id"], id="snake"),
        pytest.param("lightId", ["light", "Id"], id="camel"),
        pytest.param("LightID", ["Light", "ID"], id="acronym-last"),
        pytest.param("X-Request-Id", ["X", "Request", "Id"], id="header"),
        pytest.param("2fa", ["2fa"], id="leading-digit"),
        pytest.param("x2Y", ["x2", "Y"], id="digit-then-capital"),
        pytest.param("two  words", ["two", "words"], id="spaces"),
        pytest.param("caféBar", ["caf", "Bar"], id="non-ascii-separates"),
        pytest.param("__--", [], id="no-words"),
        pytest.param("", [], id="empty"),
    ],
)
def test_words_split_at_separators_and_case_changes(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_acronyms_can_stay_whole() -> None:
    assert words("HTTPStatus", split_acronyms=False) == ["HTTPStatus"]
    assert words("getHTTPResponse", split_acronyms=False) == ["get", "HTTPResponse"]
    assert words("IPv4") == ["I", "Pv4"]
    assert words("IPv4", split_acronyms=False) == ["IPv4"]


@pytest.mark.parametrize(
    ("text", "snake", "camel", "pascal", "upper"),
    [
        ("getHTTPResponse", "get_http_response", "getHTTPResponse", "GetHTTPResponse",
         "GET_HTTP_RESPONSE"),
        ("HTTPStatus", "http_status", "httpStatus", "HTTPStatus", "HTTP_STATUS"),
        ("light_id", "light_id", "lightId", "LightId", "LIGHT_ID"),
        ("X-Request-Id", "x_request_id", "xRequestId", "XRequestId", "X_REQUEST_ID"),
        ("if-match", "if_match", "ifMatch", "IfMatch", "IF_MATCH"),
        ("ID", "id", "id", "ID", "ID"),
        ("", "", "", "", ""),
    ],
)  # fmt: skip
def test_cases(text: str, snake: str, camel: str, pascal: str, upper: str) -> None:
    assert snake_case(text) == snake
    assert camel_case(text) == camel
    assert pascal_case(text) == pascal
    assert upper_snake(text) == upper


def test_a_name_that_would_start_with_a_digit_gets_the_prefix_asked_for() -> None:
    assert snake_case("2fa") == "2fa"
    assert snake_case("2fa", digit_prefix="op_") == "op_2fa"
    assert camel_case("2fa-code", digit_prefix="_") == "_2faCode"
    assert pascal_case("2fa", digit_prefix="T") == "T2fa"
    assert upper_snake("9 lives", digit_prefix="N") == "N9_LIVES"
    assert snake_case("fa2", digit_prefix="op_") == "fa2"


def test_type_names_are_pascal_case_and_never_start_with_a_digit() -> None:
    assert type_name("light_event_data") == "LightEventData"
    assert type_name("2fa") == "T2fa"
    assert type_name("") == ""


def test_naming_splits_words_as_host_function_names_do() -> None:
    # _hostapi's snake_case (Contract 1) keeps its own copy of the rule; the two must agree.
    atoms = ["get", "HTTP", "Response", "id", "ID", "Id", "2", "fa", "X", "é", "_", "-", " "]
    for parts in itertools.product(atoms, repeat=3):
        text = "".join(parts)
        assert snake_case(text, digit_prefix="op_") == host_function_name(text), text


def test_reserved_words_get_an_underscore() -> None:
    assert escape_reserved("class", {"class", "type"}) == "class_"
    assert escape_reserved("klass", {"class", "type"}) == "klass"
    assert assemblyscript.identifier("default") == "default_"
    assert rust.snake_ident("type") == "type_"
    assert rust.type_ident("self") == "Self_"
    assert c.c_ident("default") == "default_"


@pytest.mark.parametrize(
    ("json_name", "typescript", "rust_name", "c_name"),
    [
        ("getHTTPResponse", "getHTTPResponse", "get_http_response", "getHTTPResponse"),
        ("light_id", "lightId", "light_id", "light_id"),
        ("X-Request-Id", "xRequestId", "x_request_id", "X_Request_Id"),
        ("2fa", "_2fa", "n2fa", "_2fa"),
        ("class", "class_", "class", "class_"),
        ("", "value", "value", "_"),
    ],
)
def test_each_language_names_a_json_member(
    json_name: str, typescript: str, rust_name: str, c_name: str
) -> None:
    assert assemblyscript.identifier(assemblyscript.camel_ident(json_name)) == typescript
    assert rust.snake_ident(json_name) == rust_name
    assert c.c_ident(json_name) == c_name


def test_a_clash_gets_the_next_free_number() -> None:
    names = Namer(["Light2"])
    assert [names.claim(n) for n in ("Light", "Light", "Light", "Color")] == [
        "Light",
        "Light3",
        "Light4",
        "Color",
    ]
    assert "Light3" in names
    assert names.taken == {"Light", "Light2", "Light3", "Light4", "Color"}


def test_clashes_are_numbered_as_asked() -> None:
    snake = Namer(numbering=underscore_number)
    assert [snake.claim("light_id") for _ in range(3)] == ["light_id", "light_id_2", "light_id_3"]
    assert append_number("Light", 2) == "Light2"
    idents = rust.namer()
    assert [idents.claim(n) for n in ("Self_", "Self_", "type_", "type_", "id", "id")] == [
        "Self_",
        "Self2",
        "type_",
        "type_2",
        "id",
        "id_2",
    ]


def test_reserved_names_are_never_handed_out_nor_taken() -> None:
    stdint = re.compile(r"U?INT\d+_MAX")

    class Pattern:
        def __contains__(self, name: object) -> bool:
            return isinstance(name, str) and bool(stdint.fullmatch(name))

    names = Namer(reserved=Pattern(), numbering=underscore_number)
    assert names.claim("INT8_MAX") == "INT8_MAX_2"
    assert names.claim("limit") == "limit"
    assert "INT8_MAX" not in names


def test_names_taken_later_are_skipped() -> None:
    names = Namer()
    names.take({"decodeLight", "encodeLight"})
    assert names.claim("decodeLight") == "decodeLight2"


def test_c_enum_constants_keep_acronyms_whole() -> None:
    # Generated C code already names HTTPStatus's constants so: it stays.
    assert c.upper_snake("HTTPStatus") == "HTTPSTATUS"
    assert c.upper_snake("X-Request-Id") == "X_REQUEST_ID"
    assert c.upper_snake("--") == "EMPTY"
